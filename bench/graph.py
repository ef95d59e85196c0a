"""Benchmark of the workflow graph: its JSON and pages on a board of 2,000 tasks and 1,000 branches, and Chromium.

    python -m bench.graph                                 # SQLite, in a temporary file
    DATABASE_URL=postgres://…/omoi python -m bench.graph    # PostgreSQL, in a new omoi_bench database

The database is a new one, as for bench.board (bench.databases). Server
times go through the middleware, the view and the template in this process
with Django's test client and DEBUG off. Then Daphne serves the same
database and Chromium (Playwright, /usr/bin/chromium) opens the board's graph:
the page measures itself with performance.now() — from navigation to the
first frame, and for "show anyway" (2,000 tasks are over the prompt's
threshold) from the click to the drawing's first frame — and each live
update from its event to the drawing patched, and to the next frame. The
updates are made in this process, as an agent's would be from another; the
server's poll of the event log delivers them. Prints a table and one line
per figure, writes bench/results/graph-<database>.json, and exits 1 when a
count of queries depends on the graph's size or changes between runs.
"""

import argparse
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

from .board import configure_environment
from .databases import database_version, on_new_database
from .facts import machine_facts

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "bench graph password 2000"
TASKS_PER_TICKET = 10
# Of each ticket's tasks, these many are spawned by a discovery: half of them, so 2,000 tasks make 1,000 branches.
BRANCHES_PER_TICKET = 5

CASES = {
    "board_page": "board graph page",
    "board_json": "board graph JSON",
    "ticket_page": "ticket graph page",
    "ticket_json": "ticket graph JSON",
    "task_json": "one task's JSON",
}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.graph", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="200,2000", help="tasks on each board measured (default 200,2000)")
    parser.add_argument("--runs", type=int, default=20, help="timed requests of each case (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests before each series (default 2)")
    parser.add_argument("--updates", type=int, default=6, help="live status changes timed in Chromium (default 6)")
    parser.add_argument("--no-browser", action="store_true", help="server times only")
    parser.add_argument(
        "--skip-unreachable",
        action="store_true",
        help="exit 0 with a note when DATABASE_URL's server does not answer (make bench's PostgreSQL pass)",
    )
    args = parser.parse_args(argv)
    args.sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    if args.runs < 2 or args.warmup < 1 or args.updates < 1 or not args.sizes:
        parser.error("--runs needs at least 2, --warmup and --updates at least 1, --sizes one size")
    return args


def main(argv=None):
    args = parse_args(argv)
    configure_environment()
    return on_new_database(lambda where, env: run(args, where, env), skip_unreachable=args.skip_unreachable)


def run(args, where, database_env):
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections

    # WhiteNoise warns that collectstatic never ran: the timed requests serve no static file.
    warnings.filterwarnings("ignore", message="No directory at")
    try:
        print(f"Migrating a new {connection.display_name} database ({where})…", flush=True)
        call_command("migrate", interactive=False, verbosity=0)
        user = bench_user()
        sizes = {}
        for size in args.sizes:
            print(f"Populating a board of {size:,} tasks…", flush=True)
            started = time.perf_counter()
            board = populate(size=size, user=user)
            populated = time.perf_counter() - started
            print(f"Timing the graph's pages and JSON at {size:,} tasks…", flush=True)
            sizes[size] = {
                "tasks": size,
                "branches": size // TASKS_PER_TICKET * BRANCHES_PER_TICKET,
                "populate_seconds": round(populated, 1),
                "server": measure_server(board, user, runs=args.runs, warmup=args.warmup),
            }
        database = {"vendor": connection.vendor, "version": database_version(connection), "where": where}
        browser = None
        if not args.no_browser:
            largest = max(args.sizes)
            connections.close_all()
            browser = measure_browser(largest, user, database_env, updates=args.updates)
    finally:
        connections.close_all()

    results = {
        "database": database,
        **machine_facts(),
        "settings": {"runs": args.runs, "warmup": args.warmup, "updates": args.updates},
        "sizes": sizes,
        "browser": browser,
    }
    results["failures"] = check(results)
    print(report(results))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"graph-{database['vendor']}.json"
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"Written to {path.relative_to(ROOT)}.")
    return 1 if results["failures"] else 0


# The data


def bench_user():
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="bench-graph", defaults={"email": "bench@example.org"})
    user.set_password(PASSWORD)
    user.save()
    return user


