"""Benchmark of the agent API over HTTP against one Daphne process: throughput, latency and CPU per request.

    python -m bench.api                               # SQLite, then PostgreSQL on 127.0.0.1:5432
    python -m bench.api --database sqlite             # one of them
    DATABASE_URL=postgres://user@host:5432/x python -m bench.api --database postgresql --skip-unreachable
    python -m bench.api --requests 100 --warmup 10    # a quick look

Each database gets a new one, migrated and seeded with a board as agents find
it after weeks of work (bench.agent_board: 10,000 tickets, 50,000 tasks, some
held, most done, a long queue; ANALYZE on PostgreSQL), then dropped:

- SQLite, the embedded default: a temporary file, the in-memory channel layer;
- PostgreSQL: a new `omoi_api_bench` database on DATABASE_URL's server (by
  default 127.0.0.1:5432), with Redis (BENCH_REDIS_URL, default
  redis://127.0.0.1:6379/2) so every event is broadcast for real.

16 clients (threads, each with its own agent token and keep-alive
connection) send POST /api/v1/tasks/next, task complete, discovery branch,
ticket create (POST /api/v1/tickets) and ticket transition (Backlog →
Requirements Analysis, an allowed move into a column whose WIP limit only
warns). Each is measured right after a run of GET /api/v1/health (a JSON
answer that touches no database: the framework's floor) and compared with
it. Latency is client-side, request sent to response read. CPU per request
comes from the processes' own accounting (bench.cpu): the Daphne process,
and on PostgreSQL the whole database server (postmaster and backends), and
Redis apart; the health run's database figure shows the server's background.

Goals (issue 12), printed PASS/FAIL and stored with the results; a missed
goal does not change the exit status:
- PostgreSQL + Redis: each endpoint at least 0.5 × the health run's req/s,
  server + database CPU at most 12 ms per request, p99 at most 4 × p50;
- SQLite: p99 at most 300 ms.

Writes bench/results/api-<database>.json (Daphne's log beside it,
api-daphne-<database>.log) and exits 1 when a timed request got an unexpected
status. DJANGO_SETTINGS_MODULE chooses another settings module to measure.
"""

import argparse
import contextlib
import http.client
import json
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .databases import Refused, Unreachable, describe, each_database_apart, postgres_database, sqlite_database
from .facts import machine_facts

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/omoi_bench"
DATABASE_NAME = "omoi_api_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/2"
BOARD_SLUG = "api-bench"
DATABASES = ("sqlite", "postgresql")

# The goals of issue 12.
MIN_THROUGHPUT_RATIO = 0.5
MAX_CPU_MS = 12.0
MAX_P99_OVER_P50 = 4.0
SQLITE_MAX_P99_MS = 300.0

