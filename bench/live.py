"""Benchmark of the board's live channel: fan-out latency to 200 open sockets, and what 1,000 idle sockets cost.

    python -m bench.live                              # SQLite, then PostgreSQL + Redis on 127.0.0.1
    python -m bench.live --database sqlite            # one of them
    DATABASE_URL=postgres://user@host:5432/x python -m bench.live --database postgresql --skip-unreachable
    python -m bench.live --changes 10 --idle-sockets 300 --idle-seconds 5   # a quick look

One Daphne process serves a board (bench.agent_board, 2,000 tickets and
10,000 tasks by default) from a new database, dropped at the end: a
temporary SQLite file with the in-memory channel layer, or a new
`omoi_live_bench` database on DATABASE_URL's server with Redis
(BENCH_REDIS_URL, default redis://127.0.0.1:6379/3). The sockets are
websocket clients in this process (a minimal one, BoardSocket, on asyncio),
opened on /ws/boards/<slug>/ as an agent would, with its token in the
handshake's Authorization header.

Fan-out: --clients sockets (200) stay open while --changes tickets (40) are
created through the API of the same server, one after the other. Each
socket's latency for a change is the time it received the ticket.created
event minus the event's `created_at` (same machine clock). `created_at` is
set just before the transaction commits, so the figure is an upper bound of
commit-to-receipt. Goal (issue 12): p99 at most 250 ms.

Idle pages: sockets are added until --idle-sockets (1,000) are open, then
left alone for --idle-seconds (20) while the database queries they cost are
counted. The server runs with bench.query_count_settings, which counts every
query it sends through Django (exact, on both databases); on PostgreSQL the
database's own statistics (pg_stat_database: transactions, each query being
one in autocommit, and sessions) are read too. Goal: at most 1 query per
second per server process. The server's and the database's CPU over the
idle window are reported beside it (bench.cpu).

Writes bench/results/live-<database>.json (Daphne's log beside it,
live-daphne-<database>.log). A missed goal does not change the exit status;
sockets refused, closed or events never delivered make it 1.
"""

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .api import (
    ROOT,
    Client,
    daphne,
    database_is_local,
    run_pass,
)
from .databases import each_database_apart
from .facts import machine_facts

RESULTS = Path(__file__).resolve().parent / "results"
DATABASE_NAME = "omoi_live_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/3"
BOARD_SLUG = "live-bench"
DATABASES = ("sqlite", "postgresql")

# The goals of issue 12.
MAX_P99_MS = 250.0
MAX_IDLE_QUERIES_PER_SECOND = 1.0

