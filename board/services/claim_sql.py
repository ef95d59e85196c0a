"""The claim's statement, written in SQL: the queue's rule for a match, as one UPDATE that takes the best task.

Who may take which task is defined once, as a QuerySet
(`Task.objects.ready(now).matching(agent)`, ordered by `QUEUE_ORDER`); the
orchestrator's views of the queue use it as it is. The claim runs on every
`tasks/next`, and building and compiling that QuerySet cost more than
running it, so the claim says the same rule here in SQL, built from a few
fixed fragments. `tests/test_claim_statement.py` checks on both databases
that the two pick the same task in every case they distinguish: phase,
capabilities, boards, dependencies, back-off, score ties, a busy or revoked
agent, and a queue longer than its head.
"""

import json

from django.db import connection

from ..models import CapabilitiesWithin, DependencyIds, Task

RETURNED = [field.column for field in Task._meta.concrete_fields]


def _queue_order(alias):
    """`QUEUE_ORDER` (best score, then oldest, then lowest id) in SQL, for the task table named `alias`."""
    return f'{alias}."score" DESC, {alias}."created_at" ASC, {alias}."id" ASC'


def queue_head(size):
    """The ids of the first `size` pending tasks in the queue's order, read from the task table alone."""
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT "id" FROM "board_task" q WHERE q."status" = %s ORDER BY {_queue_order("q")} LIMIT %s',
            [Task.Status.PENDING, size],
        )
        return [row[0] for row in cursor.fetchall()]


def claim_statement(agent, *, board, now, idle_only, heads):
    """The UPDATE … RETURNING that gives `agent` the best ready task it matches; (sql, params).

    `heads` are the id lists to look among in turn (the first that yields a
    task wins), None standing for the whole queue; see `_task_take_best`.
    The task is taken only while it is still pending, the agent holds
    nothing and is not revoked (and, with `idle_only`, is idle). The row
    comes back with every column of the task, then its phase's key, its
    board's id and slug, and its dependencies' ids (JSON text).
    """
    vendor = connection.vendor
    at = connection.ops.adapt_datetimefield_value(now)
    picks, pick_params = [], []
    for head in heads:
        sql, params = _best(agent, board=board, at=at, head=head, vendor=vendor)
        picks.append(f"({sql})")
        pick_params.extend(params)
    best = f"COALESCE({', '.join(picks)}, NULL)" if len(picks) > 1 else picks[0]
    live = "a.id = %s AND a.revoked_at IS NULL" + (" AND a.status = %s" if idle_only else "")
    live_params = [agent.pk, *([agent.Status.IDLE] if idle_only else [])]
    returning = ", ".join(f'"{column}"' for column in RETURNED)
    taken_id = '"board_task"."id"'
    sql = (
        'UPDATE "board_task" SET "status" = %s, "assigned_agent_id" = %s, "assigned_at" = %s, "started_at" = NULL, '
        '"attempt" = "board_task"."attempt" + 1, "updated_at" = %s '
        f'WHERE "board_task"."id" = {best} AND "board_task"."status" = %s '
        'AND NOT EXISTS (SELECT 1 FROM "board_task" h WHERE h."assigned_agent_id" = %s AND h."status" IN (%s, %s)) '
        f'AND EXISTS (SELECT 1 FROM "board_agent" a WHERE {live}) '
        f"RETURNING {returning}, "
        '(SELECT p."key" FROM "phases_phase" p WHERE p."id" = "board_task"."phase_id") AS "phase_key", '
        '(SELECT k."board_id" FROM "board_ticket" k WHERE k."id" = "board_task"."ticket_id") AS "board_id", '
        '(SELECT b."slug" FROM "board_ticket" k JOIN "board_board" b ON b."id" = k."board_id" '
        'WHERE k."id" = "board_task"."ticket_id") AS "board_slug", '
        f'{DependencyIds.sql(vendor, taken_id)} AS "dependency_ids"'
    )
    params = [
        Task.Status.ASSIGNED,
        agent.pk,
        at,
        at,
        *pick_params,
        Task.Status.PENDING,
        agent.pk,
        Task.Status.ASSIGNED,
        Task.Status.RUNNING,
        *live_params,
    ]
    return sql, params


def _best(agent, *, board, at, head, vendor):
    """The id of the first ready task `agent` matches, in the queue's order, among `head` (None: all)."""
    conditions = [
        't."status" = %s',
        '(t."next_attempt_at" IS NULL OR t."next_attempt_at" <= %s)',
        'NOT EXISTS (SELECT 1 FROM "board_task_dependencies" d JOIN "board_task" dt ON dt."id" = d."to_task_id" '
        'WHERE d."from_task_id" = t."id" AND dt."status" <> %s)',
        'k."board_id" IN (SELECT ab."board_id" FROM "board_agent_boards" ab WHERE ab."agent_id" = %s)',
        CapabilitiesWithin.sql(vendor, 't."required_capabilities"', "%s"),
    ]
    params = [Task.Status.PENDING, at, Task.Status.COMPLETED, agent.pk, json.dumps(list(agent.capabilities or []))]
    if agent.phase_id:
        conditions.append('t."phase_id" = %s')
        params.append(agent.phase_id)
    if board is not None:
        conditions.append('k."board_id" = %s')
        params.append(board.pk)
    if head is not None:
        conditions.append('t."id" = ANY(%s)')
        params.append(list(head))
    # Where rows lock, concurrent claims skip each other's candidates instead of queueing behind them.
    lock = " FOR UPDATE OF t SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    sql = (
        'SELECT t."id" FROM "board_task" t JOIN "board_ticket" k ON k."id" = t."ticket_id" '
        f"WHERE {' AND '.join(conditions)} "
        f"ORDER BY {_queue_order('t')} LIMIT 1{lock}"
    )
    return sql, params
