"""Benchmark of the agent API over HTTP: claim, complete and branch under 16 concurrent clients, against Daphne.

    python -m bench.api                                       # PostgreSQL on 127.0.0.1:5432
    DATABASE_URL=postgres://user@host:5432/x python -m bench.api  # PostgreSQL on that server

Runs against PostgreSQL only: a new `omoi_api_bench` database on DATABASE_URL's
server, migrated, seeded (a board, tickets, one agent per client, enough
pending tasks) and dropped at the end. Daphne serves it in a subprocess, with
REDIS_URL (default redis://127.0.0.1:6379/2) so every event is broadcast for
real. Each client is a thread with its own agent token and keep-alive
connection; latency is client-side, request sent to response read.

Every endpoint is measured right after a run of GET /api/v1/health on the same
server, a JSON answer that touches no database (the framework's floor), and is
reported as a ratio to it: throughput ratio = endpoint req/s / floor req/s,
p99 ratio = endpoint p99 / floor p99. "task complete" completes tasks the
agents claimed beforehand, so only the completion is timed; "discovery
branch" branches from a task the agent holds. Prints a table, writes
bench/results/api-postgresql.json (Daphne's log beside it, api-daphne.log),
and exits 1 when any timed request got an unexpected status.

BENCH_REDIS_URL chooses the Redis server; DJANGO_SETTINGS_MODULE, another
settings module to measure (by default the project's own).
"""

import argparse
import contextlib
import http.client
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .databases import Unreachable, describe, postgres_database

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
DAPHNE_LOG = RESULTS / "api-daphne.log"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/omoi_bench"
DATABASE_NAME = "omoi_api_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/2"
BOARD_SLUG = "api-bench"
TICKETS = 50


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients, one agent each (default 16)")
    parser.add_argument("--requests", type=int, default=1000, help="timed requests per endpoint (default 1000)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed requests before each run (default 100)")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the task scores")
    parser.add_argument(
        "--skip-unreachable",
        action="store_true",
        help="exit 0 with a note when the PostgreSQL server does not answer (make bench)",
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < args.clients or args.warmup < 0:
        parser.error("--clients at least 1, --requests at least --clients, --warmup at least 0")
    return args


def bench_url(url):
    """The benchmark database's URL: DATABASE_URL's server, our own database name."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise SystemExit(f"The API benchmark runs on PostgreSQL; DATABASE_URL names {parts.scheme or 'nothing'}.")
    return urlunsplit(parts._replace(path=f"/{DATABASE_NAME}"))


def redis_reachable(url):
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def server_environment(database_url, redis_url):
    """Production-like settings, for this process (seeding) and for Daphne."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "omoi_site.settings"),
        DEBUG="false",
        SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1",
        DATABASE_URL=database_url,
        LOG_LEVEL="WARNING",
    )
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def main(argv=None):
    args = parse_args(argv)
    url = bench_url(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    if not redis_reachable(redis_url):
        print(f"Redis at {redis_url} does not answer: events are broadcast through the in-memory layer instead.")
        redis_url = None
    started = time.perf_counter()
    try:
        with postgres_database(url) as location:
            env = server_environment(location, redis_url)
            os.environ.update(env)
            status = run(args, env, describe(location), redis_url)
    except Unreachable as exc:
        if not args.skip_unreachable:
            raise SystemExit(str(exc)) from None
        print(f"{exc}\nAPI benchmark on PostgreSQL skipped.")
        return 0
    print(f"Done in {time.perf_counter() - started:.0f} s.")
    return status


def run(args, env, where, redis_url):
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections

    print(f"Migrating a new PostgreSQL database ({where})…", flush=True)
    call_command("migrate", interactive=False, verbosity=0)
    tasks_needed = 2 * (args.requests + args.warmup + args.clients)
    print(f"Seeding {args.clients} agents and {tasks_needed:,} tasks…", flush=True)
    agents = seed(clients=args.clients, tasks=tasks_needed, seed=args.seed)
    # An agent holds one task at a time: each claim measured is made by an agent holding none, which then
    # holds it for the completion measured next.
    workers = seed_workers(args.warmup + args.requests)
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    connections.close_all()

    with daphne(env) as port:
        results = measure_all(port, agents, workers, args)

    results = {
        "database": {"vendor": "postgresql", "version": version, "where": where},
        "server": "daphne, 1 process",
        "settings_module": env["DJANGO_SETTINGS_MODULE"],
        "redis": redis_url,
        "django": django.get_version(),
        "python": platform.python_version(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        # The clients run on the same machine as the server: both show in the figures.
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "cpus": os.cpu_count(),
        "settings": {"clients": args.clients, "requests": args.requests, "warmup": args.warmup, "seed": args.seed},
        "endpoints": results,
    }
    print(report(results))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "api-postgresql.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Written to {path.relative_to(ROOT)}.")
    errors = {name: figure["errors"] for name, figure in results["endpoints"].items() if figure["errors"]}
    if errors:
        print(f"Unexpected answers: {json.dumps(errors)}; see {DAPHNE_LOG.relative_to(ROOT)}.", file=sys.stderr)
        return 1
    return 0


def seed(*, clients, tasks, seed):
    """A board with tickets, `tasks` pending tasks and one agent per client; returns [(agent, token)]."""
    import random

    from board.models import Board, Priority, Task
    from board.services import PRIORITY_SCORE, agent_create, ticket_create
    from phases.defaults import DEFAULT_WORKFLOW_SLUG
    from phases.models import Workflow

    workflow = Workflow.objects.get(slug=DEFAULT_WORKFLOW_SLUG)
    board = Board.objects.create(name="API bench", slug=BOARD_SLUG, workflow=workflow)
    tickets = [ticket_create(board=board, title=f"Ticket {number}", actor="bench") for number in range(TICKETS)]
    agents = [agent_create(name=f"agent-{n}", boards=[board], actor="bench") for n in range(clients)]
    rng = random.Random(seed)
    priorities = list(Priority.values)
    rows = []
    for number in range(tasks):
        ticket = tickets[number % TICKETS]
        priority = rng.choice(priorities)
        rows.append(
            Task(
                ticket=ticket,
                phase=ticket.phase,
                title=f"Task {number}",
                priority=priority,
                # Scores spread within each priority, so the queue's order is not the insertion order.
                score=PRIORITY_SCORE[priority] + rng.random(),
                created_by="bench",
            )
        )
    Task.objects.bulk_create(rows, batch_size=1000)
    return agents


def seed_workers(count):
    """Tokens of `count` more agents on the bench board, created in bulk (each claims once, then completes)."""
    from board.models import Agent, Board
    from board.services import TOKEN_PREFIX, token_hash

    board = Board.objects.get(slug=BOARD_SLUG)
    tokens = [f"{TOKEN_PREFIX}bench-worker-{n:06d}-{secrets.token_urlsafe(16)}" for n in range(count)]
    made = Agent.objects.bulk_create(
        Agent(name=f"worker-{n}", token_hash=token_hash(token), token_prefix=token[:11])
        for n, token in enumerate(tokens)
    )
    Agent.boards.through.objects.bulk_create(Agent.boards.through(agent=agent, board=board) for agent in made)
    return tokens


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def daphne(env):
    """Daphne serving the project on a free port; stopped at the end."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "omoi_site.server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "omoi_site.asgi:application",
    ]
    RESULTS.mkdir(exist_ok=True)
    with DAPHNE_LOG.open("w+b") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_serving(process, port, log)
            print(f"Daphne is serving on 127.0.0.1:{port}.", flush=True)
            yield port
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_serving(process, port, log):
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if Client(port, None).call("GET", "/api/v1/health")[0] == 200:
                return
        time.sleep(0.2)
    log.seek(0)
    raise SystemExit(f"Daphne did not start:\n{log.read().decode(errors='replace')[-3000:]}")


class Client:
    """One agent's keep-alive connection."""

    def __init__(self, port, token):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def call(self, method, path, body=None, *, token=None):
        """(status, decoded JSON or None, seconds from sending to the whole answer read); `token`: as another agent."""
        payload = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, "Authorization": f"Bearer {token}"} if token else self.headers
        started = time.perf_counter()
        self.connection.request(method, path, body=payload, headers=headers)
        response = self.connection.getresponse()
        content = response.read()
        elapsed = time.perf_counter() - started
        return response.status, (json.loads(content) if content else None), elapsed