# Sockets being opened at once; a change waits this long at most for every socket to get its event.
OPENING_AT_ONCE = 50
DELIVERY_TIMEOUT_SECONDS = 10
HANDSHAKE_TIMEOUT_SECONDS = 30
# Between two changes: the sockets are idle again when the next one is made.
PAUSE_SECONDS = 0.2
SETTLE_SECONDS = 3
PG_STATISTICS_SETTLE_SECONDS = 12


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=[*DATABASES, "both"], default="both", help="default: both, in turn")
    parser.add_argument("--clients", type=int, default=200, help="sockets listening during the fan-out (200)")
    parser.add_argument("--changes", type=int, default=40, help="tickets created during the fan-out (40)")
    parser.add_argument("--idle-sockets", type=int, default=1000, help="sockets open while idle (1,000)")
    parser.add_argument("--idle-seconds", type=float, default=20, help="length of the idle window (20)")
    parser.add_argument("--tickets", type=int, default=2000, help="tickets on the board (2,000)")
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks on the board (10,000)")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the generated data")
    parser.add_argument(
        "--skip-unreachable",
        action="store_true",
        help="exit 0 with a note when the PostgreSQL server does not answer (make bench)",
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.changes < 2 or args.idle_sockets < args.clients or args.idle_seconds <= 0:
        parser.error("--clients at least 1, --changes at least 2, --idle-sockets at least --clients")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.database != "both":
        return run_database(args)
    return each_database_apart(
        "bench.live",
        args,
        ["--clients", "--changes", "--idle-sockets", "--idle-seconds", "--tickets", "--tasks", "--seed"],
    )


def run_database(args):
    return run_pass(args, run, database_name=DATABASE_NAME, redis_url=DEFAULT_REDIS_URL, title="Live benchmark")


def run(args, env, *, vendor, where, redis_url, location):
    # pg_stat_database is read from the server's maintenance database, beside the one measured.
    admin_url = urlunsplit(urlsplit(location)._replace(path="/postgres")) if location else None
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections

    from board.services import agent_create

    from .agent_board import counts, populate
    from .cpu import CpuMeter, postmaster_pid, redis_pid
    from .databases import database_version

    name = "PostgreSQL" if vendor == "postgresql" else "SQLite"
    print(f"Migrating a new {name} database ({where})…", flush=True)
    call_command("migrate", interactive=False, verbosity=0)
    print(f"Seeding {args.tickets:,} tickets and {args.tasks:,} tasks…", flush=True)
    board = populate(slug=BOARD_SLUG, rng=random.Random(args.seed), tickets=args.tickets, tasks=args.tasks)
    _, listener = agent_create(name="listener", boards=[board], actor="bench")
    _, maker = agent_create(name="maker", boards=[board], actor="bench")
    seeded = counts(board)
    version = database_version(connection)
    postgres = vendor == "postgresql"
    postmaster = postmaster_pid(connection) if postgres and database_is_local(connection) else None
    database_name = connection.settings_dict["NAME"]
    redis = redis_pid(urlsplit(redis_url).port or 6379) if redis_url else None
    connections.close_all()

    with tempfile.TemporaryDirectory(prefix="omoi-live-") as directory:
        count_file = Path(directory) / "queries.json"
        server_env = {
            **env,
            "DJANGO_SETTINGS_MODULE": "bench.query_count_settings",
            "OMOI_QUERY_COUNT_FILE": str(count_file),
        }
        with daphne(server_env, RESULTS / f"live-daphne-{vendor}.log") as server:
            meter = CpuMeter(
                server_pid=server.pid, postmaster_pid=postmaster, redis_pid=redis, database_in_server=not postgres
            )
            statistics_reader = DatabaseStatistics(admin_url, database_name) if admin_url else None
            measured = asyncio.run(
                measure(server.port, listener, maker, args, meter, QueryCounter(count_file), statistics_reader)
            )

    results = {
        "database": {"vendor": vendor, "version": version, "where": where},
        "server": "daphne, 1 process, settings bench.query_count_settings",
        "redis": redis_url,
        **machine_facts(),
        "settings": {
            "clients": args.clients,
            "changes": args.changes,
            "idle_sockets": args.idle_sockets,
            "idle_seconds": args.idle_seconds,
            "seed": args.seed,
        },
        "seeded": seeded,
        **measured,
    }
    results["goals"] = judge(results)
    print(report(results))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"live-{vendor}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Written to {path.relative_to(ROOT)}.")
    problems = results["fan_out"]["missing"] + results["fan_out"]["closed"] + results["idle"]["closed"]
    problems += results["fan_out"]["refused"] + results["idle"]["refused"]
    if problems:
        print(f"Sockets refused or closed, or events not delivered; see {RESULTS.relative_to(ROOT)}.", file=sys.stderr)
        return 1
    return 0


# Counting the idle sockets' queries


class QueryCounter:
    """The server's own count of its queries (bench.query_count_settings), read from the file it writes."""

    def __init__(self, path):
        self.path = path

    def read(self):
        """(queries so far, when the server wrote the count)."""
        for _ in range(50):
            try:
                figures = json.loads(self.path.read_text())
                return figures["queries"], figures["at"]
            except (OSError, ValueError):
                time.sleep(0.1)
        raise SystemExit(f"The server did not write its query count to {self.path}.")


class DatabaseStatistics:
    """PostgreSQL's own count of the benchmark database's transactions and sessions, read from another database."""

    def __init__(self, admin_url, name):
        self.admin_url = admin_url
        self.name = name

    def read(self):
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as admin:
            row = admin.execute(
                "SELECT SUM(xact_commit + xact_rollback) FILTER (WHERE datname = %s), "
                "SUM(sessions) FILTER (WHERE datname = %s), "
                "SUM(xact_commit + xact_rollback) FILTER (WHERE datname IS DISTINCT FROM %s) "
                "FROM pg_stat_database",
                [self.name, self.name, self.name],
            ).fetchone()
        return {"transactions": int(row[0]), "sessions": int(row[1]), "others": int(row[2] or 0)}


# The sockets


