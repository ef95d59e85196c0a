"""The workflow graph pages of a board and of a ticket, their JSON, and one task's JSON for the live page.

The page renders the graph as nested lists (a task above the branches it
spawned) with the filters applied, so it works without scripts;
static/js/graph.js draws the same graph with Cytoscape from the JSON, keeps
it live from the board's websocket (static/js/live.js), and asks for one
task's JSON when an event says too little or the user opens a task.
"""

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET

from board.models import Board, Task, Ticket
from board.selectors import last_event_id
from phases.models import Phase

from ..graph import branch_rows, graph_filtered, task_details, workflow_graph
from ..models import Discovery

# Above this many tasks (after the filters) the page asks to filter first, and draws with Cytoscape's
# viewport optimisations once the user says "show anyway".
LARGE_GRAPH = 800

# One colour per phase, in the workflow's order: the stylesheet's palette, whose colours have a light and a
# dark value (static/js/graph.js reads them from the page). Phases are the nodes' fill; statuses their border,
# shape and label, so the two never share a channel.
PHASE_COLOURS = ["blue", "orange", "teal", "violet", "yellow", "pink", "green", "slate", "indigo", "red"]

# How each status is drawn: the same words and symbols in the legend, the labels and the list. `colour` is the
# stylesheet's colour of the node's border, `tone` the chip the list shows it in.
STATUS_LOOK = {
    Task.Status.PENDING: {
        "symbol": "○",
        "shape": "round-rectangle",
        "colour": "text-muted",
        "line": "dashed",
        "tone": "neutral",
    },
    Task.Status.ASSIGNED: {"symbol": "◔", "shape": "rhomboid", "colour": "info", "line": "dotted", "tone": "info"},
    Task.Status.RUNNING: {"symbol": "▶", "shape": "hexagon", "colour": "warn", "line": "double", "tone": "warn"},
    Task.Status.COMPLETED: {"symbol": "✓", "shape": "rectangle", "colour": "ok", "line": "solid", "tone": "ok"},
    Task.Status.FAILED: {"symbol": "✕", "shape": "octagon", "colour": "danger", "line": "solid", "tone": "danger"},
    Task.Status.CANCELLED: {
        "symbol": "–",
        "shape": "barrel",
        "colour": "text-muted",
        "line": "dashed",
        "tone": "neutral",
    },
}