# Tickets are moved from Backlog into Requirements Analysis: an allowed transition, into the Analyzing
# column, whose WIP limit warns and never refuses.
TRANSITION_FROM = "PHASE_BACKLOG"
TRANSITION_TO = "PHASE_REQUIREMENTS"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--database",
        choices=[*DATABASES, "both"],
        default="both",
        help="sqlite (a temporary file), postgresql (DATABASE_URL's server) or both, one after the other (default)",
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients, one agent each (default 16)")
    parser.add_argument("--requests", type=int, default=500, help="timed requests per endpoint (default 500)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests before each run (default 50)")
    parser.add_argument("--tickets", type=int, default=10_000, help="tickets on the board (default 10,000)")
    parser.add_argument("--tasks", type=int, default=50_000, help="tasks on the board (default 50,000)")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the generated data")
    parser.add_argument(
        "--server",
        choices=["daphne", "uvicorn"],
        default="daphne",
        help="the ASGI server: daphne (the project's, default) or uvicorn (needs uvicorn, uvloop, httptools)",
    )
    parser.add_argument(
        "--skip-unreachable",
        action="store_true",
        help="exit 0 with a note when the PostgreSQL server does not answer (make bench)",
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < args.clients or args.warmup < 0:
        parser.error("--clients at least 1, --requests at least --clients, --warmup at least 0")
    if args.tickets < 2 * (args.requests + args.warmup) or args.tasks < 2 * args.tickets:
        parser.error("--tickets at least twice --requests + --warmup (Backlog tickets to move), --tasks twice that")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.database != "both":
        return run_database(args)
    return each_database_apart(
        "bench.api", args, ["--clients", "--requests", "--warmup", "--tickets", "--tasks", "--seed", "--server"]
    )


def run_database(args):
    return run_pass(args, run, database_name=DATABASE_NAME, redis_url=DEFAULT_REDIS_URL, title="API benchmark")


def run_pass(args, run, *, database_name, redis_url, title):
    """One database's pass of a benchmark: a new database (`args.database`), `run` on it, then it is dropped.

    `run(args, env, vendor=, where=, redis_url=, location=)` gets the server's environment; on PostgreSQL
    `location` is the new database's URL on DATABASE_URL's server, with Redis at BENCH_REDIS_URL (else
    `redis_url`) when it answers.
    """
    started = time.perf_counter()
    if args.database == "sqlite":
        with sqlite_database() as path:
            env = server_environment(sqlite_path=path)
            apply_environment(env)
            status = run(args, env, vendor="sqlite", where="a temporary file", redis_url=None, location=None)
    else:
        url = bench_url(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL, database_name)
        redis_url = os.environ.get("BENCH_REDIS_URL", redis_url)
        if not redis_reachable(redis_url):
            print(f"Redis at {redis_url} does not answer: events go through the in-memory layer instead.")
            redis_url = None
        try:
            with postgres_database(url) as location:
                env = server_environment(database_url=location, redis_url=redis_url)
                apply_environment(env)
                where = describe(location)
                status = run(args, env, vendor="postgresql", where=where, redis_url=redis_url, location=location)
        except Refused as exc:
            raise SystemExit(str(exc)) from None
        except Unreachable as exc:
            if not args.skip_unreachable:
                raise SystemExit(str(exc)) from None
            print(f"{exc}\n{title} on PostgreSQL skipped.")
            return 0
    print(f"Done in {time.perf_counter() - started:.0f} s.")
    return status


# The server


def bench_url(url, name):
    """The benchmark database's URL: DATABASE_URL's server, our own database name."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise SystemExit(f"The PostgreSQL pass needs a postgres:// DATABASE_URL, not {parts.scheme or 'nothing'}.")
    return urlunsplit(parts._replace(path=f"/{name}"))


def redis_reachable(url):
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def server_environment(*, database_url=None, sqlite_path=None, redis_url=None):
    """Production-like settings, for this process (seeding) and for Daphne: one database, Redis or not."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "omoi_site.settings"),
        DEBUG="false",
        SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1",
        LOG_LEVEL="WARNING",
    )
    for name in ("DATABASE_URL", "SQLITE_PATH", "REDIS_URL"):
        env.pop(name, None)
    if database_url:
        env["DATABASE_URL"] = database_url
    if sqlite_path:
        env["SQLITE_PATH"] = sqlite_path
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def apply_environment(env):
    """Make this process's environment `env` (read by the settings at django.setup())."""
    for name in set(os.environ) - set(env):
        del os.environ[name]
    os.environ.update(env)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    port: int
    pid: int


@contextlib.contextmanager
def daphne(env, log_path, server="daphne"):
    """The project served on a free port, its output in `log_path`; stopped at the end.

    `server`: daphne (the project's server, omoi_site.server), or uvicorn (with uvloop and httptools, when
    installed: `pip install uvicorn uvloop httptools`), measured as an alternative for production.
    """
    port = free_port()
    if server == "uvicorn":
        options = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
        command = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), *options]
    else:
        command = [sys.executable, "-m", "omoi_site.server", "--bind", "127.0.0.1", "--port", str(port)]
    command.append("omoi_site.asgi:application")
    RESULTS.mkdir(exist_ok=True)
    with log_path.open("w+b") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_serving(process, port, log)
            print(f"{server.capitalize()} is serving on 127.0.0.1:{port}.", flush=True)
            yield Server(port=port, pid=process.pid)
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


def database_is_local(connection):
    """Whether the database server runs on this machine, where its processes' CPU can be read."""
    host = connection.settings_dict.get("HOST") or ""
    return host in ("", "localhost", "127.0.0.1", "::1") or host.startswith("/")