class BoardSocket:
    """A websocket client of the board channel, just enough of RFC 6455 for these measures.

    (Autobahn, which Daphne brings, cannot serve asyncio here: Django's set-up
    has already tied it to Twisted in this process.) Each whole text message
    is handed to `on_message(socket, text, received_at)`; pings are answered.
    """

    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, number, on_message):
        self.number = number
        self.on_message = on_message
        self.close_code = None
        self.reader = self.writer = self.task = None

    async def connect(self, port, path, token):
        """Open the socket; False when the handshake is refused."""
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16))
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        accept = base64.b64encode(hashlib.sha1(key + self.GUID).digest()).decode()
        if not head.startswith("HTTP/1.1 101") or accept not in head:
            self.close_code = int(head.split()[1]) if len(head.split()) > 1 else 1006
            self.writer.close()
            return False
        self.task = asyncio.create_task(self.read_messages())
        return True

    async def read_messages(self):
        parts = []
        try:
            while True:
                first, second = await self.reader.readexactly(2)
                length = second & 0x7F
                if length == 126:
                    length = int.from_bytes(await self.reader.readexactly(2), "big")
                elif length == 127:
                    length = int.from_bytes(await self.reader.readexactly(8), "big")
                payload = await self.reader.readexactly(length)
                opcode = first & 0x0F
                if opcode == 0x8:
                    self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    self.send(0x8, payload[:2])
                    return
                if opcode == 0x9:
                    self.send(0xA, payload)
                elif opcode in (0x0, 0x1):
                    parts.append(payload)
                    if first & 0x80:
                        self.on_message(self, b"".join(parts), time.time())
                        parts = []
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close_code = self.close_code or 1006
        finally:
            self.writer.close()

    def send(self, opcode, payload):
        """A masked frame (a client must mask), small enough for one length byte."""
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        with contextlib.suppress(ConnectionError, RuntimeError):
            self.writer.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    async def close(self):
        if self.close_code is None:
            self.send(0x8, (1000).to_bytes(2, "big"))
        if self.task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self.task, 5)


class Sockets:
    """The open sockets and what they received: {ticket id: {socket number: (received at, created_at)}}."""

    def __init__(self, port, token):
        self.port = port
        self.token = token
        self.open = []
        self.receipts = {}
        self.arrived = asyncio.Event()

    def received(self, socket, payload, at):
        message = json.loads(payload)
        event = message.get("event") or {}
        if message.get("type") == "event" and event.get("type") == "ticket.created":
            self.receipts.setdefault(event["entity_id"], {})[socket.number] = (at, event["created_at"])
            self.arrived.set()

    async def open_more(self, total):
        """Open sockets until `total` are open (at most OPENING_AT_ONCE handshakes at a time); the number refused."""
        gate = asyncio.Semaphore(OPENING_AT_ONCE)

        async def one(number):
            async with gate:
                socket = BoardSocket(number, self.received)
                try:
                    opened = await asyncio.wait_for(
                        socket.connect(self.port, f"/ws/boards/{BOARD_SLUG}/", self.token), HANDSHAKE_TIMEOUT_SECONDS
                    )
                except (OSError, asyncio.IncompleteReadError, TimeoutError):
                    # An overloaded server drops handshakes it could not answer in time (Daphne: 5 s).
                    opened = False
                    if socket.writer is not None:
                        socket.writer.close()
                if not opened:
                    return None
                # A refused socket is accepted, then closed at once (4401, 4404): give it the time to say so.
                await asyncio.sleep(0.05)
                return socket if socket.close_code is None else None

        start = len(self.open)
        made = await asyncio.gather(*(one(number) for number in range(start, total)))
        self.open += [socket for socket in made if socket is not None]
        return sum(socket is None for socket in made)

    def closed(self):
        return sum(socket.close_code is not None for socket in self.open)

    async def close_all(self):
        await asyncio.gather(*(socket.close() for socket in self.open))

    async def wait_for(self, ticket_id, listeners):
        """Until every listening socket has the ticket's event, or DELIVERY_TIMEOUT_SECONDS have passed."""
        deadline = time.monotonic() + DELIVERY_TIMEOUT_SECONDS
        while len(self.receipts.get(ticket_id, ())) < listeners and time.monotonic() < deadline:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), max(deadline - time.monotonic(), 0.001))
            except TimeoutError:
                break


