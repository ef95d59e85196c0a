"""Board management pages: the list of boards, creating a board, and a board's members page.

The cast: Alice is staff; Bob owns "Bob's team" (he created it); Charlie is a
plain member of it; Dave is on no board. Outsiders get a 404, plain members
see the members but change nothing, every refusal says why and changes nothing.
"""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from board.models import Board, Event, Ticket
from board.services import board_create, board_member_add, ticket_create
from phases.models import Workflow

pytestmark = pytest.mark.django_db


@pytest.fixture
def dave(db):
    return get_user_model().objects.create_user("dave", "dave@example.org", "password")


@pytest.fixture
def team(workflow, bob, charlie):
    board = board_create(name="Bob's team", workflow=workflow, creator=bob)
    board_member_add(board=board, user=charlie, actor=bob)
    return board


def client_for(user):
    client = Client()
    client.force_login(user)
    return client


def snapshot():
    return (
        sorted(Board.objects.values_list("slug", "name", "workflow_id")),
        sorted(Board.members.through.objects.values_list("board_id", "user__username")),
        sorted(Board.owners.through.objects.values_list("board_id", "user__username")),
        Event.objects.count(),
    )


def members_url(board):
    return reverse("board:members", args=[board.slug])


def role_url(board, user):
    return reverse("board:member-role", args=[board.slug, user.pk])


def remove_url(board, user):
    return reverse("board:member-remove", args=[board.slug, user.pk])


def count_queries(client, url):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


# The list of boards


def test_each_board_shows_its_workflow_ticket_and_member_counts_my_role_and_its_pages(team, bob, workflow):
    ticket_create(board=team, title="One", actor=bob)
    ticket_create(board=team, title="Two", actor=bob)
    response = client_for(bob).get("/")
    assert response.status_code == 200
    (row,) = response.context["boards"]
    assert (row.name, row.ticket_count, row.member_count, row.role, row.may_manage) == (
        "Bob's team",
        2,
        2,
        "owner",
        True,
    )
    page = response.content.decode()
    assert workflow.name in page
    for url in (
        reverse("board:detail", args=[team.slug]),
        reverse("discoveries:board-graph", args=[team.slug]),
        reverse("discoveries:analytics", args=[team.slug]),
        members_url(team),
    ):
        assert f'href="{url}"' in page
    assert ">Owner<" in page and "Manage members" in page
    assert 'href="/boards/new/"' in page


def test_roles_are_member_for_a_member_and_staff_access_for_staff(team, charlie, alice):
    (row,) = client_for(charlie).get("/").context["boards"]
    assert (row.role, row.may_manage) == ("member", False)
    (row,) = client_for(alice).get("/").context["boards"]
    assert (row.role, row.may_manage) == ("staff", True)
    assert b"Staff access" in client_for(alice).get("/").content


def test_an_owner_who_is_no_longer_a_member_does_not_see_the_board(team, bob):
    team.members.remove(bob)
    assert client_for(bob).get("/").context["boards"] == []


def test_a_new_user_is_told_how_to_start(dave):
    response = client_for(dave).get("/")
    page = response.content.decode()
    assert "No boards yet" in page
    assert f'href="{reverse("board:board-create")}"' in page and "Create a board" in page


def test_the_list_costs_the_same_queries_for_2_or_20_boards(workflow, bob, charlie):
    client = client_for(charlie)
    for n in range(2):
        board = board_create(name=f"Board {n}", workflow=workflow, creator=bob)
        board_member_add(board=board, user=charlie, actor=bob)
        ticket_create(board=board, title="Work", actor=bob)
    few = count_queries(client, "/")
    for n in range(2, 20):
        board = board_create(name=f"Board {n}", workflow=workflow, creator=bob)
        board_member_add(board=board, user=charlie, actor=bob, owner=n % 2 == 0)
        ticket_create(board=board, title="Work", actor=bob)
    assert count_queries(client, "/") == few
    assert len(client.get("/").context["boards"]) == 20