def other_transactions(connection):
    """Transactions committed or rolled back so far by the server's other databases (PostgreSQL's statistics)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COALESCE(SUM(xact_commit + xact_rollback), 0) FROM pg_stat_database "
            "WHERE datname IS DISTINCT FROM current_database()"
        )
        return int(cursor.fetchone()[0])


# The run


def run(args, env, *, vendor, where, redis_url, location=None):
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections

    from board.models import Ticket
    from board.services import agent_create

    from .agent_board import agent_tokens, counts, populate
    from .cpu import CpuMeter, postmaster_pid, redis_pid
    from .databases import database_version

    name = "PostgreSQL" if vendor == "postgresql" else "SQLite"
    print(f"Migrating a new {name} database ({where})…", flush=True)
    call_command("migrate", interactive=False, verbosity=0)
    rng = random.Random(args.seed)
    print(f"Seeding {args.tickets:,} tickets and {args.tasks:,} tasks…", flush=True)
    started = time.perf_counter()
    board = populate(slug=BOARD_SLUG, rng=rng, tickets=args.tickets, tasks=args.tasks)
    agents = [agent_create(name=f"agent-{n}", boards=[board], actor="bench") for n in range(args.clients)]
    # An agent holds one task at a time: each claim measured is made by an agent holding none, which then
    # holds it for the completion measured next.
    workers = [token for _, token in agent_tokens(board, args.warmup + args.requests, name="worker")]
    backlog = list(
        Ticket.objects.filter(board=board, phase__key=TRANSITION_FROM).order_by("pk").values_list("pk", flat=True)
    )
    movable = rng.sample(backlog, args.warmup + args.requests)
    seeded = {**counts(board), "seconds": round(time.perf_counter() - started, 1)}
    print(f"  {seeded['tickets']:,} tickets, {seeded['tasks']:,} tasks in {seeded['seconds']} s.", flush=True)
    version = database_version(connection)
    postgres = vendor == "postgresql"
    local = postgres and database_is_local(connection)
    postmaster = postmaster_pid(connection) if local else None
    redis = redis_pid(urlsplit(redis_url).port or 6379) if redis_url else None
    others = (lambda: other_transactions(connection)) if postgres else None
    connections.close_all()

    with daphne(env, RESULTS / f"api-{args.server}-{vendor}.log", args.server) as server:
        meter = CpuMeter(
            server_pid=server.pid, postmaster_pid=postmaster, redis_pid=redis, database_in_server=not postgres
        )
        endpoints = measure_all(server.port, agents, workers, movable, args, meter, others)
    connections.close_all()

    results = {
        "database": {"vendor": vendor, "version": version, "where": where},
        "server": f"{args.server}, 1 process",
        "settings_module": env["DJANGO_SETTINGS_MODULE"],
        "redis": redis_url,
        **machine_facts(),
        "settings": {
            "clients": args.clients,
            "requests": args.requests,
            "warmup": args.warmup,
            "seed": args.seed,
        },
        "seeded": seeded,
        "cpu_sources": {
            "server": f"pid {server.pid}",
            "database": f"postmaster pid {postmaster} and its children"
            if postmaster
            else ("in the server process" if not postgres else "unknown (not on this machine)"),
            "redis": f"pid {redis}" if redis else None,
        },
        "endpoints": endpoints,
    }
    results["goals"] = judge(vendor, endpoints)
    print(report(results))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"api-{vendor}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Written to {path.relative_to(ROOT)}.")
    errors = {name: figure["errors"] for name, figure in endpoints.items() if figure["errors"]}
    if errors:
        print(f"Unexpected answers: {json.dumps(errors)}; see bench/results/api-daphne-{vendor}.log.", file=sys.stderr)
        return 1
    return 0


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


def percentile_figures(latencies):
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "p50_ms": round(cuts[49] * 1000, 2),
        "p99_ms": round(cuts[98] * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
    }


def figures(elapsed, latencies, errors):
    if len(latencies) < 2:
        raise SystemExit(f"Almost no request was answered ({json.dumps(errors)}); see the Daphne log in bench/results.")
    return {
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1),
        **percentile_figures(latencies),
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


def measure_all(port, agents, workers, movable, args, meter, others):
    """Every endpoint, each after its own health run; `others()` counts the other databases' transactions."""
    clients = [Client(port, token) for _, token in agents]
    # Each client's share of the workers (and of the tickets to move), in the order its runs use them.
    per_client = [
        warm + run
        for warm, run in zip(shares(args.warmup, len(clients)), shares(args.requests, len(clients)), strict=True)
    ]
    starts = [sum(per_client[:index]) for index in range(len(clients))]
    fresh = [iter(workers[start : start + count]) for start, count in zip(starts, per_client, strict=True)]
    to_move = [iter(movable[start : start + count]) for start, count in zip(starts, per_client, strict=True)]
    holding = [[] for _ in clients]
    held = [[] for _ in clients]

    def health(index, client, number):
        status, _, elapsed = client.call("GET", "/api/v1/health")
        return status, 200, elapsed

    def claim(index, client, number):
        token = next(fresh[index])
        status, body, elapsed = client.call("POST", "/api/v1/tasks/next", {"board": BOARD_SLUG}, token=token)
        if status == 200:
            holding[index].append((token, body["id"], body["attempt"]))
        return status, 200, elapsed

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

    def create(index, client, number):
        body = {
            "board": BOARD_SLUG,
            "title": f"Found by client {index}: case {number}",
            "description": "Steps to reproduce, expected and actual result.",
            "priority": "HIGH" if number % 4 == 0 else "MEDIUM",
        }
        status, _, elapsed = client.call("POST", "/api/v1/tickets", body)
        return status, 201, elapsed

    def transition(index, client, number):
        ticket_id = next(to_move[index])
        body = {"to_phase": TRANSITION_TO, "reason": "Triaged: ready for requirements."}
        status, _, elapsed = client.call("POST", f"/api/v1/tickets/{ticket_id}/transition", body)
        return status, 200, elapsed

    def timed(name, request, prepare=None):
        floor = timed_run(f"{name}: floor", health)
        if prepare:
            prepare()
        measured = timed_run(name, request)
        measured["floor"] = {key: floor[key] for key in ("rps", "p50_ms", "p99_ms", "errors", "cpu")}
        measured["throughput_ratio"] = round(measured["rps"] / floor["rps"], 3)
        measured["p99_ratio"] = round(measured["p99_ms"] / floor["p99_ms"], 2)
        return measured

    def timed_run(name, request):
        if args.warmup:
            run_clients(clients, args.warmup, request)
        before, others_before = meter.read(), others() if others else None
        result = figures(*run_clients(clients, args.requests, request))
        after = meter.read()
        result["p99_over_p50"] = round(result["p99_ms"] / result["p50_ms"], 2)
        result["cpu"] = meter.per_unit(before, after, result["requests"])
        if others:
            result["other_database_transactions"] = others() - others_before
        cpu = result["cpu"]
        print(
            f"  {name}: {result['rps']:,.0f} req/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
            f"CPU {cpu_text(cpu['total_ms'])} ms/request",
            flush=True,
        )
        return result

    def claim_one_each():
        held[:] = claim_in_process(agents, [1] * len(clients))

    print(f"Measuring with {len(clients)} clients, {args.requests:,} requests each run…", flush=True)
    results = {"health": timed_run("health", health)}
    results["tasks/next"] = timed("tasks/next", claim)
    # The tasks completed are the ones the claims above took, each by the agent holding it.
    results["task complete"] = timed("task complete", complete)
    results["discovery branch"] = timed("discovery branch", branch, prepare=claim_one_each)
    results["ticket create"] = timed("ticket create", create)
    results["ticket transition"] = timed("ticket transition", transition)
    return results


