"""The ticket pages: a ticket, its result review, and the create and edit forms."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ..errors import Refused
from ..forms import ResultReviewForm, TicketCreateForm, TicketEditForm
from ..models import Event, PhaseHistory, Ticket, TicketResult
from ..selectors import (
    ticket_gate,
    with_gate_facts,
)
from ..services import ticket_result_review
from .common import board_for


@login_required
@require_GET
def ticket_detail(request, slug, pk):
    board = board_for(request, slug)
    ticket = get_object_or_404(
        with_gate_facts(Ticket.objects.select_related("phase", "created_by")), board=board, pk=pk
    )
    history = list(
        PhaseHistory.objects.filter(ticket=ticket)
        .select_related("from_phase", "to_phase")
        .order_by("-created_at", "-id")
    )
    activity = list(
        Event.objects.filter(board=board, entity_type="ticket", entity_id=str(ticket.pk)).order_by("-id")[:100]
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
    return render(
        request,
        "board/ticket_detail.html",
        {
            "board": board,
            "ticket": ticket,
            "history": history,
            "activity": activity,
            "tasks": tasks,
            "discoveries": discoveries,
            "comments": list(ticket.comments.order_by("created_at", "id")),
            "gate": gate,
            "results": results,
            "may_review": request.user.is_staff,
        },
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
