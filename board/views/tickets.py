"""The ticket pages: a ticket with its comments, activity and phase change, its result review, and the forms."""

from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ..activity import ticket_activity
from ..errors import Refused
from ..forms import (
    CommentForm,
    PhaseChangeForm,
    ResultReviewForm,
    TicketCreateForm,
    TicketEditForm,
    add_refusal,
)
from ..models import Task, Ticket, TicketResult
from ..selectors import BoardFilters, board_columns, ticket_gate, with_gate_facts
from ..services import ticket_comment, ticket_result_review, ticket_transition
from .common import board_for, vary_on_htmx, workflow_phases

IN_HAND = (Task.Status.ASSIGNED, Task.Status.RUNNING)


@dataclass
class PhaseOption:
    """A phase the ticket page offers to move the ticket to; `note` says why the move would be refused."""

    phase: object
    note: str = ""

    @property
    def allowed(self):
        return not self.note


def phase_options(ticket, phases, views, *, may_force):
    """The phases a ticket may be moved to from its page, in workflow order, as the transition service judges them.

    Members get the allowed transitions into columns with room; staff also get
    the others, each saying why it needs forcing. `phases` carry their
    transitions; `views` are the board's columns with their counts.
    """
    current = next((phase for phase in phases if phase.pk == ticket.phase_id), None)
    if current is None:
        return []
    column_of = {phase.pk: view for view in views for phase in view.phases}
    here = column_of.get(current.pk)
    options = []
    for phase in phases:
        if phase.pk == current.pk:
            continue
        view = column_of.get(phase.pk)
        note = ""
        if not current.can_transition_to(phase):
            note = f"not allowed from {current.name}"
        elif view is not None and view is not here and view.is_full:
            note = f"{view.column.name} is full ({view.count}/{view.limit})"
        if not note or may_force:
            options.append(PhaseOption(phase, note))
    return options


def _detail_context(request, board, pk, *, comment_form=None, phase_form=None):
    ticket = get_object_or_404(
        with_gate_facts(Ticket.objects.select_related("phase", "created_by")), board=board, pk=pk
    )
    # Discoveries come through the relation the discoveries app adds to Task: no import of the app above.
    tasks = list(
        ticket.tasks.select_related("phase", "assigned_agent")
        .prefetch_related("discoveries")
        .order_by("created_at", "id")
    )
    discoveries = sorted((d for task in tasks for d in task.discoveries.all()), key=lambda d: (d.discovered_at, d.pk))
    gate = ticket_gate(ticket, tasks=tasks)
    results = list(ticket.results.select_related("submitted_by", "reviewed_by").order_by("-submitted_at", "-id"))
    phases = workflow_phases(board)
    views = board_columns(board, BoardFilters(), cards=False)
    column = next((view.column for view in views if any(p.pk == ticket.phase_id for p in view.phases)), None)
    activity, more_activity = ticket_activity(
        ticket, tasks=tasks, phases=phases, columns=[view.column for view in views]
    )
    may_force = request.user.is_staff
    return {
        "board": board,
        "ticket": ticket,
        "column": column,
        "activity": activity,
        "more_activity": more_activity,
        "tasks": tasks,
        "agents": sorted({t.assigned_agent.name for t in tasks if t.status in IN_HAND and t.assigned_agent_id}),
        "discoveries": discoveries,
        "open_discoveries": sum(d.resolution_status == "open" for d in discoveries),
        "comments": list(ticket.comments.order_by("created_at", "id")),
        "comment_form": comment_form or CommentForm(),
        "gate": gate,
        "results": results,
        "may_review": request.user.is_staff,
        "may_force": may_force,
        "phase_options": phase_options(ticket, phases, views, may_force=may_force),
        "phase_form": phase_form or PhaseChangeForm(ticket=ticket),
    }


@login_required
@require_GET
def ticket_detail(request, slug, pk):
    board = board_for(request, slug)
    return render(request, "board/ticket_detail.html", _detail_context(request, board, pk))


