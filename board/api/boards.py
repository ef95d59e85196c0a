"""Board endpoints: the agent's boards, and one board's columns with counts, limits and first tickets."""

from django.db.models import Count
from ninja import Router

from ..models import Board
from ..selectors import BoardFilters, agent_board, board_columns, last_event_id
from .schemas import BoardOut

router = Router(tags=["boards"])


@router.get("", summary="The agent's boards")
def list_boards(request):
    rows = Board.objects.filter(agents=request.auth).annotate(tickets_count=Count("tickets")).order_by("name")
    return [{"slug": b.slug, "name": b.name, "tickets": b.tickets_count} for b in rows]


@router.get("/{slug}", response=BoardOut, summary="The board: columns, counts, limits and the first tickets of each")
def get_board(request, slug: str):
    board = agent_board(request.auth, slug)
    last = last_event_id(board.pk)
    views = board_columns(board, BoardFilters())
    phase_keys = {phase.pk: phase.key for view in views for phase in view.phases}
    return {
        "slug": board.slug,
        "name": board.name,
        "workflow": board.workflow.slug,
        "last_event_id": last,
        "columns": [
            {
                "key": view.column.key,
                "name": view.column.name,
                "phases": [phase.key for phase in view.phases],
                "count": view.count,
                "wip_limit": view.limit,
                "wip_policy": view.column.wip_policy,
                "wip_state": view.wip_state,
                "tickets": [
                    {
                        "id": card.pk,
                        "title": card.title,
                        "priority": card.priority,
                        "phase": phase_keys[card.phase_id],
                        "is_blocked": card.is_blocked,
                        "blocked_reason": card.blocked_reason,
                        "position": card.position,
                        "version": card.version,
                        "tasks_done": card.tasks_done,
                        "tasks_total": card.tasks_total,
                        "open_discoveries": card.open_discoveries,
                    }
                    for card in view.cells[0].cards
                ],
                "has_more": view.cells[0].has_more,
            }
            for view in views
        ],
    }
