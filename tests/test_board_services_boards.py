"""Board services: creating a board, and members and owners managed by staff and the board's owners.

The cast: Alice is staff; Bob creates "Bob's team" and owns it; Charlie
becomes a plain member of it; Dave is nobody there. Every refusal leaves the
board as it was.
"""

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError

from board import consumers
from board.errors import Refused
from board.events import ORCHESTRATOR, EventType
from board.models import Board, Event
from board.services import board_create, board_may_manage, board_member_add, board_member_remove, board_member_update
from board.services import boards as board_services

from .test_board_consumer import assert_closed_with, browser_login, live, run

pytestmark = pytest.mark.django_db


@pytest.fixture
def dave(db):
    return get_user_model().objects.create_user("dave", "dave@example.org", "password")


@pytest.fixture
def team(workflow, bob):
    return board_create(name="Bob's team", workflow=workflow, creator=bob)


@pytest.fixture
def with_charlie(team, bob, charlie):
    board_member_add(board=team, user=charlie, actor=bob)
    return team


def members(board):
    return set(board.members.values_list("username", flat=True))


def owners(board):
    return set(board.owners.values_list("username", flat=True))


def snapshot():
    """Everything a refused change must leave alone."""
    return (
        sorted(Board.objects.values_list("slug", "name", "workflow_id")),
        sorted(Board.members.through.objects.values_list("board_id", "user_id")),
        sorted(Board.owners.through.objects.values_list("board_id", "user_id")),
        Event.objects.count(),
    )


def events(board, type):
    return list(Event.objects.filter(board=board, type=type).order_by("id").values("payload", "actor"))


# Creating a board


def test_the_creator_becomes_the_first_member_and_owner_and_the_creation_is_an_event(workflow, bob):
    board = board_create(name="Payments", workflow=workflow, creator=bob)
    assert (board.name, board.slug, board.workflow) == ("Payments", "payments", workflow)
    assert members(board) == owners(board) == {"bob"}
    assert events(board, EventType.BOARD_CREATED) == [
        {
            "payload": {"name": "Payments", "slug": "payments", "workflow": workflow.slug, "owner": "bob"},
            "actor": "bob",
        }
    ]


def test_the_workflow_may_be_named_by_its_slug(workflow, bob):
    assert board_create(name="Payments", workflow=workflow.slug, creator=bob).workflow == workflow


def test_a_slug_made_from_the_name_is_numbered_when_taken(board, workflow, bob):
    assert board.slug == "alices-board"
    second = board_create(name="Alice's board", workflow=workflow, creator=bob)
    third = board_create(name="Alice’s  Board!", workflow=workflow, creator=bob)
    assert (second.slug, third.slug) == ("alices-board-2", "alices-board-3")


def test_a_name_without_letters_for_a_slug_still_gets_one(workflow, bob):
    assert board_create(name="日本語チーム", workflow=workflow, creator=bob).slug == "board"
    assert board_create(name="!!!", workflow=workflow, creator=bob).slug == "board-2"


def test_a_name_that_would_make_a_reserved_slug_gets_a_numbered_one(workflow, bob):
    assert board_create(name="New", workflow=workflow, creator=bob).slug == "new-2"


def test_a_long_name_makes_a_slug_that_fits_even_numbered(workflow, bob):
    name = "A very long board name " * 8
    first = board_create(name=name, workflow=workflow, creator=bob)
    second = board_create(name=name, workflow=workflow, creator=bob)
    assert len(first.slug) <= 100 and len(second.slug) <= 100
    assert second.slug.endswith("-2") and first.slug != second.slug


def test_a_given_slug_is_used_as_given(workflow, bob):
    assert board_create(name="Payments", slug="pay", workflow=workflow, creator=bob).slug == "pay"


