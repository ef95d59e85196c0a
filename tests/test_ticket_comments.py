"""Comments on a ticket: the service's rules, and posting from the ticket page with and without htmx."""

import re

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from board.models import Event, TicketComment
from board.services import ticket_comment, ticket_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def ticket(board, alice):
    return ticket_create(board=board, title="Single sign-on", actor=alice)


@pytest.fixture
def bob_client(client, bob):
    client.force_login(bob)
    return client


def comment_url(ticket):
    return reverse("board:ticket-comment", args=[ticket.board.slug, ticket.pk])


def detail_url(ticket):
    return reverse("board:ticket", args=[ticket.board.slug, ticket.pk])


def nothing_written():
    return not TicketComment.objects.exists() and not Event.objects.filter(type="ticket.commented").exists()


# The service


def test_a_comment_is_written_with_its_event_in_the_same_transaction(ticket, bob):
    comment = ticket_comment(ticket=ticket, body="  Looks **good**  \n", actor=bob)
    assert (comment.body, comment.author, comment.ticket_id) == ("Looks **good**", "bob", ticket.pk)
    event = Event.objects.get(type="ticket.commented")
    assert (event.entity_type, event.entity_id, event.actor) == ("ticket", str(ticket.pk), "bob")
    assert event.payload == {"comment": comment.pk, "phase": "PHASE_BACKLOG"}


def test_the_longest_comment_allowed_is_kept_whole(ticket, bob):
    assert len(ticket_comment(ticket=ticket, body="x" * 20_000, actor=bob).body) == 20_000


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "This field cannot be blank."),
        ("   \n\t ", "This field cannot be blank."),
        (None, "This field cannot be blank."),
        ("x" * 20_001, "At most 20000 characters (this has 20001)."),
    ],
)
def test_a_bad_comment_is_refused_and_nothing_is_written(ticket, bob, body, message):
    with pytest.raises(ValidationError) as caught:
        ticket_comment(ticket=ticket, body=body, actor=bob)
    assert caught.value.message_dict == {"body": [message]}
    assert nothing_written()


# The page


def test_a_member_comments_from_the_ticket_page(bob_client, ticket):
    response = bob_client.post(comment_url(ticket), {"body": "Do we keep **local** accounts?"})
    comment = TicketComment.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"{detail_url(ticket)}#comment-{comment.pk}"
    assert (comment.author, comment.body) == ("bob", "Do we keep **local** accounts?")
    html = bob_client.get(response["Location"]).content.decode()
    assert "Comment posted." in html
    assert f'id="comment-{comment.pk}"' in html
    assert "Do we keep <strong>local</strong> accounts?" in html
    assert "<strong>bob</strong> commented" in html
    assert f'href="#comment-{comment.pk}"' in html


def test_with_htmx_the_comments_and_the_activity_come_back(bob_client, ticket):
    response = bob_client.post(comment_url(ticket), {"body": "First!"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="panel" id="comments"')
    assert "<!doctype" not in html
    assert "<p>First!</p>" in html
    assert 'id="activity" aria-labelledby="activity-heading" hx-swap-oob="true"' in html
    assert "<strong>bob</strong> commented" in html
    assert '<div hx-swap-oob="innerHTML:#messages"><p class="message message-success">Comment posted.</p></div>' in html
    assert '<textarea name="body"' in html and "First!</textarea>" not in html  # a fresh form
    assert "Vary" in response and "HX-Request" in response["Vary"]


def test_comments_are_markdown_with_nothing_that_runs(bob_client, ticket, bob):
    ticket_comment(
        ticket=ticket,
        body="<script>alert(1)</script><img src=x onerror=alert(2)> [x](javascript:alert(3)) `<b>` | a |\n|---|\n| 1 |",
        actor=bob,
    )
    html = bob_client.get(detail_url(ticket)).content.decode()
    tags = "".join(re.findall(r"<[^>]*>", html))  # the markup alone: escaped text holds no "<"
    for bad in ("<script>", "onerror", "javascript:", "<img"):
        assert bad not in tags
    assert "<code>&lt;b&gt;</code>" in html


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "Write something before posting."),
        ("   \n  ", "Write something before posting."),
        ("x" * 20_001, "At most 20000 characters (this has 20001)."),
        ("before\x00after", "Null characters are not allowed."),
    ],
)
@pytest.mark.parametrize("htmx", [False, True])
def test_a_bad_comment_is_shown_with_its_error_and_nothing_is_written(bob_client, ticket, body, message, htmx):
    headers = {"HX-Request": "true"} if htmx else {}
    response = bob_client.post(comment_url(ticket), {"body": body}, headers=headers)
    assert response.status_code == 422
    html = response.content.decode()
    assert f'<p class="field-error" id="id_body-error" role="alert">{message}</p>' in html
    assert 'aria-invalid="true"' in html
    assert nothing_written()
    if body.strip() and "\x00" not in body:
        assert f">{body}</textarea>" in html  # what was typed is kept, to fix and post again


def test_a_post_without_a_body_field_is_refused(bob_client, ticket):
    assert bob_client.post(comment_url(ticket), {}).status_code == 422
    assert nothing_written()


def test_an_outsider_cannot_comment_nor_learn_the_ticket_exists(client, charlie, ticket):
    client.force_login(charlie)
    assert client.post(comment_url(ticket), {"body": "Hi"}).status_code == 404
    missing = reverse("board:ticket-comment", args=[ticket.board.slug, 999999])
    assert client.post(missing, {"body": "Hi"}).status_code == 404
    assert nothing_written()


def test_a_member_cannot_comment_on_another_boards_ticket_through_their_board(bob_client, review_board):
    other = review_board.tickets.first()
    url = reverse("board:ticket-comment", args=["alices-board", other.pk])
    assert bob_client.post(url, {"body": "Hi"}).status_code == 404
    assert nothing_written()


def test_commenting_takes_a_logged_in_post(client, bob_client, ticket):
    assert bob_client.get(comment_url(ticket)).status_code == 405
    bob_client.logout()
    response = client.post(comment_url(ticket), {"body": "Hi"})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert nothing_written()


def test_staff_who_are_not_members_may_comment(client, ticket, django_user_model):
    staff = django_user_model.objects.create_user("sam", password="x", is_staff=True)
    client.force_login(staff)
    assert client.post(comment_url(ticket), {"body": "From staff"}).status_code == 302
    assert TicketComment.objects.get().author == "sam"


def test_posting_without_the_csrf_token_is_refused(ticket, bob):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    assert client.post(comment_url(ticket), {"body": "Hi"}).status_code == 403
    assert nothing_written()
