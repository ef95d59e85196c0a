"""The ticket page in a real browser: commenting in place, changing the phase, and a phone's width.

Chromium talks to a Daphne process serving the test database (tests/browser.py).
Bob is a member of Alice's board; Alice is staff.
"""

import pytest
from playwright.sync_api import expect

from board.models import PhaseHistory, TicketComment
from board.services import agent_create, task_claim, task_create, ticket_comment, ticket_create

from .browser import mark_document, same_document

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("server_log", "no_broadcasts_from_the_test_process"),
]

PHONE = {"width": 390, "height": 844}
WIDE = {"width": 1400, "height": 900}
# A description as agents write them: a heading, a wide table, long code, an unbroken token and a URL.
DESCRIPTION = """## Sign-on plan

| Environment | Identity provider | Metadata URL | Status | Owner | Last checked |
|---|---|---|---|---|---|
| staging | Okta developer tenant | https://example.okta.com/app/exk1abcdefghijklmnop/sso/saml/metadata | ready | platform | 2026-03-01 |

```python
def login(request):
    return redirect(identity_provider_url(request, relay_state=request.get_full_path(), force_authn=True))
```

Token: eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ
See https://example.org/a/very/long/path/that/keeps/going/and/going/without/any/break/at/all/index.html
"""


@pytest.fixture
def ticket(board, alice):
    ticket = ticket_create(
        board=board, title="Single sign-on with the company directory", description=DESCRIPTION, actor=alice
    )
    agent = agent_create(name="demo-agent-2", boards=[board], actor=alice)[0]
    task_create(ticket=ticket, title="Write the tests", actor=alice)
    task_claim(agent=agent, board=board)
    ticket_comment(ticket=ticket, body="Do we keep **local** accounts for admins?", actor=alice)
    return ticket


@pytest.fixture
def open_ticket(open_as, ticket):
    """Open the ticket page as `user` at `viewport`."""
    return lambda user, viewport=WIDE: open_as(user, ticket_path(ticket), viewport=viewport)


def ticket_path(ticket):
    return f"/boards/{ticket.board.slug}/tickets/{ticket.pk}/"


def test_a_member_comments_and_the_comment_and_activity_appear_in_place(open_ticket, bob, ticket):
    page = open_ticket(bob)
    mark_document(page)
    page.get_by_label("Add a comment").fill("Yes, for break-glass access. See `ADR-12` and **today**.")
    page.get_by_role("button", name="Comment").click()

    comment = page.locator(".ticket-comment").last
    expect(comment).to_contain_text("bob")
    expect(comment.locator("strong", has_text="today")).to_be_visible()
    expect(comment.locator("code")).to_have_text("ADR-12")
    expect(page.locator("#activity .activity-item").first).to_contain_text("bob commented")
    expect(page.get_by_label("Add a comment")).to_have_value("")
    expect(page.locator("#messages")).to_have_text("Comment posted.")
    assert same_document(page), "the page reloaded instead of swapping the comments"
    assert TicketComment.objects.filter(author="bob").count() == 1


def test_a_blank_comment_is_refused_in_place_and_keeps_nothing(open_ticket, bob):
    page = open_ticket(bob)
    mark_document(page)
    page.get_by_label("Add a comment").fill("   ")
    page.get_by_role("button", name="Comment").click()
    expect(page.locator("#id_body-error")).to_have_text("Write something before posting.")
    expect(page.get_by_label("Add a comment")).to_have_attribute("aria-invalid", "true")
    assert same_document(page)
    assert TicketComment.objects.count() == 1  # the fixture's


def test_comments_work_without_scripts(open_as, ticket, bob):
    page = open_as(bob, ticket_path(ticket), java_script_enabled=False)
    page.get_by_label("Add a comment").fill("Posted without htmx")
    page.get_by_role("button", name="Comment").click()
    expect(page.locator(".messages")).to_contain_text("Comment posted.")
    expect(page.locator(".ticket-comment").last).to_contain_text("Posted without htmx")
    assert page.url.endswith(f"#comment-{TicketComment.objects.latest('id').pk}")


def test_a_member_moves_the_ticket_to_the_next_phase(open_ticket, bob, ticket):
    page = open_ticket(bob)
    select = page.get_by_label("Move from Backlog to")
    assert select.locator("option").all_text_contents() == ["Choose a phase…", "Requirements Analysis", "Blocked"]
    select.select_option(label="Requirements Analysis")
    page.get_by_label("Reason (optional)").fill("Groomed with the team")
    page.get_by_role("button", name="Move").click()

    expect(page.locator(".messages")).to_contain_text(
        "Moved “Single sign-on with the company directory” from Backlog to Requirements Analysis."
    )
    expect(page.locator(".side-facts")).to_contain_text("Requirements Analysis")
    expect(page.locator("#activity .activity-item").first).to_contain_text(
        "bob moved it from Backlog to Requirements Analysis"
    )
    entry = PhaseHistory.objects.latest("id")
    assert (entry.to_key, entry.kind, entry.reason, entry.actor) == (
        "PHASE_REQUIREMENTS",
        "normal",
        "Groomed with the team",
        "bob",
    )


def test_staff_are_told_why_a_move_is_refused_then_force_it_with_a_reason(open_ticket, alice, ticket):
    page = open_ticket(alice)
    page.get_by_label("Move from Backlog to").select_option(label="Done — not allowed from Backlog")
    page.get_by_role("button", name="Move").click()

    alert = page.locator("#phase-errors")
    expect(alert).to_contain_text("Backlog cannot move to Done")
    expect(alert).to_have_attribute("role", "alert")
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_BACKLOG"

    page.get_by_label("Reason (needed to force)").fill("Shipped with the previous release")
    page.get_by_label("Force it (staff override)").check()
    page.get_by_role("button", name="Move").click()
    expect(page.locator(".messages")).to_contain_text("from Backlog to Done.")
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_DONE"
    assert PhaseHistory.objects.latest("id").kind == "override"


def test_at_a_phones_width_the_page_does_not_scroll_sideways(open_ticket, bob, ticket, tmp_path):
    page = open_ticket(bob, viewport=PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # One column: the side panel comes below the content, as wide as it.
    main, side = page.locator(".ticket-main").bounding_box(), page.locator(".ticket-side").bounding_box()
    assert side["y"] > main["y"] + main["height"] - 1 and abs(side["width"] - main["width"]) < 2
    # Long code scrolls inside its own box; the table wraps to fit.
    assert page.locator(".prose pre").evaluate("el => el.scrollWidth > el.clientWidth")
    assert page.locator(".prose table").bounding_box()["x"] + 1 >= 0
    assert page.locator(".prose table").evaluate("el => el.getBoundingClientRect().right <= innerWidth")
    page.screenshot(path=tmp_path / "ticket-390.png", full_page=True)

    for path in (f"/boards/{ticket.board.slug}/tickets/new/", f"/boards/{ticket.board.slug}/tickets/{ticket.pk}/edit/"):
        page.goto(path)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], path


def test_on_a_wide_screen_the_side_panel_sits_beside_the_content(open_ticket, bob):
    page = open_ticket(bob)
    main, side = page.locator(".ticket-main").bounding_box(), page.locator(".ticket-side").bounding_box()
    assert side["x"] > main["x"] + main["width"]
    assert abs(side["y"] - main["y"]) < 2
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDE["width"]