def test_an_empty_slug_means_one_made_from_the_name(workflow, bob):
    assert board_create(name="Payments", slug="  ", workflow=workflow, creator=bob).slug == "payments"


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"slug": "alices-board"}, "slug", "The address /boards/alices-board/ is taken by another board"),
        ({"slug": "not a slug"}, "slug", "Enter a valid “slug”"),
        ({"slug": "new"}, "slug", "“new” is reserved for a page of the site"),
        ({"slug": "x" * 101}, "slug", "Ensure this value has at most 100 characters"),
        ({"name": "   "}, "name", "This field cannot be blank."),
        ({"name": "n" * 201}, "name", "At most 200 characters"),
        ({"workflow": "no-such-workflow"}, "workflow", "Unknown workflow 'no-such-workflow'"),
        ({"workflow": None}, "workflow", "Unknown workflow 'NoneType'"),
    ],
)
def test_bad_input_is_refused_on_its_field_and_creates_nothing(board, workflow, bob, changes, field, message):
    before = snapshot()
    arguments = {"name": "Payments", "workflow": workflow, "creator": bob, **changes}
    with pytest.raises(ValidationError) as refused:
        board_create(**arguments)
    assert list(refused.value.message_dict) == [field]
    assert refused.value.message_dict[field][0].startswith(message)
    assert snapshot() == before


def test_only_an_active_user_may_create_a_board(workflow, bob):
    from django.contrib.auth.models import AnonymousUser

    bob.is_active = False
    bob.save()
    before = snapshot()
    for creator in (bob, AnonymousUser(), None, ORCHESTRATOR):
        with pytest.raises(PermissionDenied):
            board_create(name="Payments", workflow=workflow, creator=creator)
    assert snapshot() == before


def test_a_slug_taken_at_the_same_moment_is_replaced_by_the_next_free_one(board, workflow, bob, monkeypatch):
    # Another board took "alices-board" between the look-up and the insert.
    picks = iter(["alices-board", "alices-board-2"])
    monkeypatch.setattr(board_services, "_free_slug", lambda name: next(picks))
    assert board_create(name="Alice's board", workflow=workflow, creator=bob).slug == "alices-board-2"


def test_a_given_slug_taken_at_the_same_moment_is_refused_cleanly(board, workflow, bob, monkeypatch):
    before = snapshot()
    real_filter = Board.objects.filter
    missed = []

    def filter_that_misses_it(*args, **kwargs):
        if kwargs == {"slug": "alices-board"}:
            missed.append(kwargs)
            return Board.objects.none()
        return real_filter(*args, **kwargs)

    monkeypatch.setattr(Board.objects, "filter", filter_that_misses_it)
    with pytest.raises(ValidationError) as refused:
        board_create(name="Payments", slug="alices-board", workflow=workflow, creator=bob)
    assert "is taken by another board" in refused.value.message_dict["slug"][0]
    assert missed, "the check before the insert was not the one bypassed"
    monkeypatch.undo()
    assert snapshot() == before


# Adding members


def test_an_owner_adds_a_member_and_the_change_is_an_event(team, bob, charlie):
    board_member_add(board=team, user=charlie, actor=bob)
    assert members(team) == {"bob", "charlie"}
    assert owners(team) == {"bob"}
    assert events(team, EventType.BOARD_MEMBER_ADDED) == [
        {"payload": {"user": "charlie", "user_id": charlie.pk, "owner": False}, "actor": "bob"}
    ]


def test_an_owner_may_add_another_owner(team, bob, charlie):
    board_member_add(board=team, user=charlie, actor=bob, owner=True)
    assert owners(team) == {"bob", "charlie"}
    assert board_may_manage(team, charlie)


def test_staff_manage_every_board_even_one_without_owners(board, alice, charlie):
    assert owners(board) == set()
    board_member_add(board=board, user=charlie, actor=alice, owner=True)
    assert owners(board) == {"charlie"}


def test_the_system_may_manage_members(board, charlie):
    board_member_add(board=board, user=charlie, actor=ORCHESTRATOR)
    assert "charlie" in members(board)


