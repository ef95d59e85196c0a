"""Boards: creating one, and who is on it — members, and the owners among them who manage the others.

Any active user may create a board and becomes its first owner, as on Trello
or Linear. Staff manage every board (and alone manage one without owners);
an owner manages the members of the boards they own. A board that has owners
keeps one: its owners cannot remove or demote the last of them. Staff can, and
the board is then managed by staff alone.

Membership is what the live channel checks (`board.consumers.user_access`):
a member removed here stops getting the board's events within a poll.
"""

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from phases.models import Workflow

from ..errors import Refused
from ..events import EventType, SystemActor, actor_user, event_emit
from ..models import RESERVED_BOARD_SLUGS, Board
from .inputs import clean_text

SLUG_MAX_LENGTH = Board._meta.get_field("slug").max_length
# Room kept at the end of a slug made from a name for "-2", "-3", …
SLUG_SUFFIX_ROOM = 8
# Two boards created at once from the same name may pick the same free slug; the later one tries again.
SLUG_ATTEMPTS = 5


@transaction.atomic
def board_create(*, name, workflow, creator, slug=None):
    """Create a board on `workflow` (a Workflow or its slug); `creator` becomes its first member and owner.

    Without a `slug`, one is made from the name, numbered when taken. A slug
    given is used as it is, or refused when it is taken or not a slug.
    """
    user = actor_user(creator)
    if user is None or not user.is_active:
        raise PermissionDenied("Log in to create a board.")
    name = clean_text(name, field="name", max_length=Board._meta.get_field("name").max_length, required=True)
    workflow = _resolve_workflow(workflow)
    wanted = _clean_slug(slug) if slug is not None and str(slug).strip() else None

    for _ in range(SLUG_ATTEMPTS):
        chosen = wanted or _free_slug(name)
        if wanted and Board.objects.filter(slug=wanted).exists():
            raise ValidationError({"slug": _slug_taken(wanted)})
        try:
            with transaction.atomic():
                board = Board.objects.create(name=name, slug=chosen, workflow=workflow)
        except IntegrityError:
            # Taken since it was checked, by a board created at the same moment.
            if wanted:
                raise ValidationError({"slug": _slug_taken(wanted)}) from None
            continue
        break
    else:
        raise Refused("Could not find a free address for the board; try again.")

    board.members.add(user)
    board.owners.add(user)
    event_emit(
        board=board,
        type=EventType.BOARD_CREATED,
        entity=board,
        payload={"name": board.name, "slug": board.slug, "workflow": workflow.slug, "owner": user.get_username()},
        actor=creator,
    )
    return board


@transaction.atomic
def board_member_add(*, board, user, actor, owner=False):
    """Put `user` on the board (as an owner when `owner`); staff and the board's owners may."""
    board = _locked_for_management(board, actor)
    if not user.is_active:
        raise ValidationError({"user": f"{user.get_username()} is deactivated and cannot join a board."})
    if board.members.filter(pk=user.pk).exists():
        raise Refused(f"{user.get_username()} is already a member of {board.name}.")
    board.members.add(user)
    if owner:
        board.owners.add(user)
    else:
        # An ownership left from an earlier membership (the admin edits the two lists apart) does not come back.
        board.owners.remove(user)
    _emit_member_event(board, EventType.BOARD_MEMBER_ADDED, user, owner=bool(owner), actor=actor)
    return board


@transaction.atomic
def board_member_update(*, board, user, owner, actor):
    """Make a member an owner, or an owner a plain member; the last owner stays unless staff demote them."""
    board = _locked_for_management(board, actor)
    _require_member(board, user)
    is_owner = _is_owner(board, user)
    owner = bool(owner)
    if owner == is_owner:
        return board
    if not owner:
        _keep_an_owner(board, user, actor, doing="stop being an owner")
        board.owners.remove(user)
    else:
        board.owners.add(user)
    _emit_member_event(board, EventType.BOARD_MEMBER_UPDATED, user, owner=owner, actor=actor)
    return board


