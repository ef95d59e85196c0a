"""Reading the board: page queries in a fixed number of queries, and lookups scoped to an agent's boards."""

from .agents import AgentRow, board_agents
from .columns import (
    LANE_ORDER,
    LANE_PAGE_SIZE,
    PAGE_SIZE,
    BoardFilters,
    BoardView,
    ColumnView,
    MoveChoices,
    board_columns,
    board_view,
    column_cards_after,
    move_choices,
)
from .events import last_event_id
from .gates import Gate, OutputCheck, output_check, ticket_gate, ticket_gates, with_gate_facts
from .lookups import agent_board, agent_phase, agent_task, agent_tasks, agent_ticket

__all__ = [
    "LANE_ORDER",
    "LANE_PAGE_SIZE",
    "PAGE_SIZE",
    "AgentRow",
    "BoardFilters",
    "BoardView",
    "ColumnView",
    "MoveChoices",
    "Gate",
    "OutputCheck",
    "agent_board",
    "agent_phase",
    "agent_task",
    "agent_tasks",
    "agent_ticket",
    "board_agents",
    "board_columns",
    "board_view",
    "last_event_id",
    "column_cards_after",
    "move_choices",
    "output_check",
    "ticket_gate",
    "ticket_gates",
    "with_gate_facts",
]