# Creating a board


def test_any_user_creates_a_board_owns_it_and_lands_on_it(dave, workflow):
    client = client_for(dave)
    form = client.get(reverse("board:board-create"))
    assert form.status_code == 200
    assert form.context["form"]["workflow"].value() == workflow.pk  # the default workflow is chosen already
    response = client.post(reverse("board:board-create"), {"name": "Payments", "workflow": workflow.pk, "slug": ""})
    board = Board.objects.get(slug="payments")
    assert response.status_code == 302 and response["Location"] == reverse("board:detail", args=["payments"])
    assert list(board.owners.all()) == list(board.members.all()) == [dave]
    assert "Created Payments." in client.get(response["Location"]).content.decode()


def test_the_form_takes_an_address(dave, workflow):
    client_for(dave).post(reverse("board:board-create"), {"name": "Payments", "workflow": workflow.pk, "slug": "pay"})
    assert Board.objects.get(slug="pay").name == "Payments"


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"slug": "alices-board"}, "slug", "The address /boards/alices-board/ is taken by another board"),
        ({"slug": "new"}, "slug", "is reserved for a page of the site"),
        ({"slug": "no spaces"}, "slug", "Enter a valid “slug”"),
        ({"name": ""}, "name", "This field is required."),
        ({"name": "x" * 201}, "name", "Ensure this value has at most 200 characters"),
        ({"workflow": "999999"}, "workflow", "That workflow is not installed"),
        ({"workflow": "<b>nope</b>"}, "workflow", "That workflow is not installed"),
    ],
)
def test_bad_input_is_shown_on_its_field_and_creates_nothing(board, dave, workflow, data, field, message):
    before = snapshot()
    response = client_for(dave).post(
        reverse("board:board-create"), {"name": "Payments", "workflow": workflow.pk, "slug": "", **data}
    )
    assert response.status_code == 422
    assert any(message in error for error in response.context["form"].errors[field])
    assert snapshot() == before
    assert "<b>nope</b>" not in response.content.decode()


def test_the_form_says_so_when_no_workflow_is_installed(dave):
    Workflow.objects.all().delete()
    response = client_for(dave).get(reverse("board:board-create"))
    assert "No workflow is installed yet" in response.content.decode()


@pytest.mark.parametrize("name", ["board:list", "board:board-create"])
def test_visitors_are_asked_to_log_in(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_a_board_named_new_is_not_hidden_by_the_page(dave, workflow):
    client_for(dave).post(reverse("board:board-create"), {"name": "New", "workflow": workflow.pk})
    board = Board.objects.get(name="New")
    assert board.slug == "new-2"
    assert client_for(dave).get(reverse("board:detail", args=[board.slug])).status_code == 200


# The members page


def test_owners_see_members_with_their_roles_and_the_controls(team, bob):
    response = client_for(bob).get(members_url(team))
    assert response.status_code == 200
    assert [(m.username, m.is_owner) for m in response.context["members"]] == [("bob", True), ("charlie", False)]
    page = response.content.decode()
    assert response.context["may_manage"]
    assert 'name="username"' in page and "Make owner" in page and "Remove" in page
    # Bob is the last owner: the page offers him no way to step down or leave.
    assert not any(b"Leave board" in line for line in response.content.splitlines())
    assert "Last owner" in page


def test_a_plain_member_sees_the_members_but_no_controls(team, charlie):
    response = client_for(charlie).get(members_url(team))
    assert response.status_code == 200 and not response.context["may_manage"]
    page = response.content.decode()
    assert 'name="username"' not in page and "Make owner" not in page and "Only staff and the board" in page


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", members_url),
        ("post", members_url),
        ("post", lambda board: role_url(board, get_user_model().objects.get(username="charlie"))),
        ("post", lambda board: remove_url(board, get_user_model().objects.get(username="charlie"))),
    ],
)
def test_outsiders_get_a_404_and_change_nothing(team, dave, method, url):
    before = snapshot()
    response = getattr(client_for(dave), method)(url(team), {"username": "dave", "role": "owner"})
    assert response.status_code == 404
    assert snapshot() == before


