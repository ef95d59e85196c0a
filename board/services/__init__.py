"""Changes to boards, tickets, agents and tasks: each checks its rules, writes its rows and its events in one transaction.

The modules hold one subject each; this package re-exports their public names,
so callers import from `board.services`.
"""

from ..errors import TaskStateError, TransitionRefused
from .agents import (
    TOKEN_PREFIX,
    agent_authenticate,
    agent_create,
    agent_heartbeat,
    agent_mark_offline,
    agent_revoke,
    agent_silence_limit,
    agent_token_rotate,
    agent_update,
    agents_silent,
    token_hash,
)
from .boards import board_create, board_may_manage, board_member_add, board_member_remove, board_member_update
from .gates import ticket_advance, ticket_phase_enter
from .idempotency import (
    IdempotencyKeyReused,
    idempotency_key_problem,
    idempotency_prune,
    idempotent_call,
)
from .ordering import POSITION_GAP
from .remap import phase_remap, tickets_remap_phase
from .results import ticket_result_apply, ticket_result_review, ticket_result_submit
from .tasks import (
    PRIORITY_SCORE,
    RETRY_JITTER,
    retry_delay,
    task_assign,
    task_claim,
    task_complete,
    task_create,
    task_fail,
    task_release,
    task_retry_delay,
    task_score,
    task_score_now,
    task_start,
    task_time_out,
)
from .tickets import ticket_comment, ticket_create, ticket_move, ticket_transition, ticket_update

__all__ = [
    "POSITION_GAP",
    "PRIORITY_SCORE",
    "RETRY_JITTER",
    "TOKEN_PREFIX",
    "IdempotencyKeyReused",
    "TaskStateError",
    "TransitionRefused",
    "agent_authenticate",
    "agent_create",
    "agent_heartbeat",
    "agent_mark_offline",
    "agent_revoke",
    "agent_silence_limit",
    "agent_token_rotate",
    "agent_update",
    "agents_silent",
    "board_create",
    "board_may_manage",
    "board_member_add",
    "board_member_remove",
    "board_member_update",
    "idempotency_key_problem",
    "idempotency_prune",
    "idempotent_call",
    "phase_remap",
    "retry_delay",
    "task_assign",
    "task_claim",
    "task_complete",
    "task_create",
    "task_fail",
    "task_release",
    "task_retry_delay",
    "task_score",
    "task_score_now",
    "task_start",
    "task_time_out",
    "ticket_advance",
    "ticket_comment",
    "ticket_create",
    "ticket_move",
    "ticket_phase_enter",
    "ticket_result_apply",
    "ticket_result_review",
    "ticket_result_submit",
    "ticket_transition",
    "ticket_update",
    "tickets_remap_phase",
    "token_hash",
]
