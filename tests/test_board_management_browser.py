"""Board management in a real browser: a new user creates a board from the empty list and adds a member,
who sees it; removing that member takes them off the board they have open, at once.

Bob has no board yet; Charlie is another user of the site.
"""

import pytest
from playwright.sync_api import expect

from board.models import Board

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("server_log", "no_broadcasts_from_the_test_process"),
]

# The server polls its log (and re-checks access) every second.
LIVE_TIMEOUT = 3_000


def test_a_new_user_creates_a_board_and_adds_a_member_who_then_sees_it(open_as, workflow, bob, charlie):
    page = open_as(bob)
    expect(page.get_by_role("heading", name="No boards yet")).to_be_visible()
    page.get_by_role("link", name="Create a board").click()

    expect(page.get_by_role("heading", name="New board", level=1)).to_be_visible()
    page.get_by_label("Name").fill("Payments")
    expect(page.get_by_label("Workflow")).to_have_value(str(workflow.pk))
    page.get_by_role("button", name="Create board").click()

    page.wait_for_url("**/boards/payments/")
    expect(page.locator("#messages")).to_contain_text("Created Payments.")
    board = Board.objects.get(slug="payments")
    assert list(board.owners.all()) == [bob]

    page.goto("/")
    card = page.locator("#board-payments")
    expect(card.get_by_text("Owner", exact=True)).to_be_visible()
    card.get_by_role("link", name="Manage members").click()

    page.wait_for_url("**/boards/payments/members/")
    page.get_by_label("Username").fill("charlie")
    page.get_by_role("button", name="Add member").click()
    expect(page.locator("#messages")).to_contain_text("charlie is now a member of Payments.")
    row = page.locator(f"#member-{charlie.pk}")
    expect(row).to_contain_text("charlie")
    expect(row.get_by_text("Member", exact=True)).to_be_visible()
    assert set(board.members.values_list("username", flat=True)) == {"bob", "charlie"}

    # A name nobody has is said on the form, and nothing changes.
    page.get_by_label("Username").fill("nobody")
    page.get_by_role("button", name="Add member").click()
    expect(page.get_by_text("No active user is called “nobody”.")).to_be_visible()
    assert board.members.count() == 2

    charlies = open_as(charlie)
    expect(charlies.locator("#board-payments").get_by_text("Member", exact=True)).to_be_visible()


def test_a_member_removed_from_the_members_page_loses_the_board_they_have_open(open_as, workflow, bob, charlie):
    from board.services import board_create, board_member_add

    board = board_create(name="Payments", workflow=workflow, creator=bob)
    board_member_add(board=board, user=charlie, actor=bob)

    charlies = open_as(charlie, f"/boards/{board.slug}/")
    expect(charlies.locator("#live-status")).to_have_text("Live")

    page = open_as(bob, f"/boards/{board.slug}/members/")
    page.get_by_role("button", name="Remove charlie").click()
    expect(page.locator("#messages")).to_contain_text("charlie is no longer a member of Payments.")
    expect(page.locator(f"#member-{charlie.pk}")).to_have_count(0)

    expect(charlies.locator("#live-status")).to_have_text(
        "This board is no longer available to you.", timeout=LIVE_TIMEOUT
    )