def test_the_members_page_costs_the_same_queries_for_2_or_20_members(team, bob, workflow):
    client = client_for(bob)
    few = count_queries(client, members_url(team))
    for n in range(18):
        user = get_user_model().objects.create_user(f"user{n}", first_name="U", last_name=str(n))
        board_member_add(board=team, user=user, actor=bob, owner=n % 3 == 0)
    assert count_queries(client, members_url(team)) == few


# Adding


def test_an_owner_adds_a_member_by_username(team, bob, dave):
    client = client_for(bob)
    response = client.post(members_url(team), {"username": "dave"})
    assert response.status_code == 302 and response["Location"] == members_url(team)
    assert team.members.filter(pk=dave.pk).exists() and not team.owners.filter(pk=dave.pk).exists()
    assert "dave is now a member of Bob&#x27;s team." in client.get(members_url(team)).content.decode()


def test_an_owner_adds_an_owner(team, bob, dave):
    client_for(bob).post(members_url(team), {"username": " dave ", "owner": "on"})
    assert team.owners.filter(pk=dave.pk).exists()


def test_a_username_is_found_whatever_its_case_when_it_names_one_user(team, bob, dave):
    client_for(bob).post(members_url(team), {"username": "DAVE"})
    assert team.members.filter(pk=dave.pk).exists()


def test_staff_add_members_to_a_board_without_owners(board, alice, dave):
    client_for(alice).post(members_url(board), {"username": "dave"})
    assert board.members.filter(pk=dave.pk).exists()


@pytest.mark.parametrize(
    ("username", "status", "message"),
    [
        ("nobody", 422, "No active user is called “nobody”"),
        ("<script>x</script>", 422, "No active user is called"),
        ("", 422, "This field is required."),
        ("charlie", 409, "charlie is already a member of Bob&#x27;s team."),
        ("inactive", 422, "No active user is called “inactive”"),
    ],
)
def test_bad_additions_are_explained_and_change_nothing(team, bob, username, status, message):
    get_user_model().objects.create_user("inactive", is_active=False)
    before = snapshot()
    response = client_for(bob).post(members_url(team), {"username": username})
    assert response.status_code == status
    page = response.content.decode()
    assert message in page
    assert "<script>x</script>" not in page
    assert snapshot() == before


def test_a_plain_member_may_not_add_anyone(team, charlie, dave):
    before = snapshot()
    response = client_for(charlie).post(members_url(team), {"username": "dave", "owner": "on"})
    assert response.status_code == 403
    assert "Only staff and the owners of Bob&#x27;s team manage its members." in response.content.decode()
    assert snapshot() == before


# Roles


def test_an_owner_promotes_and_demotes_a_member(team, bob, charlie):
    client = client_for(bob)
    assert client.post(role_url(team, charlie), {"role": "owner"}).status_code == 302
    assert team.owners.filter(pk=charlie.pk).exists()
    assert client.post(role_url(team, charlie), {"role": "member"}).status_code == 302
    assert not team.owners.filter(pk=charlie.pk).exists()


def test_the_last_owner_cannot_step_down_and_is_told_why(team, bob):
    before = snapshot()
    response = client_for(bob).post(role_url(team, bob), {"role": "member"})
    assert response.status_code == 409
    assert "You are the last owner of Bob&#x27;s team" in response.content.decode()
    assert snapshot() == before


def test_staff_may_demote_the_last_owner(team, alice, bob):
    assert client_for(alice).post(role_url(team, bob), {"role": "member"}).status_code == 302
    assert not team.owners.exists()