# Goals and the report


def goal(endpoint, what, value, limit, *, at_least=False):
    met = value is not None and (value >= limit if at_least else value <= limit)
    return {"endpoint": endpoint, "goal": what, "value": value, "limit": limit, "pass": met}


def judge(vendor, endpoints):
    """The goals of issue 12 for this database, one entry per endpoint and goal."""
    goals = []
    for name, figure in endpoints.items():
        if name == "health":
            continue
        if vendor == "postgresql":
            goals.append(
                goal(
                    name,
                    f"req/s ≥ {MIN_THROUGHPUT_RATIO} × health",
                    figure["throughput_ratio"],
                    MIN_THROUGHPUT_RATIO,
                    at_least=True,
                )
            )
            goals.append(
                goal(name, f"CPU server + database ≤ {MAX_CPU_MS:g} ms/request", figure["cpu"]["total_ms"], MAX_CPU_MS)
            )
            goals.append(goal(name, f"p99 ≤ {MAX_P99_OVER_P50:g} × p50", figure["p99_over_p50"], MAX_P99_OVER_P50))
        else:
            goals.append(goal(name, f"p99 ≤ {SQLITE_MAX_P99_MS:g} ms", figure["p99_ms"], SQLITE_MAX_P99_MS))
    return goals


def goal_lines(goals):
    lines = []
    for entry in goals:
        value = "unknown" if entry["value"] is None else f"{entry['value']:g}"
        lines.append(f"{'PASS' if entry['pass'] else 'FAIL'}  {entry['endpoint']:<18} {entry['goal']:<38} {value}")
    passed = sum(entry["pass"] for entry in goals)
    lines.append(f"{passed} of {len(goals)} goals met.")
    return lines


