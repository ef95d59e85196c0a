"""Benchmark of the agent API's body limit: what a huge upload costs the server, in memory and time.

    python -m bench.body_limit              # 300 MB per upload
    python -m bench.body_limit --megabytes 50

Daphne serves the project (a throwaway SQLite file) in a subprocess. Each case
POSTs a body of --megabytes to /api/v1/tasks, chunked (no Content-Length) or
with the length declared, without a token, with a wrong one and with a valid
agent's, and reads the server's resident memory (VmRSS) before and after; then
3 MB bodies, under the server's cap (OMOI_MAX_REQUEST_BYTES) but over the
API's limit, which the API's guard refuses before reading them. Every one is
refused (401 or 413); the figure that matters is how much the server grew. Prints a table, writes bench/results/body-limit.json, and exits 1
when an answer is not the expected refusal or the server grew by more than
--max-growth megabytes in any case.
"""

import argparse
import contextlib
import http.client
import json
import os
import platform
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime

from .api import RESULTS, ROOT, daphne
from .databases import sqlite_database

MEGABYTE = 1024 * 1024


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.body_limit", description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=int, default=300, help="size of each upload (default 300)")
    parser.add_argument(
        "--max-growth", type=int, default=32, help="largest acceptable growth of the server, in MB (default 32)"
    )
    return parser.parse_args(argv)


def resident_megabytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def upload(port, megabytes, *, token, chunked):
    """POST `megabytes` of body; (status, seconds). A server that closes early counts as its answer."""
    block = b" " * MEGABYTE
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    started = time.perf_counter()
    connection.putrequest("POST", "/api/v1/tasks")
    connection.putheader("Content-Type", "application/json")
    if token:
        connection.putheader("Authorization", f"Bearer {token}")
    connection.putheader(*(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", megabytes * MEGABYTE)))
    connection.endheaders()
    with contextlib.suppress(ConnectionError):
        for _ in range(megabytes):
            connection.send(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
        if chunked:
            connection.send(b"0\r\n\r\n")
    try:
        response = connection.getresponse()
        response.read()
        status = response.status
    except (ConnectionError, http.client.HTTPException):
        status = "closed"
    connection.close()
    return status, time.perf_counter() - started


def main(argv=None):
    args = parse_args(argv)
    with sqlite_database() as path:
        env = dict(
            os.environ,
            DJANGO_SETTINGS_MODULE="omoi_site.settings",
            DEBUG="false",
            SECRET_KEY=secrets.token_urlsafe(50),
            ALLOWED_HOSTS="127.0.0.1",
            SQLITE_PATH=path,
            LOG_LEVEL="ERROR",
        )
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
        subprocess.run([*manage, "bootstrap"], cwd=ROOT, env=env, check=True, capture_output=True)
        created = subprocess.run(
            [*manage, "create_agent", "bench-uploader", "--board", "demo"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        token = next(word for word in created.stdout.split() if word.startswith("omoi_"))
        wrong = "omoi_" + secrets.token_urlsafe(32)
        # (case, megabytes, token, chunked, expected): the large ones meet the server's cap, the small ones
        # (under the cap, over the API's limit) the API's guard.
        cases = [
            ("chunked, no token", args.megabytes, None, True, 413),
            ("chunked, wrong token", args.megabytes, wrong, True, 413),
            ("chunked, valid token", args.megabytes, token, True, 413),
            ("declared length, no token", args.megabytes, None, False, 413),
            ("declared length, valid token", args.megabytes, token, False, 413),
            ("3 MB chunked, no token", 3, None, True, 401),
            ("3 MB chunked, wrong token", 3, wrong, True, 401),
            ("3 MB chunked, valid token", 3, token, True, 413),
        ]
        rows = []
        with daphne(env) as port:
            pid = server_pid(port)
            for name, megabytes, case_token, chunked, expected in cases:
                before = resident_megabytes(pid)
                status, seconds = upload(port, megabytes, token=case_token, chunked=chunked)
                time.sleep(1)  # let the server finish the request and free what it held
                after = resident_megabytes(pid)
                rows.append(
                    {
                        "case": name,
                        "status": status,
                        "expected": expected,
                        "seconds": round(seconds, 2),
                        "rss_before_mb": round(before, 1),
                        "rss_after_mb": round(after, 1),
                        "growth_mb": round(after - before, 1),
                    }
                )
    results = {
        "megabytes": args.megabytes,
        "server": "omoi_site.server (Daphne), 1 process, SQLite",
        "python": platform.python_version(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cases": rows,
    }
    print(report(results))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "body-limit.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Written to {path.relative_to(ROOT)}.")
    failures = [row["case"] for row in rows if row["status"] != row["expected"] or row["growth_mb"] > args.max_growth]
    if failures:
        print(
            f"Not refused as expected, or the server grew more than {args.max_growth} MB: {failures}", file=sys.stderr
        )
        return 1
    return 0


def server_pid(port):
    """The pid of the server process on `port`."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as handle:
                arguments = handle.read().split(b"\0")
                if b"omoi_site.server" in arguments and str(port).encode() in arguments:
                    return int(entry)
    raise RuntimeError(f"no Daphne process serves port {port}")


def report(results):
    lines = [
        f"Uploads to POST /api/v1/tasks, {results['megabytes']} MB unless said ({results['server']})",
        f"{'case':<32} {'status':>6} {'seconds':>8} {'RSS before':>11} {'after':>7} {'growth':>7}",
    ]
    for row in results["cases"]:
        lines.append(
            f"{row['case']:<32} {row['status']!s:>6} {row['seconds']:>8.2f} {row['rss_before_mb']:>9.0f} MB "
            f"{row['rss_after_mb']:>4.0f} MB {row['growth_mb']:>4.0f} MB"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
