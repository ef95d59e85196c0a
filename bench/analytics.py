"""Benchmarks of the analytics page and the discoveries analytics JSON, at 10,000 tickets with 100,000 history rows.

    python -m bench.analytics                                 # SQLite, in a temporary file
    DATABASE_URL=postgres://…/omoi python -m bench.analytics  # PostgreSQL, in a new omoi_bench database

A board of the default workflow is seeded in bulk: each ticket walks from
Backlog towards Done over the last 120 days, with rework and stays in Blocked
(`--rows` history rows in all, as many per ticket), and has tasks, some of
them with discoveries branching up to several levels deep. A second board,
a hundredth the size, checks that the query counts do not depend on the
history's size. Times are server time through Django's test client (the
middleware, the view and the template in this process, no network), median
and p90 of `--runs` requests after `--warmup`. Prints a table and one line per
figure, writes bench/results/analytics-<database>.json, and exits 1 when a
query count depends on the size or changes between runs.

The database is always a new one, dropped at the end (see bench.databases).
"""

import argparse
import json
import random
import statistics
import sys
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from .board import configure_environment
from .databases import database_version, on_new_database
from .facts import machine_facts

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PATH = [
    "PHASE_BACKLOG",
    "PHASE_REQUIREMENTS",
    "PHASE_DESIGN",
    "PHASE_IMPLEMENTATION",
    "PHASE_TESTING",
    "PHASE_DEPLOYMENT",
    "PHASE_DONE",
]
HISTORY_DAYS = 120
CASES = {"page": "analytics page, 30 days", "page_90": "analytics page, ?days=90", "json": "GET discoveries/analytics"}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.analytics", description=__doc__.split("\n")[0])
    parser.add_argument("--tickets", type=int, default=10_000, help="tickets on the large board (default 10000)")
    parser.add_argument("--rows", type=int, default=100_000, help="their history rows in all (default 100000)")
    parser.add_argument("--runs", type=int, default=10, help="timed requests of each case (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests before each series (default 2)")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the generated history")
    parser.add_argument("--skip-unreachable", action="store_true", help="exit 0 when PostgreSQL does not answer")
    args = parser.parse_args(argv)
    if args.runs < 2 or args.warmup < 1 or args.tickets < 100 or args.rows < args.tickets:
        parser.error("--runs needs at least 2, --warmup 1, --tickets 100, and --rows at least one per ticket")
    return args


def main(argv=None):
    args = parse_args(argv)
    configure_environment()
    return on_new_database(lambda where, env: run(args, where), skip_unreachable=args.skip_unreachable)


# Seeding, in bulk: the services would take many minutes for 100,000 moves, and what is measured is the reading.


def walk(rng, length, finish):
    """`length` phase keys from Backlog: forward, with rework (Testing back to Implementation) and stays in Blocked.

    A finishing walk ends in Done; the others stop on the way.
    """
    path = list(PATH) if finish else PATH[: rng.randint(1, len(PATH) - 1)]
    path = path[:length]
    while len(path) < length:
        # Detours go anywhere after the creation, never after Done.
        at = rng.randint(1, len(path) - 1 if path[-1] == "PHASE_DONE" else len(path))
        before = path[at - 1]
        if length - len(path) >= 2 and before != "PHASE_BLOCKED":
            if before in ("PHASE_TESTING", "PHASE_DEPLOYMENT") and rng.random() < 0.6:
                detour = ["PHASE_IMPLEMENTATION", before]
            else:
                detour = ["PHASE_BLOCKED", before]
            path[at:at] = detour
        elif before != "PHASE_BLOCKED" and (at == len(path) or path[at] != "PHASE_BLOCKED"):
            path.insert(at, "PHASE_BLOCKED")
    return path


def moments(rng, count, *, now):
    """`count` ascending moments within the last HISTORY_DAYS days, the first one the creation."""
    created = now - timedelta(days=rng.uniform(0.5, HISTORY_DAYS))
    span = (now - created) * rng.uniform(0.3, 0.98)
    gaps = [rng.expovariate(1) for _ in range(count - 1)]
    total = sum(gaps) or 1
    result, at = [created], created
    for gap in gaps:
        at += span * gap / total
        result.append(at)
    return result


@contextmanager
def stamped_as_given(*fields):
    """Let bulk_create keep the given creation times: auto_now_add would stamp every row with the clock."""
    for field in fields:
        field.auto_now_add = False
    try:
        yield
    finally:
        for field in fields:
            field.auto_now_add = True