def shares(total, clients):
    return [total // clients + (1 if n < total % clients else 0) for n in range(clients)]


def run_clients(clients, count, request):
    """`count` calls of request(client_index, client, number) spread over the clients, all started together.

    Returns (seconds from the first start to the last answer, latencies, unexpected statuses).
    """
    latencies, errors, lock = [], {}, threading.Lock()
    barrier = threading.Barrier(len(clients) + 1)

    def work(index, client, n):
        mine, bad = [], {}
        barrier.wait()
        for number in range(n):
            status, expected, elapsed = request(index, client, number)
            if elapsed is not None:
                mine.append(elapsed)
            if status != expected:
                bad[status] = bad.get(status, 0) + 1
        with lock:
            latencies.extend(mine)
            for status, times in bad.items():
                errors[str(status)] = errors.get(str(status), 0) + times

    threads = [
        threading.Thread(target=work, args=(index, client, n))
        for index, (client, n) in enumerate(zip(clients, shares(count, len(clients)), strict=True))
    ]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, errors


def figures(elapsed, latencies, errors):
    if len(latencies) < 2:
        raise SystemExit(f"Almost no request was answered ({json.dumps(errors)}); see {DAPHNE_LOG.relative_to(ROOT)}.")
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(cuts[49] * 1000, 2),
        "p99_ms": round(cuts[98] * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
        "errors": errors,
    }


def claim_in_process(agents, counts):
    """Task ids claimed through the claim service, `counts[i]` for agent i (0 or 1), one agent after the other.

    Done here rather than over HTTP: these claims prepare a run and are not measured.
    """
    from django.db import connections

    from board.services import task_claim

    held = [
        [task_claim(agent=agent).pk for _ in range(count)] for (agent, _), count in zip(agents, counts, strict=True)
    ]
    connections.close_all()
    return held


def measure_all(port, agents, workers, args):
    clients = [Client(port, token) for _, token in agents]
    # Each client's share of the workers, in the order its claims and then its completions use them.
    per_client = [
        warm + run
        for warm, run in zip(shares(args.warmup, len(clients)), shares(args.requests, len(clients)), strict=True)
    ]
    starts = [sum(per_client[:index]) for index in range(len(clients))]
    fresh = [iter(workers[start : start + count]) for start, count in zip(starts, per_client, strict=True)]
    holding = [[] for _ in clients]

    def health(index, client, number):
        status, _, elapsed = client.call("GET", "/api/v1/health")
        return status, 200, elapsed

    def claim(index, client, number):
        token = next(fresh[index])
        status, body, elapsed = client.call("POST", "/api/v1/tasks/next", {"board": BOARD_SLUG}, token=token)
        if status == 200:
            holding[index].append((token, body["id"], body["attempt"]))
        return status, 200, elapsed

    held = [[] for _ in clients]

    def complete(index, client, number):
        if not holding[index]:
            return "no task held", 200, None  # its claim failed: counted, not timed
        token, task_id, attempt = holding[index].pop()
        body = {"result": {"summary": "done", "n": number}, "completed_criteria": [], "attempt": attempt}
        status, _, elapsed = client.call("POST", f"/api/v1/tasks/{task_id}/complete", body, token=token)
        return status, 200, elapsed

    def branch(index, client, number):
        if not held[index]:
            return "no task held", 201, None
        body = {
            "source_task_id": held[index][0],
            "discovery_type": "bug",
            "description": f"Found while benchmarking, #{index}-{number}",
            "phase": "PHASE_TESTING",
            "metadata": {"client": index, "number": number},
        }
        status, _, elapsed = client.call("POST", "/api/v1/discoveries/branch", body)
        return status, 201, elapsed

    def timed(name, request, prepare=None):
        floor = timed_run(f"{name}: floor", health)
        if prepare:
            prepare()
        measured = timed_run(name, request)
        measured["floor"] = {key: floor[key] for key in ("rps", "p50_ms", "p99_ms", "errors")}
        measured["throughput_ratio"] = round(measured["rps"] / floor["rps"], 3)
        measured["p99_ratio"] = round(measured["p99_ms"] / floor["p99_ms"], 2)
        return measured

    def timed_run(name, request):
        if args.warmup:
            run_clients(clients, args.warmup, request)
        result = figures(*run_clients(clients, args.requests, request))
        print(f"  {name}: {result['rps']:,.0f} req/s, p99 {result['p99_ms']:.1f} ms", flush=True)
        return result

    def claim_one_each():
        held[:] = claim_in_process(agents, [1] * len(clients))

    print(f"Measuring with {len(clients)} clients, {args.requests:,} requests each run…", flush=True)
    results = {"health": timed_run("health", health)}
    results["tasks/next"] = timed("tasks/next", claim)
    # The tasks completed are the ones the claims above took, each by the agent holding it.
    results["task complete"] = timed("task complete", complete)
    results["discovery branch"] = timed("discovery branch", branch, prepare=claim_one_each)
    return results


LABELS = {
    "health": "GET /api/v1/health (floor)",
    "tasks/next": "POST /api/v1/tasks/next",
    "task complete": "POST /api/v1/tasks/{id}/complete",
    "discovery branch": "POST /api/v1/discoveries/branch",
}


def report(results):
    settings = results["settings"]
    database = results["database"]
    lines = [
        "",
        f"== Agent API benchmark: PostgreSQL {database['version']} ({database['where']}), {results['server']}, "
        f"settings {results['settings_module']} ==",
        f"Django {results['django']}, Python {results['python']}; {settings['clients']} concurrent keep-alive clients, "
        f"{settings['requests']:,} timed requests per run after {settings['warmup']:,} warm-up; "
        f"events to {results['redis'] or 'the in-memory channel layer'}",
        f"Load average {' '.join(str(load) for load in results['load_average'])} on {results['cpus']} CPUs at the "
        "end; the clients share the machine with the server.",
        "Each endpoint is measured right after its own floor run (GET /api/v1/health, no database): "
        "throughput ratio = req/s ÷ floor req/s, p99 ratio = p99 ÷ floor p99.",
        "",
        f"{'endpoint':<34}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'floor req/s':>13}{'floor p99':>11}"
        f"{'thru ratio':>12}{'p99 ratio':>11}",
    ]
    for name, figure in results["endpoints"].items():
        floor = figure.get("floor", figure)
        lines.append(
            f"{LABELS[name]:<34}{figure['rps']:>8,.0f}{figure['p50_ms']:>9.1f}{figure['p99_ms']:>9.1f}"
            f"{floor['rps']:>13,.0f}{floor['p99_ms']:>11.1f}"
            f"{figure.get('throughput_ratio', 1):>12.2f}{figure.get('p99_ratio', 1):>11.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