@pytest.mark.parametrize("data", [{}, {"role": "king"}, {"role": "<i>x</i>"}])
def test_a_bad_role_is_refused(team, bob, charlie, data):
    before = snapshot()
    response = client_for(bob).post(role_url(team, charlie), data)
    assert response.status_code == 422 and "Choose owner or member." in response.content.decode()
    assert snapshot() == before


def test_a_plain_member_may_not_promote_themselves(team, charlie):
    before = snapshot()
    response = client_for(charlie).post(role_url(team, charlie), {"role": "owner"})
    assert response.status_code == 403
    assert snapshot() == before


def test_roles_of_unknown_users_or_non_members(team, bob, dave):
    before = snapshot()
    assert (
        client_for(bob).post(reverse("board:member-role", args=[team.slug, 999999]), {"role": "owner"}).status_code
        == 404
    )
    response = client_for(bob).post(role_url(team, dave), {"role": "owner"})
    assert response.status_code == 409 and "dave is not a member of Bob&#x27;s team." in response.content.decode()
    assert snapshot() == before


@pytest.mark.parametrize("name", ["board:members", "board:member-role", "board:member-remove"])
def test_the_member_actions_refuse_get(team, bob, charlie, name):
    args = [team.slug] if name == "board:members" else [team.slug, charlie.pk]
    status = client_for(bob).get(reverse(name, args=args)).status_code
    assert status == (200 if name == "board:members" else 405)


# Removing


def test_an_owner_removes_a_member_who_then_gets_a_404(team, bob, charlie):
    response = client_for(bob).post(remove_url(team, charlie))
    assert response.status_code == 302 and response["Location"] == members_url(team)
    assert not team.members.filter(pk=charlie.pk).exists()
    assert client_for(charlie).get(reverse("board:detail", args=[team.slug])).status_code == 404
    assert client_for(charlie).get("/").context["boards"] == []


def test_the_last_owner_cannot_leave_and_is_told_why(team, bob):
    before = snapshot()
    response = client_for(bob).post(remove_url(team, bob))
    assert response.status_code == 409
    assert "make another member an owner first" in response.content.decode()
    assert snapshot() == before


def test_an_owner_who_leaves_goes_back_to_the_list(team, bob, charlie):
    client = client_for(bob)
    client.post(role_url(team, charlie), {"role": "owner"})
    response = client.post(remove_url(team, bob))
    assert response.status_code == 302 and response["Location"] == reverse("board:list")
    assert "You left Bob&#x27;s team." in client.get("/").content.decode()


def test_a_plain_member_may_not_remove_anyone(team, bob, charlie):
    before = snapshot()
    response = client_for(charlie).post(remove_url(team, bob))
    assert response.status_code == 403
    assert snapshot() == before


def test_removing_someone_not_on_the_board(team, bob, dave):
    before = snapshot()
    response = client_for(bob).post(remove_url(team, dave))
    assert response.status_code == 409 and "dave is not a member" in response.content.decode()
    assert snapshot() == before


# The sign-in pages


def test_the_login_page_is_one_card_with_labelled_fields(client):
    page = client.get(reverse("login")).content.decode()
    assert page.count("<h1") == 1 and "Log in to Omoi" in page
    assert '<label for="id_username">' in page and '<label for="id_password">' in page
    assert 'class="form"' in page


def test_a_wrong_password_is_said_above_the_form(client, bob):
    response = client.post(reverse("login"), {"username": "bob", "password": "wrong"})
    assert response.status_code == 200
    assert 'role="alert"' in response.content.decode()
    assert "Please enter a correct username and password" in response.content.decode()


def test_tickets_are_counted_per_board_not_across_the_join(team, bob, dave):
    # Two counts in one query must not multiply each other (3 tickets x 2 members).
    for title in ("a", "b", "c"):
        ticket_create(board=team, title=title, actor=bob)
    (row,) = client_for(bob).get("/").context["boards"]
    assert (row.ticket_count, row.member_count) == (3, 2)
    assert Ticket.objects.filter(board=team).count() == 3