@login_required
@require_POST
def ticket_comment_view(request, slug, pk):
    """Post a comment. With htmx the comments (and the activity, out of band) come back; without, the page."""
    board = board_for(request, slug)
    ticket = get_object_or_404(Ticket.objects.select_related("phase", "board"), board=board, pk=pk)
    form = CommentForm(request.POST)
    comment = None
    if form.is_valid():
        try:
            comment = ticket_comment(ticket=ticket, body=form.cleaned_data["body"], actor=request.user)
        except ValidationError as exc:
            add_refusal(form, exc)
    if comment is not None and not request.htmx:
        messages.success(request, "Comment posted.")
        return redirect(f"{reverse('board:ticket', args=[board.slug, ticket.pk])}#comment-{comment.pk}")
    context = _detail_context(request, board, pk, comment_form=None if comment else form)
    status = 200 if comment else 422
    if request.htmx:
        context["posted"] = comment
        return vary_on_htmx(render(request, "board/ticket_detail.html#comments-swap", context, status=status))
    return vary_on_htmx(render(request, "board/ticket_detail.html", context, status=status))


@login_required
@require_POST
def ticket_phase_view(request, slug, pk):
    """Move the ticket to another phase through `ticket_transition`; a refusal is shown on the page, nothing changed."""
    board = board_for(request, slug)
    ticket = get_object_or_404(Ticket.objects.select_related("phase", "board"), board=board, pk=pk)
    form = PhaseChangeForm(request.POST, ticket=ticket)
    status = 422
    if form.is_valid():
        data = form.cleaned_data
        try:
            moved = ticket_transition(
                ticket=ticket, to_phase=data["to_phase"], actor=request.user, reason=data["reason"], force=data["force"]
            )
        except Refused as exc:
            form.add_error(None, str(exc))
            status = exc.status
        except ValidationError as exc:
            add_refusal(form, exc)
        else:
            messages.success(request, f"Moved “{moved.title}” from {ticket.phase.name} to {moved.phase.name}.")
            return redirect(reverse("board:ticket", args=[board.slug, ticket.pk]))
    return render(
        request, "board/ticket_detail.html", _detail_context(request, board, pk, phase_form=form), status=status
    )


@login_required
@require_POST
def ticket_result_review_view(request, slug, pk, result_pk):
    """Staff accept or reject a ticket's result (POST from the ticket page); the outcome is shown there."""
    board = board_for(request, slug)
    result = get_object_or_404(TicketResult, ticket__board=board, ticket_id=pk, pk=result_pk)
    form = ResultReviewForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(str(e) for errors in form.errors.values() for e in errors))
    else:
        accept = form.cleaned_data["decision"] == "accept"
        try:
            ticket_result_review(result=result, user=request.user, accept=accept, note=form.cleaned_data["note"])
        except (PermissionDenied, Refused) as exc:
            messages.error(request, str(exc))
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, "Result accepted." if accept else "Result rejected.")
    return redirect(f"{reverse('board:ticket', args=[board.slug, pk])}#result-{result.pk}")


@login_required
@require_http_methods(["GET", "POST"])
def ticket_create_view(request, slug):
    board = board_for(request, slug)
    form = TicketCreateForm(request.POST or None, board=board, initial={"priority": "MEDIUM"})
    form.actor = request.user
    if request.method == "POST" and form.is_valid():
        messages.success(request, f"Created “{form.instance.title}”.")
        return redirect("board:ticket", board.slug, form.instance.pk)
    return render(request, "board/ticket_form.html", {"board": board, "form": form}, status=422 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def ticket_edit_view(request, slug, pk):
    board = board_for(request, slug)
    ticket = get_object_or_404(Ticket, board=board, pk=pk)
    form = TicketEditForm(request.POST or None, instance=ticket)
    form.actor = request.user
    if request.method == "POST" and form.is_valid():
        messages.success(request, f"Saved “{form.instance.title}”.")
        return redirect("board:ticket", board.slug, ticket.pk)
    return render(
        request,
        "board/ticket_form.html",
        {"board": board, "form": form, "ticket": ticket},
        status=422 if form.errors else 200,
    )
