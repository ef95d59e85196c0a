"""Benchmarks of the orchestrator: assignments per second, three orchestrators at once, and one full pass.

    python -m bench.orchestrator                                 # SQLite, in a temporary file
    DATABASE_URL=postgres://…/omoi python -m bench.orchestrator  # PostgreSQL, in a new omoi_bench database

- Assign: 10,000 pending tasks and 100 idle agents; `assign_tasks` until every
  agent has a task, timed over several rounds (the tasks are handed back
  between rounds). Assignments per second, median of the rounds.
- Three at once (PostgreSQL): three processes run `assign_tasks` over the same
  queue until no idle agent is left; zero duplicates is a requirement: no task
  assigned twice, no agent holding two.
- Full pass: every step once over a board of 1,000 and of 10,000 tickets with
  work for every duty; time and queries per step. A step's query count must
  not grow with the number of tickets (it works through a fixed batch).

The database is always a new one, dropped at the end (see bench.databases).
Prints a table, writes bench/results/orchestrator-<database>.json, exits 1
when a requirement fails.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .board import configure_environment
from .databases import on_new_database

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PENDING, AGENTS = 10_000, 100
LATE, STUCK = 400, 400


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.orchestrator", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed assignment rounds (default 5)")
    parser.add_argument("--sizes", default="1000,10000", help="tickets on the board of the full pass")
    parser.add_argument("--skip-unreachable", action="store_true", help="exit 0 when PostgreSQL does not answer")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one of the three processes
    args = parser.parse_args(argv)
    args.sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker()
    configure_environment()
    return on_new_database(lambda where, env: run(args, where), skip_unreachable=args.skip_unreachable)


# Seeding, in bulk: the services would take minutes for 10,000 tickets, and what is measured is the orchestrator.


def seed_board(slug, tickets_by_phase, *, agents=0, now):
    """A board of the default workflow with tickets per phase key; returns (board, phases by key, agents)."""
    from django.contrib.auth import get_user_model

    from board.models import Agent, Board, Ticket
    from board.services import token_hash
    from phases.defaults import DEFAULT_WORKFLOW_SLUG
    from phases.models import Workflow

    workflow = Workflow.objects.get(slug=DEFAULT_WORKFLOW_SLUG)
    board = Board.objects.create(name=slug, slug=slug, workflow=workflow)
    phases = {phase.key: phase for phase in workflow.phases.all()}
    rows = []
    for key, count in tickets_by_phase.items():
        rows += [
            Ticket(board=board, title=f"{key} {n}", phase=phases[key], position=(n + 1) * 1024) for n in range(count)
        ]
    Ticket.objects.bulk_create(rows, batch_size=2000)
    made = Agent.objects.bulk_create(
        [
            Agent(
                name=f"{slug}-agent-{n}",
                token_hash=token_hash(f"{slug}-{n}"),
                token_prefix="omoi_b",
                status=Agent.Status.IDLE,
                last_heartbeat=now,
                capabilities=[],
            )
            for n in range(agents)
        ]
    )
    Agent.boards.through.objects.bulk_create([Agent.boards.through(agent=a, board=board) for a in made])
    get_user_model()  # the default workflow needs no user
    return board, phases, made


def seed_tasks(tickets, phase, *, status, now, **fields):
    from board.models import Task
    from board.services.tasks import SCORE_EPOCH, task_score

    score = task_score(base=2.0, created_at=now, now=SCORE_EPOCH)
    Task.objects.bulk_create(
        [
            Task(ticket=ticket, phase=phase, title=f"Work on {ticket.title}", status=status, score=score, **fields)
            for ticket in tickets
        ],
        batch_size=2000,
    )


def analyze():
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


# Assign


def measure_assign(rounds):
    from django.utils import timezone

    from board.models import Agent, Task
    from board.orchestration.queue import assign_tasks

    now = timezone.now()
    board, phases, agents = seed_board("assign", {"PHASE_IMPLEMENTATION": PENDING}, agents=AGENTS, now=now)
    seed_tasks(board.tickets.all(), phases["PHASE_IMPLEMENTATION"], status=Task.Status.PENDING, now=now)
    analyze()
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        while assign_tasks(now=timezone.now()):
            pass
        took = time.perf_counter() - started
        held = Task.objects.in_hand().filter(ticket__board=board).count()
        rates.append(held / took)
        # Hand the tasks back for the next round.
        Task.objects.in_hand().update(status=Task.Status.PENDING, assigned_agent=None, assigned_at=None)
        Agent.objects.filter(pk__in=[a.pk for a in agents]).update(
            status=Agent.Status.IDLE, last_heartbeat=timezone.now()
        )
    return {
        "pending": PENDING,
        "agents": AGENTS,
        "rounds": rounds,
        "assignments_per_second": round(statistics.median(rates), 1),
        "each_round": [round(rate, 1) for rate in rates],
    }


def worker():
    """One of the three processes: assign until no idle agent is left (another process may take the last ones)."""
    import django

    django.setup()
    from django.utils import timezone

    from board.models import Agent, Task
    from board.orchestration.queue import assign_tasks

    holding = Task.objects.in_hand().values("assigned_agent")
    waiting = Agent.objects.filter(status=Agent.Status.IDLE).exclude(pk__in=holding)
    waiting.exists()  # connected before the clock starts
    started = time.perf_counter()
    while waiting.exists():
        assign_tasks(now=timezone.now(), batch=10)
    # The time spent assigning, without the process's start-up; the parent reads it.
    print(f"{started} {time.perf_counter()}")
    return 0


def measure_three_at_once():
    from django.db import connections
    from django.db.models import Count
    from django.utils import timezone

    from board.models import Agent, Event, Task

    Task.objects.in_hand().update(status=Task.Status.PENDING, assigned_agent=None, assigned_at=None)
    Agent.objects.update(status=Agent.Status.IDLE, last_heartbeat=timezone.now())
    first_event = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
    connections.close_all()
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.orchestrator", "--worker"],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=600)[0] for process in workers]
    statuses = [process.returncode for process in workers]
    # perf_counter is the machine's monotonic clock, shared by the processes: first start to last end.
    spans = [tuple(map(float, output.split()[-2:])) for output in outputs if output.split()]
    took = max(end for _, end in spans) - min(start for start, _ in spans) if spans else float("nan")
    assigned = Event.objects.filter(type="task.assigned", id__gt=first_event)
    events = assigned.count()
    distinct_tasks = assigned.values("entity_id").distinct().count()
    doubly_held = Task.objects.in_hand().values("assigned_agent").annotate(n=Count("pk")).filter(n__gt=1).count()
    held = Task.objects.in_hand().count()
    return {
        "processes": 3,
        "assigned": held,
        "seconds": round(took, 2),
        "assignments_per_second": round(held / took, 1),
        "duplicate_assignments": events - distinct_tasks,
        "agents_holding_two": doubly_held,
        "worker_statuses": statuses,
    }


# Full pass


def measure_full_pass(size):
    from django.db import connection
    from django.utils import timezone

    from board.models import Agent, Task, Ticket
    from omoi_site.orchestrator import STEPS

    now = timezone.now()
    # The same work for the time-outs and the rescue at every size (twice a batch of late tasks, of stuck
    # tickets), the rest in proportion: what changes with the size is how many tickets the steps must pass over.
    counts = {"PHASE_DESIGN": LATE, "PHASE_BACKLOG": STUCK + size // 10}
    counts.update(PHASE_IMPLEMENTATION=size * 4 // 10, PHASE_TESTING=size * 2 // 10)
    counts["PHASE_DONE"] = max(0, size - sum(counts.values()))
    board, phases, agents = seed_board(f"pass-{size}", counts, agents=AGENTS, now=now)
    tickets = board.tickets.all()
    # Testing: pending work; Design: running tasks past their time; a tenth of Backlog: idle for hours.
    seed_tasks(tickets.filter(phase__key="PHASE_TESTING"), phases["PHASE_TESTING"], status="pending", now=now)
    late = list(tickets.filter(phase__key="PHASE_DESIGN"))
    holders = Agent.objects.bulk_create(
        [
            Agent(name=f"{board.slug}-holder-{n}", token_hash=f"h{size}-{n}", token_prefix="omoi_h")
            for n in range(len(late))
        ]
    )
    Agent.boards.through.objects.bulk_create([Agent.boards.through(agent=a, board=board) for a in holders])
    Task.objects.bulk_create(
        [
            Task(
                ticket=ticket,
                phase=phases["PHASE_DESIGN"],
                title="Write the design",
                status=Task.Status.RUNNING,
                assigned_agent=holder,
                assigned_at=now - timedelta(hours=3),
                started_at=now - timedelta(hours=3),
                timeout_seconds=60,
                attempt=1,
            )
            for ticket, holder in zip(late, holders, strict=True)
        ],
        batch_size=2000,
    )
    Agent.objects.filter(pk__in=[h.pk for h in holders]).update(status="busy", last_heartbeat=now)
    stuck = list(tickets.filter(phase__key="PHASE_BACKLOG")[:STUCK])
    seed_tasks(stuck, phases["PHASE_BACKLOG"], status="failed", now=now)
    long_ago = now - timedelta(hours=5)
    Ticket.objects.filter(pk__in=[t.pk for t in stuck]).update(updated_at=long_ago)
    Task.objects.filter(ticket__in=stuck).update(updated_at=long_ago)
    analyze()

    figures = {}
    for step in STEPS:
        queries = []

        def count(execute, sql, params, many, context, queries=queries):
            queries.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count):
            started = time.perf_counter()
            more = step.run(now=timezone.now(), batch=None)
            took = time.perf_counter() - started
        figures[step.name] = {"ms": round(took * 1000, 1), "queries": len(queries), "more": bool(more)}
    return {"tickets": size, "steps": figures, "total_ms": round(sum(f["ms"] for f in figures.values()), 1)}


def run(args, where):
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections

    print(f"Migrating a new {connection.display_name} database ({where})…", flush=True)
    call_command("migrate", interactive=False, verbosity=0)
    results = {"database": {"vendor": connection.vendor, "where": where}}
    try:
        print(f"Assign: {PENDING:,} pending tasks, {AGENTS} idle agents, {args.rounds} rounds…", flush=True)
        results["assign"] = measure_assign(args.rounds)
        if connection.vendor == "postgresql":
            print("Three orchestrators at once…", flush=True)
            results["three_at_once"] = measure_three_at_once()
        results["full_pass"] = {}
        for size in args.sizes:
            print(f"Full pass over {size:,} tickets…", flush=True)
            results["full_pass"][size] = measure_full_pass(size)
    finally:
        connections.close_all()
    results["when"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["load_average"] = [round(load, 2) for load in os.getloadavg()]
    results["failures"] = check(results)
    print(report(results))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"orchestrator-{connection.vendor}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Written to {path.relative_to(ROOT)}.")
    return 1 if results["failures"] else 0


def check(results):
    failures = []
    three = results.get("three_at_once")
    if three and (three["duplicate_assignments"] or three["agents_holding_two"] or any(three["worker_statuses"])):
        failures.append(f"three orchestrators at once: {three}")
    if three and three["assigned"] != AGENTS:
        failures.append(f"three orchestrators assigned {three['assigned']} tasks to {AGENTS} agents")
    passes = results["full_pass"]
    if len(passes) > 1:
        small, large = passes[min(passes)], passes[max(passes)]
        for name, figure in large["steps"].items():
            # A fixed batch: ten times the tickets may not mean more queries (a little slack for a batch's mix).
            if figure["queries"] > small["steps"][name]["queries"] * 1.1 + 5:
                failures.append(
                    f"step {name}: {figure['queries']} queries at {large['tickets']:,} tickets, "
                    f"{small['steps'][name]['queries']} at {small['tickets']:,}"
                )
    return failures


def report(results):
    vendor = results["database"]["vendor"]
    assign = results["assign"]
    lines = [
        "",
        f"== Orchestrator benchmark: {vendor} ({results['database']['where']}) ==",
        f"Assign: {assign['assignments_per_second']} assignments/s (median of {assign['rounds']} rounds: "
        f"{', '.join(map(str, assign['each_round']))}) with {assign['pending']:,} pending tasks, {assign['agents']} agents",
    ]
    three = results.get("three_at_once")
    if three:
        lines.append(
            f"Three orchestrators at once: {three['assigned']} assigned in {three['seconds']} s "
            f"({three['assignments_per_second']}/s); duplicates {three['duplicate_assignments']}, "
            f"agents holding two {three['agents_holding_two']}"
        )
    else:
        lines.append("Three orchestrators at once: PostgreSQL only (SQLite is for one process)")
    lines += ["", f"Full pass, each step once: {'step':<12}" + "".join(f"{size:>18,}" for size in results["full_pass"])]
    names = next(iter(results["full_pass"].values()))["steps"]
    for name in names:
        cells = "".join(
            f"{data['steps'][name]['ms']:>9.1f} ms {data['steps'][name]['queries']:>4} q"
            for data in results["full_pass"].values()
        )
        lines.append(f"{'':<26}{name:<12}{cells}")
    totals = "".join(f"{data['total_ms']:>12.1f} ms   " for data in results["full_pass"].values())
    lines.append(f"{'':<26}{'total':<12}{totals}")
    lines.append("")
    lines += [f"FAIL: {failure}" for failure in results["failures"]] or ["OK: no duplicates; query counts do not grow."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
