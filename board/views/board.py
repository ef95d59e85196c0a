"""The board page: its columns, live fragments, more cards, and moves (drops and keyboard moves).

Views parse input, call a service and render; the rules live in
`board.services`. Fragments for htmx are named partials of the page template.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Max
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from ..errors import Refused
from ..events import EventType
from ..forms import BoardFilterForm, MoveForm
from ..models import Event, Ticket
from ..selectors import (
    LANE_ORDER,
    board_columns,
    column_cards_after,
    move_options,
)
from ..services import ticket_move
from .common import bad_request, board_for, filter_query, shown, vary_on_htmx, workflow_phases


def _options_html(options):
    """The "Move to…" <option>s of each phase, rendered once: every card of a phase shares them."""
    return {
        phase_id: format_html_join(
            "",
            '<option value="{}"{}>{}{}</option>',
            (
                (
                    option.column.key,
                    "" if option.enabled else mark_safe(" disabled"),
                    option.column.name,
                    f" — {option.reason}" if option.reason else "",
                )
                for option in row
            ),
        )
        for phase_id, row in options.items()
    }


def _board_context(request, board, phases, filter_form, views):
    filters = filter_form.filters()
    options = _options_html(move_options(phases, views, may_force=request.user.is_staff))
    names = {phase.pk: phase.name for phase in phases}
    for view in views:
        for cell in view.cells:
            _decorate(cell.cards, options, names)
    return {
        "board": board,
        "phases": phases,
        "filter_form": filter_form,
        "filters": filters,
        "filter_query": filter_query(filter_form.data),
        "columns": views,
        "options": options,
        # Card links are built from this prefix: reversing three URLs per card was a tenth of the page time.
        "tickets_url": reverse("board:ticket-create", args=[board.slug]).removesuffix("new/"),
        "ticket_graph_url": _ticket_graph_url(board),
        "lanes": LANE_ORDER if filters.lanes else [""],
    }


def _ticket_graph_url(board):
    """A ticket's graph page URL as (before the ticket id, after it), for the cards' "Graph" links; None without it.

    Reversed once per page, as `tickets_url` is. The page lives in the
    discoveries app, above this one, so it is found by its name alone.
    """
    try:
        url = reverse("discoveries:ticket-graph", args=[board.slug, 0])
    except NoReverseMatch:
        return None
    before, after = url.rsplit("/0/", 1)
    return before + "/", "/" + after


def _decorate(cards, options, names):
    """Give each card its "Move to…" choices and phase name, worked out once per phase."""
    for card in cards:
        card.move_options = options.get(card.phase_id, "")
        card.phase_name = names.get(card.phase_id, "")


@login_required
@require_GET
def board_detail(request, slug):
    board = board_for(request, slug)
    # Read before the columns: whatever happens after this id, the page replays.
    last_event_id = Event.objects.filter(board=board).aggregate(last=Max("id"))["last"] or 0
    phases = workflow_phases(board)
    filter_form = BoardFilterForm(request.GET, phases=phases)
    filter_form.is_valid()
    views = board_columns(board, filter_form.filters())
    context = _board_context(request, board, phases, filter_form, views)
    context["last_event_id"] = last_event_id
    context["event_types"] = {event_type.name: event_type.value for event_type in EventType}
    template = "board/board.html#board-body" if request.htmx and not request.htmx.boosted else "board/board.html"
    return vary_on_htmx(render(request, template, context))


@login_required
@require_GET
def board_columns_fragment(request, slug):
    """Fresh copies of some columns (`?column=key`, repeated), swapped in out of band by the live board."""
    board = board_for(request, slug)
    keys = request.GET.getlist("column")[:50]
    phases = workflow_phases(board)
    filter_form = BoardFilterForm(request.GET, phases=phases)
    filter_form.is_valid()
    views = board_columns(board, filter_form.filters(), only=keys)
    context = _board_context(request, board, phases, filter_form, views)
    return render(request, "board/board.html#columns-oob", context)


@login_required
@require_GET
def column_more(request, slug, key):
    """The next page of cards of one column (or one swimlane of it), after the card `?after=`."""
    board = board_for(request, slug)
    phases = workflow_phases(board)
    filter_form = BoardFilterForm(request.GET, phases=phases)
    filter_form.is_valid()
    filters = filter_form.filters()
    views = board_columns(board, filters, only=[key])
    if not views:
        return bad_request(f"Board {board.name} has no column {shown(key)}.")
    view = views[0]
    lane = request.GET.get("lane", "")
    if lane and lane not in LANE_ORDER:
        return bad_request(f"Unknown swimlane {shown(lane)}; use one of {', '.join(LANE_ORDER)}.")
    after = None
    after_id = request.GET.get("after", "")
    if after_id:
        if not after_id.isdigit() or len(after_id) > 18:
            return bad_request(f"`after` must be a ticket id, not {shown(after_id)}.")
        after = Ticket.objects.filter(board=board, pk=int(after_id)).only("pk", "position").first()
        if after is None:
            return bad_request(f"Ticket #{after_id} is not on this board.")
    cards, has_more = column_cards_after(board, filters, view=view, after=after, lane=lane)
    context = _board_context(request, board, phases, filter_form, views)
    _decorate(cards, context["options"], {phase.pk: phase.name for phase in phases})
    context.update({"view": view, "cards": cards, "has_more": has_more, "lane": lane})
    return render(request, "board/board.html#card-page", context)


def _neighbours(ticket, view, direction, filters):
    """The (previous, next) ids that put `ticket` one place up or down among the cards the user sees."""
    cards = (
        Ticket.objects.filter(board_id=ticket.board_id, phase_id__in=[p.pk for p in view.phases])
        .filter(filters.q())
        .exclude(pk=ticket.pk)
    )
    if filters.lanes:
        cards = cards.filter(priority=ticket.priority)
    if direction == "up":
        above = cards.filter(position__lte=ticket.position).order_by("-position", "-id").values_list("id", flat=True)
        above = list(above[:2])
        if not above:
            return None
        return (above[1] if len(above) > 1 else None), above[0]
    below = cards.filter(position__gte=ticket.position).order_by("position", "id").values_list("id", flat=True)
    below = list(below[:2])
    if not below:
        return None
    return below[0], (below[1] if len(below) > 1 else None)


def _column_key_of(views_by_phase, phase_id):
    view = views_by_phase.get(phase_id)
    return view.column.key if view else None


@login_required
@require_POST
def ticket_move_view(request, slug, pk):
    """A drop or a keyboard move. htmx gets both columns re-rendered from the database, and the outcome."""
    board = board_for(request, slug)
    ticket = get_object_or_404(Ticket.objects.select_related("phase"), board=board, pk=pk)
    phases = workflow_phases(board)
    # Filters ride in the query string, as on the page the move came from.
    filter_form = BoardFilterForm(request.GET, phases=phases)
    filter_form.is_valid()
    filters = filter_form.filters()
    form = MoveForm(request.POST)
    all_views = board_columns(board, filters, cards=False)
    columns_by_key = {view.column.key: view for view in all_views}
    views_by_phase = {phase.pk: view for view in all_views for phase in view.phases}
    from_key = _column_key_of(views_by_phase, ticket.phase_id)

    status, outcome, refused = 200, "", None
    if not form.is_valid():
        status = 422
        outcome = " ".join(str(e) for errors in form.errors.values() for e in errors)
        target_key = from_key
    else:
        data = form.cleaned_data
        target_key = data["column"] or from_key
        target = columns_by_key.get(target_key)
        if target is None:
            status, outcome = 422, f"Board {board.name} has no column {target_key!r}."
            target_key = from_key
        else:
            previous_id, next_id = data["previous"], data["next"]
            if data["direction"]:
                neighbours = _neighbours(ticket, columns_by_key[from_key], data["direction"], filters)
                target_key = from_key
                target = columns_by_key[from_key]
                if neighbours is None:
                    where = "top" if data["direction"] == "up" else "bottom"
                    outcome = f"“{ticket.title}” is already at the {where} of {target.column.name}."
                else:
                    previous_id, next_id = neighbours
            if not outcome:
                try:
                    moved = ticket_move(
                        ticket=ticket,
                        column=target.column,
                        actor=request.user,
                        previous_id=previous_id,
                        next_id=next_id,
                        reason=data["reason"],
                        force=data["force"],
                    )
                except Refused as exc:
                    status, outcome = exc.status, str(exc)
                    refused = {"column": target_key, "previous": previous_id or "", "next": next_id or ""}
                except ValidationError as exc:
                    status, outcome = 422, " ".join(exc.messages)
                else:
                    outcome = _moved_message(ticket, moved, target, data["direction"])

    if not request.htmx:
        (messages.success if status == 200 else messages.error)(request, outcome)
        url = reverse("board:detail", args=[board.slug])
        query = filter_query(request.GET)
        return redirect(f"{url}?{query}" if query else url)

    keys = [key for key in dict.fromkeys([from_key, target_key]) if key]
    views = board_columns(board, filters, only=keys)
    context = _board_context(request, board, phases, filter_form, views)
    context.update(
        {
            "outcome": outcome,
            "outcome_ok": status == 200,
            "ticket": ticket,
            "refused": refused if request.user.is_staff else None,
            "may_force": request.user.is_staff,
        }
    )
    return render(request, "board/board.html#move-result", context, status=status)


def _moved_message(before, after, target, direction):
    if direction:
        return f"“{after.title}” moved {direction} in {target.column.name}."
    if after.phase_id != before.phase_id:
        phase = next((p for p in target.phases if p.pk == after.phase_id), None)
        into = f"{target.column.name} ({phase.name})" if phase and len(target.phases) > 1 else target.column.name
        return f"“{after.title}” moved to {into}."
    return f"“{after.title}” reordered in {target.column.name}."