async def measure(port, listener, maker, args, meter, counter, statistics_reader):
    sockets = Sockets(port, listener)
    client = Client(port, maker)
    try:
        print(f"Opening {args.clients} sockets…", flush=True)
        refused = await sockets.open_more(args.clients)
        fan_out = await measure_fan_out(sockets, client, args)
        fan_out["refused"] = refused
        print(f"Opening sockets up to {args.idle_sockets:,}…", flush=True)
        started = time.perf_counter()
        refused = await sockets.open_more(args.idle_sockets)
        opening = time.perf_counter() - started
        idle = await measure_idle(sockets, args, meter, counter, statistics_reader)
        idle.update(refused=refused, opening_seconds=round(opening, 1))
    finally:
        await sockets.close_all()
    return {"fan_out": fan_out, "idle": idle}


LATENCY_FIGURES = ("p50_ms", "p90_ms", "p99_ms", "max_ms", "last_socket_median_ms", "last_socket_max_ms")


async def measure_fan_out(sockets, client, args):
    listeners = len(sockets.open)

    async def change(number):
        body = {"board": BOARD_SLUG, "title": f"Live change {number}", "priority": "MEDIUM"}
        status, answer, _ = await asyncio.to_thread(client.call, "POST", "/api/v1/tickets", body)
        if status != 201:
            raise SystemExit(f"Creating a ticket answered {status}: {answer}")
        ticket_id = str(answer["id"])
        await sockets.wait_for(ticket_id, listeners)
        await asyncio.sleep(PAUSE_SECONDS)
        return ticket_id

    for number in range(3):  # warm-up: the first events also set up the server's caches and connections
        await change(-number - 1)
    print(f"Making {args.changes} changes to {listeners} listening sockets…", flush=True)
    made = [await change(number) for number in range(args.changes)]

    latencies, last, missing = [], [], 0
    for ticket_id in made:
        receipts = sockets.receipts.get(ticket_id, {})
        missing += listeners - len(receipts)
        mine = [at - datetime.fromisoformat(created_at).timestamp() for at, created_at in receipts.values()]
        latencies += mine
        if mine:
            last.append(max(mine))
    figures = {
        "sockets": listeners,
        "changes": len(made),
        "deliveries": len(latencies),
        "missing": missing,
        "closed": sockets.closed(),
    }
    if len(latencies) < 2:
        return {**figures, **dict.fromkeys(LATENCY_FIGURES)}
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        **figures,
        "p50_ms": round(cuts[49] * 1000, 1),
        "p90_ms": round(cuts[89] * 1000, 1),
        "p99_ms": round(cuts[98] * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
        # How long each change took to reach its last socket.
        "last_socket_median_ms": round(statistics.median(last) * 1000, 1),
        "last_socket_max_ms": round(max(last) * 1000, 1),
    }


async def measure_idle(sockets, args, meter, counter, statistics_reader):
    # The handshakes' own queries are over; PostgreSQL's statistics of a connection that goes idle are
    # published up to 10 s later (PGSTAT_IDLE_INTERVAL), so they are waited for too.
    await asyncio.sleep(PG_STATISTICS_SETTLE_SECONDS if statistics_reader else SETTLE_SECONDS)
    print(f"{len(sockets.open):,} sockets open; counting queries for {args.idle_seconds:g} s…", flush=True)
    queries_before, written_before = counter.read()
    database_before = statistics_reader.read() if statistics_reader else None
    cpu_before, started = meter.read(), time.monotonic()
    await asyncio.sleep(args.idle_seconds)
    queries_after, written_after = counter.read()
    database_after = statistics_reader.read() if statistics_reader else None
    cpu_after, seconds = meter.read(), time.monotonic() - started
    counted_seconds = written_after - written_before
    idle = {
        "sockets": len(sockets.open) - sockets.closed(),
        "closed": sockets.closed(),
        "seconds": round(seconds, 1),
        "server_queries": queries_after - queries_before,
        "server_queries_per_second": round((queries_after - queries_before) / counted_seconds, 2),
        # CPU per second of idle time, in ms: 1000 would be one core kept busy.
        "cpu_ms_per_second": meter.per_unit(cpu_before, cpu_after, seconds),
    }
    if database_before:
        transactions = database_after["transactions"] - database_before["transactions"]
        sessions = database_after["sessions"] - database_before["sessions"]
        idle.update(
            database_transactions=transactions,
            database_transactions_per_second=round(transactions / seconds, 2),
            database_sessions_per_second=round(sessions / seconds, 2),
            # Anything else on the server, such as a test run, shows in the database's CPU: this tells.
            other_database_transactions=database_after["others"] - database_before["others"],
        )
    return idle