@transaction.atomic
def board_member_remove(*, board, user, actor):
    """Take `user` off the board: their pages of it stop updating at once, and it leaves their list."""
    board = _locked_for_management(board, actor)
    _require_member(board, user)
    if _is_owner(board, user):
        _keep_an_owner(board, user, actor, doing="leave the board")
    board.members.remove(user)
    board.owners.remove(user)
    _emit_member_event(board, EventType.BOARD_MEMBER_REMOVED, user, owner=False, actor=actor)
    return board


def board_may_manage(board, user):
    """Whether `user` may manage the board's members: staff, or one of its owners who is still a member."""
    return Board.objects.managed_by(user).filter(pk=board.pk).exists()


# Helpers


def _resolve_workflow(workflow):
    if isinstance(workflow, Workflow):
        return workflow
    found = Workflow.objects.filter(slug=workflow).first() if isinstance(workflow, str) and workflow else None
    if found is None:
        shown = workflow if isinstance(workflow, str) else type(workflow).__name__
        raise ValidationError({"workflow": f"Unknown workflow {shown[:64]!r}; choose one of the installed workflows."})
    return found


def _clean_slug(slug):
    slug = str(slug).strip()
    try:
        Board._meta.get_field("slug").run_validators(slug)
    except ValidationError as exc:
        raise ValidationError({"slug": exc.messages}) from None
    return slug


def _slug_taken(slug):
    return f"The address /boards/{slug}/ is taken by another board; choose another or leave it empty."


def _free_slug(name):
    """A slug made from `name` that no board has yet: "team", then "team-2", "team-3", …"""
    base = slugify(name)[:SLUG_MAX_LENGTH].strip("-_") or "board"
    stem = base[: SLUG_MAX_LENGTH - SLUG_SUFFIX_ROOM].strip("-_") or "board"
    # One query for every slug the candidates could collide with: all of them start with the stem.
    taken = set(Board.objects.filter(slug__startswith=stem).values_list("slug", flat=True)) | RESERVED_BOARD_SLUGS
    if base not in taken:
        return base
    number = 2
    while f"{stem}-{number}" in taken:
        number += 1
    return f"{stem}-{number}"


def _locked_for_management(board, actor):
    """The board, its row locked so that membership changes run one at a time; refused unless `actor` manages it.

    The lock makes "is this the last owner?" true until the change commits:
    two owners demoting each other at once cannot leave the board without one.
    """
    locked = Board.objects.select_for_update().filter(pk=board.pk).first()
    if locked is None:
        raise Refused("This board no longer exists.")
    if not isinstance(actor, SystemActor):
        user = actor_user(actor)
        if user is None or not board_may_manage(locked, user):
            raise PermissionDenied(f"Only staff and the owners of {locked.name} manage its members.")
    return locked


def _require_member(board, user):
    if not board.members.filter(pk=user.pk).exists():
        raise Refused(f"{user.get_username()} is not a member of {board.name}.")


def _is_owner(board, user):
    return board.owners.filter(pk=user.pk).exists()


def _keep_an_owner(board, user, actor, *, doing):
    """Refuse to leave a board that has owners without one, unless staff (or the system) do it."""
    acting = actor_user(actor)
    if isinstance(actor, SystemActor) or (acting is not None and acting.is_staff):
        return
    others = board.owners.filter(boards=board).exclude(pk=user.pk)
    if not others.exists():
        who = "You are" if acting is not None and acting.pk == user.pk else f"{user.get_username()} is"
        raise Refused(f"{who} the last owner of {board.name} and cannot {doing}: make another member an owner first.")


def _emit_member_event(board, type, user, *, owner, actor):
    event_emit(
        board=board,
        type=type,
        entity=board,
        payload={"user": user.get_username(), "user_id": user.pk, "owner": owner},
        actor=actor,
    )