@pytest.mark.parametrize("who", ["charlie", "dave"])
def test_a_plain_member_or_an_outsider_may_not_add_anyone(with_charlie, who, dave, request):
    actor = request.getfixturevalue(who)
    before = snapshot()
    with pytest.raises(PermissionDenied, match="Only staff and the owners of Bob's team manage its members."):
        board_member_add(board=with_charlie, user=dave, actor=actor, owner=True)
    assert snapshot() == before


def test_owning_one_board_gives_nothing_on_another(team, board, bob, dave):
    before = snapshot()
    with pytest.raises(PermissionDenied):
        board_member_add(board=board, user=dave, actor=bob)
    assert snapshot() == before


def test_an_owner_taken_off_the_members_manages_no_more(team, bob, dave):
    team.members.remove(bob)  # as the admin may do; bob stays in the owners list
    assert not board_may_manage(team, bob)
    with pytest.raises(PermissionDenied):
        board_member_add(board=team, user=dave, actor=bob)


def test_a_deactivated_owner_manages_no_more(team, bob, dave):
    bob.is_active = False
    bob.save()
    with pytest.raises(PermissionDenied):
        board_member_add(board=team, user=dave, actor=bob)


def test_adding_a_member_twice_is_refused(with_charlie, bob, charlie):
    before = snapshot()
    with pytest.raises(Refused, match="charlie is already a member of Bob's team."):
        board_member_add(board=with_charlie, user=charlie, actor=bob, owner=True)
    assert snapshot() == before


def test_a_deactivated_user_cannot_join(team, bob, dave):
    dave.is_active = False
    dave.save()
    before = snapshot()
    with pytest.raises(ValidationError, match="dave is deactivated"):
        board_member_add(board=team, user=dave, actor=bob)
    assert snapshot() == before


def test_an_ownership_left_over_from_the_admin_does_not_come_back_with_a_plain_membership(team, bob, dave):
    team.owners.add(dave)  # an owner who is not a member: not an owner in effect
    assert not board_may_manage(team, dave)
    board_member_add(board=team, user=dave, actor=bob)
    assert owners(team) == {"bob"}


# Owners


def test_an_owner_promotes_a_member_and_demotes_them_again(with_charlie, bob, charlie):
    board_member_update(board=with_charlie, user=charlie, owner=True, actor=bob)
    assert owners(with_charlie) == {"bob", "charlie"}
    board_member_update(board=with_charlie, user=charlie, owner=False, actor=bob)
    assert owners(with_charlie) == {"bob"}
    assert [e["payload"]["owner"] for e in events(with_charlie, EventType.BOARD_MEMBER_UPDATED)] == [True, False]


def test_an_update_that_changes_nothing_records_nothing(with_charlie, bob, charlie):
    before = snapshot()
    board_member_update(board=with_charlie, user=charlie, owner=False, actor=bob)
    board_member_update(board=with_charlie, user=bob, owner=True, actor=bob)
    assert snapshot() == before


def test_the_last_owner_cannot_step_down(with_charlie, bob):
    before = snapshot()
    with pytest.raises(Refused, match="You are the last owner of Bob's team and cannot stop being an owner"):
        board_member_update(board=with_charlie, user=bob, owner=False, actor=bob)
    assert snapshot() == before


def test_an_owner_steps_down_once_there_is_another(with_charlie, bob, charlie):
    board_member_update(board=with_charlie, user=charlie, owner=True, actor=bob)
    board_member_update(board=with_charlie, user=bob, owner=False, actor=bob)
    assert owners(with_charlie) == {"charlie"}
    assert not board_may_manage(with_charlie, bob)


def test_staff_may_demote_the_last_owner_and_then_manage_the_board_alone(with_charlie, alice, bob):
    board_member_update(board=with_charlie, user=bob, owner=False, actor=alice)
    assert owners(with_charlie) == set()
    assert board_may_manage(with_charlie, alice)


