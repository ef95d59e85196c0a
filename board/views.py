"""Board pages: the board list, the board with its columns, moves, and the ticket pages.

Views parse input, call a service and render; the rules live in
`services.py`. Fragments for htmx are named partials of the page templates.
"""

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Max
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from phases.models import Phase

from .errors import Refused
from .events import EventType
from .forms import BoardFilterForm, MoveForm, ResultReviewForm, TicketCreateForm, TicketEditForm
from .models import Agent, Board, Event, PhaseHistory, Ticket, TicketResult
from .selectors import (
    LANE_ORDER,
    board_agents,
    board_columns,
    column_cards_after,
    move_options,
    ticket_gate,
    with_gate_facts,
)
from .services import agent_revoke, agent_silence_limit, ticket_move, ticket_result_review

FILTER_FIELDS = ("priority", "phase", "q", "blocked", "lanes")


def _board_for(request, slug):
    """The board if the user is a member or staff; 404 otherwise, so that outsiders learn nothing."""
    return get_object_or_404(Board.objects.visible_to(request.user).select_related("workflow"), slug=slug)


def _phases(board):
    return list(Phase.objects.filter(workflow_id=board.workflow_id).with_transitions().in_order())


def _filter_query(data):
    """The filter part of a query string, to keep filters on links, fragments and redirects."""
    return urlencode([(name, value) for name in FILTER_FIELDS for value in data.getlist(name) if value])


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
        "filter_query": _filter_query(filter_form.data),
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


def _bad_request(message):
    """A refusal of a fragment request, as plain text: what the user sent is never read as markup."""
    return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")


def _shown(value):
    """A value the user sent, quoted and cut short for a message."""
    return repr(value if len(value) <= 64 else value[:63] + "…")


def _vary_on_htmx(response):
    patch_vary_headers(response, ("HX-Request",))
    return response


@login_required
@require_GET
def board_list(request):
    boards = Board.objects.visible_to(request.user).annotate(ticket_count=Count("tickets")).order_by("name")
    return render(request, "board/board_list.html", {"boards": boards})


@login_required
@require_GET
def board_detail(request, slug):
    board = _board_for(request, slug)
    # Read before the columns: whatever happens after this id, the page replays.
    last_event_id = Event.objects.filter(board=board).aggregate(last=Max("id"))["last"] or 0
    phases = _phases(board)
    filter_form = BoardFilterForm(request.GET, phases=phases)
    filter_form.is_valid()
    views = board_columns(board, filter_form.filters())
    context = _board_context(request, board, phases, filter_form, views)
    context["last_event_id"] = last_event_id
    context["event_types"] = {event_type.name: event_type.value for event_type in EventType}
    template = "board/board.html#board-body" if request.htmx and not request.htmx.boosted else "board/board.html"
    return _vary_on_htmx(render(request, template, context))


@login_required
@require_GET
def board_columns_fragment(request, slug):
    """Fresh copies of some columns (`?column=key`, repeated), swapped in out of band by the live board."""
    board = _board_for(request, slug)
    keys = request.GET.getlist("column")[:50]
    phases = _phases(board)
    filter_form = BoardFilterForm(request.GET, phases=phases)
    filter_form.is_valid()
    views = board_columns(board, filter_form.filters(), only=keys)
    context = _board_context(request, board, phases, filter_form, views)
    return render(request, "board/board.html#columns-oob", context)


@login_required
@require_GET
def column_more(request, slug, key):
    """The next page of cards of one column (or one swimlane of it), after the card `?after=`."""
    board = _board_for(request, slug)
    phases = _phases(board)
    filter_form = BoardFilterForm(request.GET, phases=phases)
    filter_form.is_valid()
    filters = filter_form.filters()
    views = board_columns(board, filters, only=[key])
    if not views:
        return _bad_request(f"Board {board.name} has no column {_shown(key)}.")
    view = views[0]
    lane = request.GET.get("lane", "")
    if lane and lane not in LANE_ORDER:
        return _bad_request(f"Unknown swimlane {_shown(lane)}; use one of {', '.join(LANE_ORDER)}.")
    after = None
    after_id = request.GET.get("after", "")
    if after_id:
        if not after_id.isdigit() or len(after_id) > 18:
            return _bad_request(f"`after` must be a ticket id, not {_shown(after_id)}.")
        after = Ticket.objects.filter(board=board, pk=int(after_id)).only("pk", "position").first()
        if after is None:
            return _bad_request(f"Ticket #{after_id} is not on this board.")
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
    board = _board_for(request, slug)
    ticket = get_object_or_404(Ticket.objects.select_related("phase"), board=board, pk=pk)
    phases = _phases(board)
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
        query = _filter_query(request.GET)
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


@login_required
@require_GET
def ticket_detail(request, slug, pk):
    board = _board_for(request, slug)
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
    board = _board_for(request, slug)
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
    board = _board_for(request, slug)
    form = TicketCreateForm(request.POST or None, board=board, initial={"priority": "MEDIUM"})
    form.actor = request.user
    if request.method == "POST" and form.is_valid():
        messages.success(request, f"Created “{form.instance.title}”.")
        return redirect("board:ticket", board.slug, form.instance.pk)
    return render(request, "board/ticket_form.html", {"board": board, "form": form}, status=422 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def ticket_edit_view(request, slug, pk):
    board = _board_for(request, slug)
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


@login_required
@require_GET
def agents_view(request, slug):
    """The board's agents: what each is, holds and has done; staff may revoke one. htmx gets the list alone."""
    board = _board_for(request, slug)
    # Read before the list: whatever happens after this id, the page's live connection replays.
    last_event_id = Event.objects.filter(board=board).aggregate(last=Max("id"))["last"] or 0
    now = timezone.now()
    context = {
        "board": board,
        "rows": board_agents(board, now=now, silence_limit=agent_silence_limit()),
        "now": now,
        "heartbeat_seconds": int(settings.OMOI_HEARTBEAT_INTERVAL.total_seconds()),
        "may_revoke": request.user.is_staff,
        "last_event_id": last_event_id,
        "tickets_url": reverse("board:ticket-create", args=[board.slug]).removesuffix("new/"),
    }
    template = "board/agents.html#agent-list" if request.htmx and not request.htmx.boosted else "board/agents.html"
    return _vary_on_htmx(render(request, template, context))


@login_required
@require_POST
def agent_revoke_view(request, slug, pk):
    """Staff revoke an agent's token from the agents page; it stops working on every board at once."""
    board = _board_for(request, slug)
    agent = get_object_or_404(Agent, boards=board, pk=pk)
    if not request.user.is_staff:
        raise PermissionDenied("Only staff may revoke an agent.")
    if agent.is_revoked:
        messages.error(request, f"Agent {agent.name} was already revoked.")
    else:
        agent_revoke(agent=agent, actor=request.user)
        messages.success(
            request, f"Agent {agent.name} is revoked: its token no longer works, and its tasks went back to the queue."
        )
    return redirect(f"{reverse('board:agents', args=[board.slug])}#agent-{agent.pk}")