def seed_board(slug, *, tickets, rows, seed, now, members=()):
    """A board of the default workflow with `tickets` tickets, `rows` history rows, tasks and discoveries."""
    from board.models import Board, PhaseHistory, Task, Ticket
    from discoveries.models import Discovery
    from phases.defaults import DEFAULT_WORKFLOW_SLUG
    from phases.models import Workflow

    rng = random.Random(seed)
    workflow = Workflow.objects.get(slug=DEFAULT_WORKFLOW_SLUG)
    phases = {phase.key: phase for phase in workflow.phases.all()}
    board = Board.objects.create(name=slug, slug=slug, workflow=workflow)
    board.members.add(*members)

    lengths = [rows // tickets + (1 if n < rows % tickets else 0) for n in range(tickets)]
    walks = [walk(rng, length, finish=rng.random() < 0.6) for length in lengths]
    times = [moments(rng, len(path), now=now) for path in walks]
    with stamped_as_given(Ticket._meta.get_field("created_at"), PhaseHistory._meta.get_field("created_at")):
        made = Ticket.objects.bulk_create(
            [
                Ticket(
                    board=board,
                    title=f"Ticket {n}",
                    phase=phases[path[-1]],
                    position=(n + 1) * 1024,
                    created_at=when[0],
                )
                for n, (path, when) in enumerate(zip(walks, times, strict=True))
            ],
            batch_size=2000,
        )
        PhaseHistory.objects.bulk_create(
            (
                PhaseHistory(
                    ticket=ticket,
                    from_key=path[step - 1] if step else "",
                    to_key=key,
                    from_phase=phases[path[step - 1]] if step else None,
                    to_phase=phases[key],
                    kind=PhaseHistory.Kind.NORMAL,
                    actor="bench",
                    created_at=when[step],
                )
                for ticket, path, when in zip(made, walks, times, strict=True)
                for step, key in enumerate(path)
            ),
            batch_size=5000,
        )
    # Two tasks a ticket; a tenth of the tasks find something, most of those branch, some branches find more.
    tasks = Task.objects.bulk_create(
        [
            Task(ticket=ticket, phase=phases[phase], title=f"{phase} work on {ticket.title}", status="completed")
            for ticket, path in zip(made, walks, strict=True)
            for phase in {path[min(1, len(path) - 1)], path[-1]}
        ],
        batch_size=5000,
    )
    types = [value for value, _ in Discovery.Type.choices]
    sources = rng.sample(tasks, len(tasks) // 10)
    with stamped_as_given(Discovery._meta.get_field("discovered_at")):
        discoveries, spawned, level = [], [], sources
        for depth in range(4):
            found = Discovery.objects.bulk_create(
                [
                    Discovery(
                        source_task=task,
                        discovery_type=rng.choice(types),
                        description=f"Found while doing task {task.pk}, level {depth}",
                        discovered_by="agent:bench",
                        discovered_at=now - timedelta(days=rng.uniform(0, HISTORY_DAYS)),
                        resolution_status=rng.choice(["open", "open", "resolved", "invalid"]),
                    )
                    for task in level
                ],
                batch_size=5000,
            )
            branching = [discovery for discovery in found if rng.random() < 0.7]
            children = Task.objects.bulk_create(
                [
                    Task(
                        ticket_id=discovery.source_task.ticket_id,
                        phase_id=discovery.source_task.phase_id,
                        parent=discovery.source_task,
                        title=f"Branch of discovery {discovery.pk}",
                    )
                    for discovery in branching
                ],
                batch_size=5000,
            )
            spawned += [
                Discovery.spawned_tasks.through(discovery_id=discovery.pk, task_id=child.pk)
                for discovery, child in zip(branching, children, strict=True)
            ]
            discoveries += found
            level = rng.sample(children, len(children) // 3)
        Discovery.spawned_tasks.through.objects.bulk_create(spawned, batch_size=5000)
    return board, {"tasks": Task.objects.filter(ticket__board=board).count(), "discoveries": len(discoveries)}


# Measuring


def measure(client, url, *, runs, warmup, headers=None):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(warmup):
        response = client.get(url, headers=headers or {})
        if response.status_code != 200:
            raise SystemExit(f"GET {url} answered {response.status_code}: {response.content[:500]!r}")
    times, counts = [], set()
    for _ in range(runs):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(url, headers=headers or {})
            elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.status_code
        times.append(elapsed * 1000)
        counts.add(len(queries))
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 1),
        "p90_ms": round(times[min(len(times) - 1, round(0.9 * (len(times) - 1)))], 1),
        "queries_seen": sorted(counts),
        "bytes": len(response.content),
    }


def run(args, where):
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections

    try:
        print(f"Migrating a new {connection.display_name} database ({where})…", flush=True)
        call_command("migrate", interactive=False, verbosity=0)
        results = measure_all(args)
        database = {"vendor": connection.vendor, "version": database_version(connection), "where": where}
    finally:
        connections.close_all()
    results = {
        "database": database,
        **machine_facts(),
        "settings": {"runs": args.runs, "warmup": args.warmup, "seed": args.seed},
        **results,
    }
    results["failures"] = check(results)
    print(report(results))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"analytics-{database['vendor']}.json"
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"Written to {path.relative_to(ROOT)}.")
    return 1 if results["failures"] else 0