def test_a_plain_member_may_not_promote_themselves(with_charlie, charlie):
    before = snapshot()
    with pytest.raises(PermissionDenied):
        board_member_update(board=with_charlie, user=charlie, owner=True, actor=charlie)
    assert snapshot() == before


def test_only_members_have_a_role_to_change(team, bob, dave):
    before = snapshot()
    with pytest.raises(Refused, match="dave is not a member of Bob's team."):
        board_member_update(board=team, user=dave, owner=True, actor=bob)
    assert snapshot() == before


# Removing members


def test_an_owner_removes_a_member_and_the_removal_is_an_event(with_charlie, bob, charlie):
    board_member_remove(board=with_charlie, user=charlie, actor=bob)
    assert members(with_charlie) == {"bob"}
    assert not Board.objects.visible_to(charlie).exists()
    assert events(with_charlie, EventType.BOARD_MEMBER_REMOVED) == [
        {"payload": {"user": "charlie", "user_id": charlie.pk, "owner": False}, "actor": "bob"}
    ]


def test_a_removed_owner_is_no_owner_either(with_charlie, bob, charlie):
    board_member_update(board=with_charlie, user=charlie, owner=True, actor=bob)
    board_member_remove(board=with_charlie, user=charlie, actor=bob)
    assert owners(with_charlie) == {"bob"}


def test_the_last_owner_cannot_leave(with_charlie, bob):
    before = snapshot()
    with pytest.raises(Refused, match="You are the last owner of Bob's team and cannot leave the board"):
        board_member_remove(board=with_charlie, user=bob, actor=bob)
    assert snapshot() == before


def test_an_owner_leaves_once_there_is_another(with_charlie, bob, charlie):
    board_member_update(board=with_charlie, user=charlie, owner=True, actor=bob)
    board_member_remove(board=with_charlie, user=bob, actor=bob)
    assert (members(with_charlie), owners(with_charlie)) == ({"charlie"}, {"charlie"})


def test_staff_may_remove_the_last_owner(with_charlie, alice, bob):
    board_member_remove(board=with_charlie, user=bob, actor=alice)
    assert (members(with_charlie), owners(with_charlie)) == ({"charlie"}, set())


@pytest.mark.parametrize("who", ["charlie", "dave"])
def test_a_plain_member_or_an_outsider_may_not_remove_anyone(with_charlie, who, bob, dave, request):
    actor = request.getfixturevalue(who)
    before = snapshot()
    with pytest.raises(PermissionDenied):
        board_member_remove(board=with_charlie, user=bob, actor=actor)
    assert snapshot() == before


def test_removing_someone_who_is_not_a_member_is_refused(team, bob, dave):
    before = snapshot()
    with pytest.raises(Refused, match="dave is not a member of Bob's team."):
        board_member_remove(board=team, user=dave, actor=bob)
    assert snapshot() == before


def test_a_board_deleted_meanwhile_is_refused(team, bob, charlie):
    Board.objects.filter(pk=team.pk).delete()
    with pytest.raises(Refused, match="This board no longer exists."):
        board_member_add(board=team, user=charlie, actor=bob)


@pytest.mark.django_db(transaction=True)
def test_a_removed_member_s_open_board_stops_at_once(with_charlie, bob, charlie, fast_poll):
    handshake, _ = browser_login(charlie)

    async def scenario():
        async with live(handshake, f"/ws/boards/{with_charlie.slug}/") as communicator:
            await database_sync_to_async(board_member_remove)(board=with_charlie, user=charlie, actor=bob)
            # The removal's own event may come first (it tells the member they were removed); then the socket ends.
            output = await communicator.receive_output(timeout=3)
            if output.get("type") == "websocket.send":
                assert '"board.member_removed"' in output["text"]
            else:
                assert output == {"type": "websocket.close", "code": consumers.CLOSE_NOT_FOUND}
                return
            await assert_closed_with(communicator, consumers.CLOSE_NOT_FOUND)

    run(scenario)
