"""The list of boards a user may open, creating a board, and a board's members page."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Exists, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from phases.defaults import DEFAULT_WORKFLOW_SLUG
from phases.models import Workflow

from ..errors import Refused
from ..forms import BoardCreateForm, MemberAddForm, MemberRoleForm, add_refusal
from ..models import Board, Ticket
from ..services import board_create, board_may_manage, board_member_add, board_member_remove, board_member_update
from .common import board_for

Members = Board.members.through
Owners = Board.owners.through


def _count(queryset):
    """A correlated COUNT per board: two counts joined into one query would multiply each other."""
    counted = queryset.filter(board_id=OuterRef("pk")).order_by().values("board_id").annotate(n=Count("pk"))
    return Coalesce(Subquery(counted.values("n"), output_field=IntegerField()), Value(0))


@login_required
@require_GET
def board_list(request):
    """Every board the user may open, with its workflow, size and the user's role; one query whatever the number."""
    user = request.user
    boards = list(
        Board.objects.visible_to(user)
        .select_related("workflow")
        .annotate(
            ticket_count=_count(Ticket.objects.all()),
            member_count=_count(Members.objects.all()),
            is_member=Exists(Members.objects.filter(board_id=OuterRef("pk"), user_id=user.pk)),
            is_owner=Exists(Owners.objects.filter(board_id=OuterRef("pk"), user_id=user.pk)),
        )
        .order_by("name", "pk")
    )
    for board in boards:
        # An owner counts as one only while a member (BoardQuerySet.managed_by).
        board.role = "owner" if board.is_owner and board.is_member else "member" if board.is_member else "staff"
        board.may_manage = user.is_staff or board.role == "owner"
    return render(request, "board/board_list.html", {"boards": boards})


@login_required
@require_http_methods(["GET", "POST"])
def board_create_view(request):
    """Any user may start a board, Trello-style; they become its owner and add the others."""
    form = BoardCreateForm(request.POST or None, initial={"workflow": _default_workflow()})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            board = board_create(name=data["name"], slug=data["slug"], workflow=data["workflow"], creator=request.user)
        except (Refused, ValidationError) as exc:
            add_refusal(form, exc)
        else:
            messages.success(request, f"Created {board.name}. Add the people who work on it from its Members page.")
            return redirect("board:detail", board.slug)
    return render(
        request,
        "board/board_form.html",
        {"form": form, "has_workflows": Workflow.objects.exists()},
        status=422 if form.errors else 200,
    )


@login_required
@require_http_methods(["GET", "POST"])
def board_members_view(request, slug):
    """A board's members with their roles; staff and its owners add people here (POST) and change or remove them."""
    board = board_for(request, slug)
    form = MemberAddForm(request.POST or None)
    if request.method != "POST":
        return _members_page(request, board, form)
    if not board_may_manage(board, request.user):
        return _members_page(request, board, MemberAddForm(), refusal=_not_a_manager(board), status=403)
    if not form.is_valid():
        return _members_page(request, board, form, status=422)
    try:
        board_member_add(board=board, user=form.user, owner=form.cleaned_data["owner"], actor=request.user)
    except PermissionDenied as exc:
        return _members_page(request, board, form, refusal=str(exc), status=403)
    except (Refused, ValidationError) as exc:
        add_refusal(form, exc)
        return _members_page(request, board, form, status=_status(exc))
    role = "an owner" if form.cleaned_data["owner"] else "a member"
    messages.success(request, f"{form.user.get_username()} is now {role} of {board.name}.")
    return redirect("board:members", board.slug)


@login_required
@require_POST
def board_member_role_view(request, slug, user_id):
    """Make a member an owner, or an owner a plain member."""
    board = board_for(request, slug)
    member = get_object_or_404(get_user_model(), pk=user_id)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        return _members_page(request, board, MemberAddForm(), refusal="Choose owner or member.", status=422)
    owner = form.cleaned_data["role"] == "owner"
    try:
        board_member_update(board=board, user=member, owner=owner, actor=request.user)
    except (PermissionDenied, Refused) as exc:
        return _members_page(request, board, MemberAddForm(), refusal=str(exc), status=_status(exc))
    name = member.get_username()
    messages.success(request, f"{name} is now an owner." if owner else f"{name} is now a member, no longer an owner.")
    return redirect("board:members", board.slug)


@login_required
@require_POST
def board_member_remove_view(request, slug, user_id):
    """Take someone off the board; an owner may leave this way too, once another owner remains."""
    board = board_for(request, slug)
    member = get_object_or_404(get_user_model(), pk=user_id)
    try:
        board_member_remove(board=board, user=member, actor=request.user)
    except (PermissionDenied, Refused) as exc:
        return _members_page(request, board, MemberAddForm(), refusal=str(exc), status=_status(exc))
    if not Board.objects.visible_to(request.user).filter(pk=board.pk).exists():
        messages.success(request, f"You left {board.name}.")
        return redirect("board:list")
    messages.success(request, f"{member.get_username()} is no longer a member of {board.name}.")
    return redirect("board:members", board.slug)


def _members_page(request, board, form, *, refusal=None, status=200):
    user = request.user
    members = list(
        board.members.annotate(is_owner=Exists(Owners.objects.filter(board_id=board.pk, user_id=OuterRef("pk"))))
        .only("pk", "username", "first_name", "last_name", "is_staff")
        .order_by("-is_owner", "username")
    )
    owner_count = sum(member.is_owner for member in members)
    may_manage = user.is_staff or any(member.pk == user.pk and member.is_owner for member in members)
    for member in members:
        # The buttons the service would refuse are not offered: a board's owners keep its last owner.
        member.is_last_owner = member.is_owner and owner_count == 1 and not user.is_staff
    return render(
        request,
        "board/board_members.html",
        {
            "board": board,
            "members": members,
            "owner_count": owner_count,
            "may_manage": may_manage,
            "form": form,
            "refusal": refusal,
        },
        status=status,
    )


def _not_a_manager(board):
    return f"Only staff and the owners of {board.name} manage its members."


def _status(exc):
    if isinstance(exc, PermissionDenied):
        return 403
    if isinstance(exc, Refused):
        return exc.status
    return 422


def _default_workflow():
    return Workflow.objects.filter(slug=DEFAULT_WORKFLOW_SLUG).values_list("pk", flat=True).first()
