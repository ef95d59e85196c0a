"""The board page: its columns, live fragments, more cards, and moves (drops and keyboard moves).

Views parse input, call a service and render; the rules live in
`board.services`. Fragments for htmx are named partials of the page template.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from ..errors import Refused
from ..events import EventType
from ..forms import BoardFilterForm, MoveForm
from ..models import Ticket
from ..selectors import LANE_ORDER, board_view, column_cards_after, last_event_id, move_choices
from ..services import ticket_move
from .common import bad_request, board_for, filter_query, shown, vary_on_htmx, workflow_phases


def _menu_html(choices):
    """The move menu's phase and column buttons of each phase, rendered once: every card of a phase shares them.

    Only "Move up" and "Move down" are rendered per card, by the template:
    they carry the card's id, to keep the focus on them across a re-render.
    """
    return {phase_id: _choices_html(row) for phase_id, row in choices.items()}


def _choices_html(row):
    parts = []
    if row.phases:
        parts.append(mark_safe('<p class="menu-heading">Move to phase</p>'))
        parts.extend(_phase_item(option) for option in row.phases)
    if row.columns:
        parts.append(mark_safe('<p class="menu-heading">Move to column</p>'))
        parts.append(
            format_html_join(
                "",
                '<button type="submit" name="column" value="{}" class="menu-item"{}>{}{}</button>',
                (
                    (
                        option.column.key,
                        "" if option.enabled else mark_safe(" disabled"),
                        option.column.name,
                        _note(option.reason),
                    )
                    for option in row.columns
                ),
            )
        )
    return mark_safe("".join(parts))


def _phase_item(option):
    if option.current:
        return format_html(
            '<p class="menu-item menu-current" aria-current="true">{}<span class="menu-note">current</span></p>',
            option.phase.name,
        )
    return format_html(
        '<button type="submit" name="phase" value="{}" class="menu-item"{}>{}{}</button>',
        option.phase.key,
        "" if option.enabled else mark_safe(" disabled"),
        option.phase.name,
        _note(option.reason),
    )


def _note(reason):
    return format_html('<span class="menu-note">{}</span>', reason) if reason else ""


def _board_context(request, board, phases, filter_form, board_read):
    filters = filter_form.filters()
    menus = _menu_html(move_choices(phases, board_read.columns, may_force=request.user.is_staff))
    names = {phase.pk: phase.name for phase in phases}
    for view in board_read.shown:
        for cell in view.cells:
            for band in cell.bands:
                _decorate(band.cards, menus, names)
    return {
        "board": board,
        "phases": phases,
        "filter_form": filter_form,
        "filters": filters,
        "filter_query": filter_query(filter_form.data),
        "columns": board_read.shown,
        "column_count": len(board_read.columns),
        "lanes": board_read.lanes,
        # What "Blocked" takes in besides flagged tickets, said under the filters.
        "holding_names": ", ".join(phase.name for phase in phases if phase.is_holding),
        "menus": menus,
        # Card links are built from this prefix: reversing three URLs per card was a tenth of the page time.
        "tickets_url": reverse("board:ticket-create", args=[board.slug]).removesuffix("new/"),
        "ticket_graph_url": _ticket_graph_url(board),
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


def _decorate(cards, menus, names):
    """Give each card its move menu and phase name, worked out once per phase."""
    for card in cards:
        card.move_menu = menus.get(card.phase_id, "")
        card.phase_name = names.get(card.phase_id, "")


@login_required
@require_GET
def board_detail(request, slug):
    board = board_for(request, slug)
    # Read before the columns: whatever happens after this id, the page replays.
    seen = last_event_id(board.pk)
    phases = workflow_phases(board)
    filter_form = BoardFilterForm(request.GET, phases=phases)
    filter_form.is_valid()
    board_read = board_view(board, filter_form.filters())
    context = _board_context(request, board, phases, filter_form, board_read)
    context["last_event_id"] = seen
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
    board_read = board_view(board, filter_form.filters(), only=keys)
    context = _board_context(request, board, phases, filter_form, board_read)
    return render(request, "board/board.html#columns-oob", context)


@login_required
@require_GET
def column_more(request, slug, key):
    """The next page of cards of one column (or one swimlane or phase band of it), after the card `?after=`."""
    board = board_for(request, slug)
    phases = workflow_phases(board)
    filter_form = BoardFilterForm(request.GET, phases=phases)
    filter_form.is_valid()
    filters = filter_form.filters()
    board_read = board_view(board, filters, only=[key], cards=False)
    if not board_read.shown:
        return bad_request(f"Board {board.name} has no column {shown(key)}.")
    view = board_read.shown[0]
    lane = request.GET.get("lane", "")
    if lane and lane not in LANE_ORDER:
        return bad_request(f"Unknown swimlane {shown(lane)}; use one of {', '.join(LANE_ORDER)}.")
    band_key = request.GET.get("band", "")
    phase = next((p for p in view.phases if p.key == band_key), None)
    if band_key and phase is None:
        return bad_request(f"Column {view.column.name} shows no phase {shown(band_key)}.")
    after = None
    after_id = request.GET.get("after", "")
    if after_id:
        if not after_id.isdigit() or len(after_id) > 18:
            return bad_request(f"`after` must be a ticket id, not {shown(after_id)}.")
        after = Ticket.objects.filter(board=board, pk=int(after_id)).only("pk", "position").first()
        if after is None:
            return bad_request(f"Ticket #{after_id} is not on this board.")
    cards, has_more = column_cards_after(board, filters, view=view, after=after, lane=lane, phase=phase)
    context = _board_context(request, board, phases, filter_form, board_read)
    _decorate(cards, context["menus"], {phase.pk: phase.name for phase in phases})
    context.update({"view": view, "cards": cards, "has_more": has_more, "lane": lane, "band": phase})
    return render(request, "board/board.html#card-page", context)


def _neighbours(ticket, view, direction, filters):
    """The (previous, next) ids that put `ticket` one place up or down among the cards the user sees.

    The cards it steps over are those of its own band: its phase, and its lane with swimlanes.
    """
    cards = (
        Ticket.objects.filter(board_id=ticket.board_id, phase_id=ticket.phase_id)
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


class _Unmovable(Exception):
    """A move the request itself gets wrong (422): an unknown column or phase, or a phase its column does not show."""


def _target(data, board, phases, columns_by_key, views_by_phase, from_key):
    """The column and phase (None: the column decides) a valid MoveForm asks for."""
    phase = None
    if data["phase"]:
        phase = next((p for p in phases if p.key == data["phase"]), None)
        if phase is None:
            raise _Unmovable(f"Workflow {board.workflow.name} has no phase {data['phase']!r}.")
        showing = views_by_phase.get(phase.pk)
        if showing is None:
            raise _Unmovable(f"No column of board {board.name} shows {phase.name}.")
        if data["column"] and data["column"] != showing.column.key:
            raise _Unmovable(f"{phase.name} is shown in column {showing.column.name}, not {data['column']!r}.")
        return showing, phase
    key = data["column"] or from_key
    target = columns_by_key.get(key)
    if target is None:
        raise _Unmovable(f"Board {board.name} has no column {key!r}.")
    return target, None


@login_required
@require_POST
def ticket_move_view(request, slug, pk):
    """A drop or a choice from a card's menu. htmx gets both columns re-rendered from the database, and the outcome."""
    board = board_for(request, slug)
    ticket = get_object_or_404(Ticket.objects.select_related("phase"), board=board, pk=pk)
    phases = workflow_phases(board)
    # Filters ride in the query string, as on the page the move came from.
    filter_form = BoardFilterForm(request.GET, phases=phases)
    filter_form.is_valid()
    filters = filter_form.filters()
    form = MoveForm(request.POST)
    all_views = board_view(board, filters, cards=False).columns
    columns_by_key = {view.column.key: view for view in all_views}
    views_by_phase = {phase.pk: view for view in all_views for phase in view.phases}
    from_view = views_by_phase.get(ticket.phase_id)
    from_key = from_view.column.key if from_view else None

    status, outcome, refused, target_key = 200, "", None, from_key
    if not form.is_valid():
        status = 422
        outcome = " ".join(str(e) for errors in form.errors.values() for e in errors)
    else:
        data = form.cleaned_data
        previous_id, next_id, direction = data["previous"], data["next"], data["direction"]
        try:
            if direction:
                if from_view is None:
                    raise _Unmovable(f"No column of board {board.name} shows {ticket.phase.name}.")
                target, phase = from_view, None
            else:
                target, phase = _target(data, board, phases, columns_by_key, views_by_phase, from_key)
        except _Unmovable as exc:
            status, outcome = 422, str(exc)
        else:
            target_key = target.column.key
            if direction:
                neighbours = _neighbours(ticket, target, direction, filters)
                if neighbours is None:
                    where = "top" if direction == "up" else "bottom"
                    outcome = f"“{ticket.title}” is already at the {where} of {target.column.name}."
                else:
                    previous_id, next_id = neighbours
            if not outcome:
                try:
                    moved = ticket_move(
                        ticket=ticket,
                        column=target.column,
                        phase=phase,
                        actor=request.user,
                        previous_id=previous_id,
                        next_id=next_id,
                        reason=data["reason"],
                        force=data["force"],
                    )
                except Refused as exc:
                    status, outcome = exc.status, str(exc)
                    refused = {
                        "column": target_key,
                        "phase": phase.key if phase else "",
                        "previous": previous_id or "",
                        "next": next_id or "",
                    }
                except ValidationError as exc:
                    status, outcome = 422, " ".join(exc.messages)
                else:
                    outcome = _moved_message(ticket, moved, target, direction)

    if not request.htmx:
        (messages.success if status == 200 else messages.error)(request, outcome)
        url = reverse("board:detail", args=[board.slug])
        query = filter_query(request.GET)
        return redirect(f"{url}?{query}" if query else url)

    keys = [key for key in dict.fromkeys([from_key, target_key]) if key]
    board_read = board_view(board, filters, only=keys)
    context = _board_context(request, board, phases, filter_form, board_read)
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