def cpu_text(value):
    return "-" if value is None else f"{value:.2f}"


LABELS = {
    "health": "GET /api/v1/health (floor)",
    "tasks/next": "POST /api/v1/tasks/next",
    "task complete": "POST /api/v1/tasks/{id}/complete",
    "discovery branch": "POST /api/v1/discoveries/branch",
    "ticket create": "POST /api/v1/tickets",
    "ticket transition": "POST /api/v1/tickets/{id}/transition",
}


def report(results):
    settings = results["settings"]
    database = results["database"]
    seeded = results["seeded"]
    name = "PostgreSQL" if database["vendor"] == "postgresql" else "SQLite"
    lines = [
        "",
        f"== Agent API benchmark: {name} {database['version']} ({database['where']}), {results['server']}, "
        f"settings {results['settings_module']} ==",
        f"Django {results['django']}, Python {results['python']}; {settings['clients']} concurrent keep-alive clients, "
        f"{settings['requests']:,} timed requests per run after {settings['warmup']:,} warm-up; "
        f"events to {results['redis'] or 'the in-memory channel layer'}",
        f"Board: {seeded['tickets']:,} tickets, {seeded['tasks']:,} tasks "
        f"({', '.join(f'{count:,} {status}' for status, count in sorted(seeded['tasks_by_status'].items()))})",
        f"Load average {' '.join(str(load) for load in results['load_average'])} on {results['cpus']} CPUs at the "
        "end; the clients share the machine with the server.",
        "Each endpoint runs right after its own floor run (GET /api/v1/health, no database): ratio = req/s ÷ floor "
        "req/s. CPU in ms per request: server (Daphne), database, total = server + database; Redis apart.",
        "",
        f"{'endpoint':<38}{'req/s':>7}{'floor':>7}{'ratio':>7}{'p50 ms':>8}{'p99 ms':>8}{'p99/p50':>8}"
        f"{'server':>8}{'db':>7}{'total':>7}{'redis':>7}",
    ]
    for key, figure in results["endpoints"].items():
        floor = figure.get("floor", figure)
        cpu = figure["cpu"]
        lines.append(
            f"{LABELS[key]:<38}{figure['rps']:>7,.0f}{floor['rps']:>7,.0f}{figure.get('throughput_ratio', 1):>7.2f}"
            f"{figure['p50_ms']:>8.1f}{figure['p99_ms']:>8.1f}{figure['p99_over_p50']:>8.2f}"
            f"{cpu_text(cpu['server_ms']):>8}{cpu_text(cpu['database_ms']):>7}{cpu_text(cpu['total_ms']):>7}"
            f"{cpu_text(cpu['redis_ms']):>7}"
        )
    busy = {key: figure.get("other_database_transactions") for key, figure in results["endpoints"].items()}
    if any(count and count > 0 for count in busy.values()):
        lines.append(
            "Other databases on the server ran transactions during the runs (the database CPU includes theirs): "
            + ", ".join(f"{key} {count:,}" for key, count in busy.items() if count and count > 0)
        )
    lines += ["", f"Goals ({name}):", *goal_lines(results["goals"])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