def measure_all(args):
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse
    from django.utils import timezone

    from board.models import Agent
    from board.services import token_hash

    member = get_user_model().objects.create_user("bench-member", password=None)
    client = Client()
    client.force_login(member)
    now = timezone.now()
    sizes = {}
    for label, tickets, rows in (
        ("small", args.tickets // 100, args.rows // 100),
        ("large", args.tickets, args.rows),
    ):
        print(f"Seeding {tickets:,} tickets with {rows:,} history rows…", flush=True)
        started = time.perf_counter()
        board, counts = seed_board(
            f"analytics-{label}", tickets=tickets, rows=rows, seed=args.seed, now=now, members=[member]
        )
        token = f"omoi_bench_analytics_{label}"
        agent = Agent.objects.create(
            name=f"analytics-{label}", token_hash=token_hash(token), token_prefix=token[:12], capabilities=[]
        )
        agent.boards.add(board)
        seeded = time.perf_counter() - started
        page = reverse("discoveries:analytics", args=[board.slug])
        print(f"  seeded in {seeded:.1f} s; measuring…", flush=True)
        sizes[label] = {
            "tickets": tickets,
            "history_rows": rows,
            **counts,
            "seed_seconds": round(seeded, 1),
            "page": measure(client, page, runs=args.runs, warmup=args.warmup),
            "page_90": measure(client, f"{page}?days=90", runs=args.runs, warmup=args.warmup),
            "json": measure(
                client,
                f"/api/v1/discoveries/analytics?board={board.slug}",
                runs=args.runs,
                warmup=args.warmup,
                headers={"Authorization": f"Bearer {token}"},
            ),
        }
    return {"sizes": sizes}


def _counts(figure):
    seen = figure["queries_seen"]
    return str(seen[0]) if len(seen) == 1 else f"{seen[0]}–{seen[-1]}"


def check(results):
    """Query counts must not depend on the history's size, nor vary between runs."""
    failures = []
    sizes = results["sizes"]
    for case in CASES:
        for label, data in sizes.items():
            if len(data[case]["queries_seen"]) > 1:
                failures.append(f"{case}: {_counts(data[case])} queries from one run to the next ({label})")
        if len({tuple(data[case]["queries_seen"]) for data in sizes.values()}) > 1:
            described = ", ".join(f"{_counts(data[case])} at {data['history_rows']:,} rows" for data in sizes.values())
            failures.append(f"{case}: the query count depends on the history's size ({described})")
    return failures


def report(results):
    database, settings = results["database"], results["settings"]
    name = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}.get(database["vendor"], database["vendor"])
    vendor = database["vendor"]
    lines = [
        "",
        f"== Analytics benchmark: {name} {database['version']} ({database['where']}) ==",
        f"Django {results['django']}, Python {results['python']}; server time in ms (test client in process, DEBUG off)",
        f"Load average {' '.join(str(load) for load in results['load_average'])} on {results['cpus']} CPUs at the end.",
        f"{settings['runs']} timed requests of each case after {settings['warmup']} warm-up.",
        "",
        f"{'case':<28}{'tickets':>8}{'history':>9}{'median':>9}{'p90':>9}{'queries':>9}{'KB':>8}",
    ]
    for case, label in CASES.items():
        for data in results["sizes"].values():
            figure = data[case]
            lines.append(
                f"{label:<28}{data['tickets']:>8,}{data['history_rows']:>9,}{figure['median_ms']:>9.1f}"
                f"{figure['p90_ms']:>9.1f}{_counts(figure):>9}{figure['bytes'] / 1024:>8.1f}"
            )
    seeded = ", ".join(
        f"{data['tickets']:,} tickets ({data['tasks']:,} tasks, {data['discoveries']:,} discoveries) in "
        f"{data['seed_seconds']:.1f} s"
        for data in results["sizes"].values()
    )
    lines += ["", f"Seeded: {seeded}.", ""]
    for data in results["sizes"].values():
        for case in CASES:
            figure = data[case]
            lines.append(
                f"{vendor} analytics {case} tickets={data['tickets']} history_rows={data['history_rows']} "
                f"median_ms={figure['median_ms']} p90_ms={figure['p90_ms']} queries={_counts(figure)} "
                f"bytes={figure['bytes']}"
            )
    lines.append("")
    if results["failures"]:
        lines += [f"FAIL: {failure}" for failure in results["failures"]]
    else:
        lines.append("OK: every query count is the same at both sizes and on every run.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