# Goals and the report


def judge(results):
    fan_out, idle = results["fan_out"], results["idle"]
    goals = [
        {
            "goal": f"fan-out p99 ≤ {MAX_P99_MS:g} ms",
            "value": fan_out["p99_ms"],
            "limit": MAX_P99_MS,
            "pass": fan_out["p99_ms"] is not None and fan_out["p99_ms"] <= MAX_P99_MS and not fan_out["missing"],
        },
        {
            "goal": f"idle queries ≤ {MAX_IDLE_QUERIES_PER_SECOND:g}/s per server process",
            "value": idle["server_queries_per_second"],
            "limit": MAX_IDLE_QUERIES_PER_SECOND,
            "pass": idle["server_queries_per_second"] <= MAX_IDLE_QUERIES_PER_SECOND,
        },
    ]
    if "database_transactions_per_second" in idle:
        goals.append(
            {
                "goal": f"idle transactions (pg_stat_database) ≤ {MAX_IDLE_QUERIES_PER_SECOND:g}/s",
                "value": idle["database_transactions_per_second"],
                "limit": MAX_IDLE_QUERIES_PER_SECOND,
                "pass": idle["database_transactions_per_second"] <= MAX_IDLE_QUERIES_PER_SECOND,
            }
        )
    return goals


def report(results):
    database, fan_out, idle = results["database"], results["fan_out"], results["idle"]
    name = "PostgreSQL" if database["vendor"] == "postgresql" else "SQLite"
    cpu = idle["cpu_ms_per_second"]

    def ms(value):
        return "-" if value is None else f"{value:.0f}"

    lines = [
        "",
        f"== Live channel benchmark: {name} {database['version']} ({database['where']}), {results['server']} ==",
        f"Django {results['django']}, Python {results['python']}; events through "
        f"{results['redis'] or 'the in-memory channel layer'}; load average "
        f"{' '.join(str(load) for load in results['load_average'])} on {results['cpus']} CPUs at the end.",
        "",
        f"Fan-out: {fan_out['changes']} tickets created through the API, {fan_out['sockets']} sockets listening: "
        f"{fan_out['deliveries']:,} deliveries, {fan_out['missing']} missing, {fan_out['closed']} sockets closed, "
        f"{fan_out['refused']} refused.",
        f"  event created_at → received: p50 {ms(fan_out['p50_ms'])} ms, p90 {ms(fan_out['p90_ms'])} ms, "
        f"p99 {ms(fan_out['p99_ms'])} ms, max {ms(fan_out['max_ms'])} ms; to the last socket: "
        f"median {ms(fan_out['last_socket_median_ms'])} ms, max {ms(fan_out['last_socket_max_ms'])} ms",
        f"Idle: {idle['sockets']:,} sockets open (opened in {idle['opening_seconds']} s, {idle['refused']} refused), "
        f"{idle['closed']} closed, "
        f"over {idle['seconds']} s:",
        f"  the server's queries: {idle['server_queries']:,} ({idle['server_queries_per_second']:,.1f}/s)",
    ]
    if "database_transactions_per_second" in idle:
        lines.append(
            f"  pg_stat_database: {idle['database_transactions_per_second']:,.1f} transactions/s, "
            f"{idle['database_sessions_per_second']:,.1f} new sessions/s; "
            f"other databases: {idle['other_database_transactions']:,} transactions (their CPU counts below)"
        )
    lines += [
        f"  CPU, ms per second: server {ms(cpu['server_ms'])}, database {ms(cpu['database_ms'])}, "
        f"Redis {ms(cpu['redis_ms'])}",
        "",
        f"Goals ({name}):",
    ]
    for entry in results["goals"]:
        value = "unknown" if entry["value"] is None else f"{entry['value']:g}"
        lines.append(f"{'PASS' if entry['pass'] else 'FAIL'}  {entry['goal']:<52} {value}")
    lines.append(f"{sum(entry['pass'] for entry in results['goals'])} of {len(results['goals'])} goals met.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