class GraphFilterForm(forms.Form):
    """Which phases, statuses and discovery types the graph shows; none ticked means all."""

    phase = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple, label="Phase")
    status = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, choices=Task.Status.choices, label="Status"
    )
    type = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, choices=Discovery.Type.choices, label="Discovery type"
    )

    def __init__(self, *args, phases, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["phase"].choices = [(phase.key, phase.name) for phase in phases]

    def filters(self):
        """{"phases", "statuses", "types"} from the valid fields; a field with a bad value is ignored whole."""
        data = self.cleaned_data if self.is_bound and hasattr(self, "cleaned_data") else {}
        return {"phases": data.get("phase", []), "statuses": data.get("status", []), "types": data.get("type", [])}


def _query_with(query, **values):
    """The query string `query` (a QueryDict) with `values` set."""
    query = query.copy()
    for name, value in values.items():
        query[name] = value
    return query.urlencode()


def _board_for(request, slug):
    """The board if the user is a member or staff; 404 otherwise, so that outsiders learn nothing."""
    return get_object_or_404(Board.objects.visible_to(request.user).select_related("workflow"), slug=slug)


def _phases(board):
    phases = list(Phase.objects.filter(workflow_id=board.workflow_id).in_order())
    for index, phase in enumerate(phases):
        phase.colour = PHASE_COLOURS[index % len(PHASE_COLOURS)]
    return phases


def _graph_page(request, board, ticket):
    phases = _phases(board)
    form = GraphFilterForm(request.GET, phases=phases)
    form.is_valid()
    filters = form.filters()
    graph = workflow_graph(ticket or board)
    shown = graph_filtered(graph, **filters)
    if ticket is None:
        page_url = reverse("discoveries:board-graph", args=[board.slug])
        data_url = reverse("discoveries:board-graph-data", args=[board.slug])
    else:
        page_url = reverse("discoveries:ticket-graph", args=[board.slug, ticket.pk])
        data_url = reverse("discoveries:ticket-graph-data", args=[board.slug, ticket.pk])
    statuses = [{"key": value, "name": label, **STATUS_LOOK[value]} for value, label in Task.Status.choices]
    looks = {status["key"]: status for status in statuses}
    type_names = dict(Discovery.Type.choices)
    # The list, like the drawing, asks to filter first above LARGE_GRAPH: 2,000 rows of HTML make a slow page.
    list_too_long = len(shown["nodes"]) > LARGE_GRAPH and request.GET.get("list") != "all"
    tickets = [] if list_too_long else branch_rows(shown)
    for _, _, rows in tickets:
        for row in rows:
            row["look"] = looks[row["node"]["status"]]
            if row["branch"]:
                row["branch_name"] = type_names.get(row["branch"]["discovery_type"], row["branch"]["discovery_type"])
    context = {
        "board": board,
        "ticket": ticket,
        "form": form,
        "filters_active": any(filters.values()),
        "phases": phases,
        "statuses": statuses,
        "tickets": tickets,
        "total": len(graph["nodes"]),
        "shown": len(shown["nodes"]),
        "branches_shown": sum(1 for edge in shown["edges"] if edge["kind"] == "discovery"),
        "page_url": page_url,
        "list_too_long": list_too_long,
        "large_graph": LARGE_GRAPH,
        "whole_list_query": _query_with(request.GET, list="all"),
        # Links from the list are built from this prefix, as the board builds its card links.
        "tickets_url": reverse("board:ticket-create", args=[board.slug]).removesuffix("new/"),
        "config": {
            "dataUrl": data_url,
            "taskUrl": reverse("discoveries:graph-task", args=[board.slug, 0]).removesuffix("0/"),
            "ticketsUrl": reverse("board:ticket-create", args=[board.slug]).removesuffix("new/"),
            "socketPath": f"/ws/boards/{board.slug}/",
            "ticket": ticket.pk if ticket else None,
            "largeGraph": LARGE_GRAPH,
            "phases": [{"key": phase.key, "name": phase.name, "colour": phase.colour} for phase in phases],
            "statuses": statuses,
            "types": type_names,
        },
    }
    template = "discoveries/graph.html#graph-list" if request.htmx and not request.htmx.boosted else None
    response = render(request, template or "discoveries/graph.html", context)
    patch_vary_headers(response, ("HX-Request",))
    return response


@login_required
@require_GET
def board_graph(request, slug):
    """The workflow graph of every ticket on the board."""
    return _graph_page(request, _board_for(request, slug), None)


@login_required
@require_GET
def ticket_graph(request, slug, pk):
    """The workflow graph of one ticket."""
    board = _board_for(request, slug)
    return _graph_page(request, board, get_object_or_404(Ticket, board=board, pk=pk))


def _graph_json(board, of):
    # Read before the graph: whatever happens after this position, the page replays.
    seen = last_event_id(board.pk)
    return JsonResponse({"last_event_id": seen, **workflow_graph(of)})


@login_required
@require_GET
def board_graph_data(request, slug):
    """The board's whole graph as JSON, with the last event id it reflects (the page filters it itself)."""
    board = _board_for(request, slug)
    return _graph_json(board, board)


@login_required
@require_GET
def ticket_graph_data(request, slug, pk):
    """One ticket's graph as JSON, with the last event id it reflects."""
    board = _board_for(request, slug)
    return _graph_json(board, get_object_or_404(Ticket.objects.only("pk", "board_id"), board=board, pk=pk))


@login_required
@require_GET
def graph_task(request, slug, pk):
    """One task of the board as JSON: its node, its edges and what the side panel shows."""
    board = _board_for(request, slug)
    # Read before the graph: whatever happens after this position, the page replays.
    seen = last_event_id(board.pk)
    details = task_details(board, pk)
    if details is None:
        raise Http404(f"Board {board.name} has no task {pk}.")
    return JsonResponse({"last_event_id": seen, **details})