def populate(*, size, user):
    """A board with `size` tasks on size/10 tickets: in each, five tasks in a chain of dependencies across the
    phases, and five spawned by discoveries (a bug, an optimisation…) of earlier tasks of the same ticket."""
    from board.models import Board, Task, Ticket
    from board.services import POSITION_GAP
    from discoveries.models import Discovery
    from phases.defaults import DEFAULT_WORKFLOW_SLUG
    from phases.models import Workflow

    workflow = Workflow.objects.get(slug=DEFAULT_WORKFLOW_SLUG)
    board = Board.objects.create(name=f"Graph bench {size:,}", slug=f"graph-bench-{size}", workflow=workflow)
    board.members.add(user)
    phases = list(workflow.phases.in_order())
    working = [phase for phase in phases if phase.key not in ("PHASE_BACKLOG", "PHASE_DONE", "PHASE_BLOCKED")]
    tickets = Ticket.objects.bulk_create(
        Ticket(
            board=board,
            title=f"Feature {number}: search the <b>invoices</b>",
            phase=working[number % len(working)],
            position=(number + 1) * POSITION_GAP,
        )
        for number in range(size // TASKS_PER_TICKET)
    )
    statuses = [Task.Status.COMPLETED, Task.Status.COMPLETED, Task.Status.RUNNING, Task.Status.PENDING]
    roots = TASKS_PER_TICKET - BRANCHES_PER_TICKET
    rows = [
        Task(
            ticket=ticket,
            phase=working[step % len(working)],
            title=f"Step {step} of feature {ticket.pk}",
            status=statuses[(ticket.pk + step) % len(statuses)] if step < roots else Task.Status.PENDING,
            created_by="agent:bench",
        )
        for ticket in tickets
        for step in range(TASKS_PER_TICKET)
    ]
    Task.objects.bulk_create(rows, batch_size=1000)
    tasks = list(Task.objects.filter(ticket__board=board).order_by("ticket_id", "pk").values_list("pk", "ticket_id"))
    by_ticket = {}
    for pk, ticket_id in tasks:
        by_ticket.setdefault(ticket_id, []).append(pk)
    dependencies, branches = [], []
    types = [value for value, _ in Discovery.Type.choices]
    for ids in by_ticket.values():
        dependencies += [(ids[step], ids[step - 1]) for step in range(1, roots)]
        for offset, spawned in enumerate(ids[roots:]):
            # Each branch comes from an earlier task: a root, or the branch before it (a branch of a branch).
            source = ids[offset] if offset % 2 == 0 else ids[roots + offset - 1]
            branches.append((source, spawned, types[(spawned + offset) % len(types)]))
    Task.dependencies.through.objects.bulk_create(
        Task.dependencies.through(from_task_id=waiting, to_task_id=needed) for waiting, needed in dependencies
    )
    discoveries = Discovery.objects.bulk_create(
        Discovery(
            source_task_id=source,
            discovery_type=kind,
            description="Found while working on the task: <i>details</i> follow.",
            discovered_by="agent:bench",
        )
        for source, _, kind in branches
    )
    Discovery.spawned_tasks.through.objects.bulk_create(
        Discovery.spawned_tasks.through(discovery_id=discovery.pk, task_id=spawned)
        for discovery, (_, spawned, _) in zip(discoveries, branches, strict=True)
    )
    for source, spawned, _ in branches:
        Task.objects.filter(pk=spawned).update(parent_id=source)
    return board


# Server time


def measure_server(board, user, *, runs, warmup):
    from functools import partial

    from django.test import Client
    from django.urls import reverse

    from bench.scenarios import measure

    client = Client()
    client.force_login(user)
    ticket = board.tickets.order_by("pk").first()
    task = ticket.tasks.order_by("pk").first()
    urls = {
        "board_page": reverse("discoveries:board-graph", args=[board.slug]),
        "board_json": reverse("discoveries:board-graph-data", args=[board.slug]),
        "ticket_page": reverse("discoveries:ticket-graph", args=[board.slug, ticket.pk]),
        "ticket_json": reverse("discoveries:ticket-graph-data", args=[board.slug, ticket.pk]),
        "task_json": reverse("discoveries:graph-task", args=[board.slug, task.pk]),
    }

    def expect_ok(response):
        if response.status_code != 200:
            raise AssertionError(f"{response.request['PATH_INFO']} answered {response.status_code}.")

    results = {}
    for case, url in urls.items():
        measurement = measure(
            lambda url=url: (partial(client.get, url), False), runs=runs, warmup=warmup, check=expect_ok
        )
        results[case] = {**measurement.summary(), "bytes": measurement.size}
    return results


# Chromium


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def daphne(database_env):
    """Daphne on the benchmark database. DEBUG on, so that WhiteNoise serves static/ as it is, with no
    collectstatic into the tree: it changes nothing the page measures in itself."""
    import urllib.request

    port = free_port()
    env = {
        **os.environ,
        **database_env,
        "DJANGO_SETTINGS_MODULE": "omoi_site.settings",
        "DEBUG": "true",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "OMOI_LIVE_POLL_SECONDS": "0.2",
    }
    env.pop("REDIS_URL", None)
    # This process allows sync ORM calls beside Playwright's loop; the server keeps Django's guard.
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    command = [sys.executable, "-m", "omoi_site.server", "--bind", "127.0.0.1", "--port", str(port)]
    RESULTS.mkdir(exist_ok=True)
    log_path = RESULTS / "graph-daphne.log"
    with log_path.open("w+b") as log:
        process = subprocess.Popen(
            [*command, "omoi_site.asgi:application"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise SystemExit(f"Daphne did not start:\n{log.read().decode(errors='replace')[-3000:]}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/js/graph.js", timeout=2):
                        break
                except OSError:
                    time.sleep(0.2)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def measure_browser(size, user, database_env, *, updates):
    """First render and live updates of the board's graph of `size` tasks in Chromium, as the page times them."""
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: the browser figures are skipped.")
        return None
    from playwright.sync_api import sync_playwright

    from board.models import Board, Task
    from board.services import agent_create, task_claim, task_complete
    from discoveries.services import discovery_branch

    board = Board.objects.get(slug=f"graph-bench-{size}")
    agent, _ = agent_create(name=f"bench-graph-agent-{secrets.token_hex(3)}", boards=[board], actor="bench")
    ticket = board.tickets.order_by("pk").first()
    path = f"/boards/{board.slug}/graph/"
    print(f"Opening {path} in Chromium ({size:,} tasks)…", flush=True)
    # Playwright's sync API keeps an asyncio loop running in this thread: Django then refuses ORM calls made
    # beside it (not from it) unless told they are safe, as the browser tests do.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with daphne(database_env) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(base_url=base, viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.goto(f"/accounts/login/?next={path}")
            page.get_by_label("Username").fill(user.username)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"**{path}")
            page.wait_for_function("window.OmoiGraph && OmoiGraph.metrics.firstRender !== null", timeout=30_000)
            first = page.evaluate("OmoiGraph.metrics")
            page.get_by_role("button", name="Show anyway").click()
            page.wait_for_function("OmoiGraph.metrics.renders.length > 0", timeout=30_000)
            page.wait_for_selector("#live-status[data-state=live]")
            shown = page.evaluate("OmoiGraph.metrics")
            drawn = page.evaluate("OmoiGraph.cy.nodes('node.task').length")

            # Each claim and each completion is one status change; the queue picks any ready task of the board.
            changes, claimed = 0, None
            while changes < updates:
                if claimed is None:
                    claimed = task_claim(agent=agent)
                    if claimed is None:
                        break
                else:
                    task_complete(task=claimed, agent=agent, attempt=claimed.attempt)
                    claimed = None
                changes += 1
                page.wait_for_function(
                    "n => OmoiGraph.metrics.updates.filter(u => u.frameMs !== undefined).length >= n",
                    arg=changes,
                    timeout=10_000,
                )
            source = Task.objects.filter(ticket=ticket).order_by("pk").first()
            _, spawned = discovery_branch(
                source_task=source, discovery_type="bug", description="Found by the benchmark", actor=agent
            )
            page.wait_for_function(
                "id => OmoiGraph.cy.getElementById('task-' + id).nonempty()", arg=spawned.pk, timeout=10_000
            )
            page.wait_for_function(
                "() => OmoiGraph.metrics.updates.every(u => u.frameMs !== undefined)", timeout=10_000
            )
            final = page.evaluate("OmoiGraph.metrics")
            context.close()
        finally:
            browser.close()

    status_updates = [u for u in final["updates"] if u["type"] in ("task.assigned", "task.completed")]
    added = [u for u in final["updates"] if u["fetched"]]
    return {
        "tasks": size,
        "drawn": drawn,
        "prompt_shown_ms": round(first["firstRender"], 1),
        "data_loaded_ms": round(first["dataLoaded"], 1),
        "show_anyway_ms": round(shown["renders"][-1]["ms"], 1),
        # Of which: elements added, laid out (and the style worked out, which the first box asks for), first frame.
        "show_anyway_parts_ms": {
            name: round(shown["renders"][-1][key], 1)
            for name, key in (("add", "addMs"), ("layout_and_style", "layoutMs"), ("first_frame", "frameMs"))
        },
        "layout_ms": round(shown["layoutMs"], 1),
        "status_update": _spread([u["applyMs"] for u in status_updates], [u["frameMs"] for u in status_updates]),
        "new_branch": {
            "apply_ms": round(added[-1]["applyMs"], 2) if added else None,
            "frame_ms": round(added[-1]["frameMs"], 2) if added else None,
            "since_event_ms": round(added[-1]["sinceEventMs"], 2) if added else None,
        },
    }


def _spread(apply, frame):
    return {
        "count": len(apply),
        "apply_median_ms": round(statistics.median(apply), 2),
        "apply_max_ms": round(max(apply), 2),
        "frame_median_ms": round(statistics.median(frame), 2),
        "frame_max_ms": round(max(frame), 2),
    }


# Report


def _counts(figure):
    seen = figure["queries_seen"]
    return str(seen[0]) if len(seen) == 1 else f"{seen[0]}–{seen[-1]}"


def check(results):
    """Query counts must not depend on the graph's size, nor vary between runs."""
    failures = []
    for case in CASES:
        by_size = {size: data["server"][case] for size, data in results["sizes"].items()}
        for size, figure in by_size.items():
            if len(figure["queries_seen"]) > 1:
                failures.append(f"{case}: {_counts(figure)} queries from one run to the next at {size:,} tasks")
        if len({tuple(figure["queries_seen"]) for figure in by_size.values()}) > 1:
            described = ", ".join(f"{_counts(figure)} at {size:,}" for size, figure in by_size.items())
            failures.append(f"{case}: the query count depends on the number of tasks ({described})")
    return failures


def report(results):
    database = results["database"]
    name = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}.get(database["vendor"], database["vendor"])
    vendor = database["vendor"]
    lines = [
        "",
        f"== Graph benchmark: {name} {database['version']} ({database['where']}) ==",
        f"Django {results['django']}, Python {results['python']}; server time in ms (test client in process, "
        f"DEBUG off); load average {' '.join(str(load) for load in results['load_average'])} on {results['cpus']} "
        "CPUs at the end",
        "",
        f"{'case':<22}{'tasks':>7}{'branches':>9}{'median':>9}{'p90':>9}{'queries':>9}{'KB':>9}",
    ]
    for case, label in CASES.items():
        for data in results["sizes"].values():
            figure = data["server"][case]
            lines.append(
                f"{label:<22}{data['tasks']:>7,}{data['branches']:>9,}{figure['median_ms']:>9.1f}"
                f"{figure['p90_ms']:>9.1f}{_counts(figure):>9}{figure['bytes'] / 1024:>9.1f}"
            )
    browser = results["browser"]
    if browser:
        status, branch = browser["status_update"], browser["new_branch"]
        parts = browser["show_anyway_parts_ms"]
        lines += [
            "",
            f"Chromium, the board's graph of {browser['tasks']:,} tasks (performance.now() in the page):",
            f"  navigation to the filter-first prompt drawn   {browser['prompt_shown_ms']:>8.1f} ms "
            f"(graph JSON in at {browser['data_loaded_ms']:.1f} ms)",
            f'  "show anyway" to the whole graph drawn       {browser["show_anyway_ms"]:>8.1f} ms '
            f"({browser['drawn']:,} nodes: add {parts['add']:.0f}, layout {browser['layout_ms']:.0f} and style "
            f"{parts['layout_and_style'] - browser['layout_ms']:.0f}, first frame {parts['first_frame']:.0f})",
            f"  a status change: event to node patched       {status['apply_median_ms']:>8.2f} ms median, "
            f"{status['apply_max_ms']:.2f} max; to the next frame {status['frame_median_ms']:.2f} median, "
            f"{status['frame_max_ms']:.2f} max ({status['count']} changes)",
            f"  a new branch: its JSON to node laid out      {branch['apply_ms']:>8.2f} ms; to the next frame "
            f"{branch['frame_ms']:.2f} ms; event to node, fetch included, {branch['since_event_ms']:.2f} ms",
        ]
    lines.append("")
    for size, data in results["sizes"].items():
        for case, figure in data["server"].items():
            lines.append(
                f"{vendor} graph {case} tasks={size} median_ms={figure['median_ms']} p90_ms={figure['p90_ms']} "
                f"queries={_counts(figure)} bytes={figure['bytes']}"
            )
    if browser:
        lines.append(
            f"{vendor} graph chromium tasks={browser['tasks']} prompt_ms={browser['prompt_shown_ms']} "
            f"show_anyway_ms={browser['show_anyway_ms']} status_apply_median_ms={status['apply_median_ms']} "
            f"status_frame_median_ms={status['frame_median_ms']} branch_apply_ms={branch['apply_ms']}"
        )
    lines.append("")
    if results["failures"]:
        lines += [f"FAIL: {failure}" for failure in results["failures"]]
    else:
        lines.append("OK: every query count is the same at every size and on every run.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
