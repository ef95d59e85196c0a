"""Throwaway databases for the benchmarks: never the developer's db.sqlite3, never an existing PostgreSQL database.

Nothing here imports Django: the database is chosen before Django reads its settings.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# Written on the databases this module creates: one carrying it may be dropped again, any other is left alone.
BENCH_COMMENT = "Omoi benchmark database: created and dropped by python -m bench.board"

ROOT = Path(__file__).resolve().parent.parent


class Refused(Exception):
    """The benchmarks will not run on this database; the message says why."""


class Unreachable(Exception):
    """The database server does not answer."""


@contextlib.contextmanager
def sqlite_database():
    """The path of a new SQLite file in a temporary directory, removed afterwards with its WAL files."""
    directory = tempfile.mkdtemp(prefix="omoi-bench-")
    try:
        yield str(Path(directory) / "bench.sqlite3")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def bench_database_name(name):
    """`omoi_bench` stays `omoi_bench`; any other name gets `_bench` added, so DATABASE_URL's own database is never used."""
    name = name or "omoi"
    return name if name.endswith("bench") else f"{name}_bench"


def describe(url):
    """The URL without its password, for printing."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


@contextlib.contextmanager
def postgres_database(url):
    """Create a fresh benchmark database beside the one `url` names; yield its URL; drop it at the end."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise Refused(f"The benchmarks run on PostgreSQL or, with DATABASE_URL unset, SQLite; not on {parts.scheme}.")
    name = bench_database_name(parts.path.lstrip("/"))
    # Like Django's own test databases, create and drop from the maintenance database.
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    database = sql.Identifier(name)
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise Unreachable(f"PostgreSQL at {describe(admin_url)} does not answer: {exc}".strip()) from None
    with admin:
        row = admin.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if row is not None:
            if row[0] != BENCH_COMMENT:
                raise Refused(
                    f"Database {name} already exists and was not created by the benchmarks: it is left alone. "
                    "Point DATABASE_URL at another database name."
                )
            # Left behind by an interrupted run.
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(database))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(database))
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(database, sql.Literal(BENCH_COMMENT)))
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database))


def on_new_database(run, *, skip_unreachable):
    """Run `run(where, env)` on a new database, chosen as the benchmarks choose it; its exit status.

    DATABASE_URL set: a new PostgreSQL database beside it; unset: a temporary
    SQLite file. `where` describes it for printing (no password) and `env`
    holds the variable that points a child process at it. A server that does
    not answer ends the run with its message, or skips it with
    `skip_unreachable` (make bench's PostgreSQL passes).
    """
    import os
    import time

    url = os.environ.get("DATABASE_URL", "")
    started = time.perf_counter()
    try:
        with postgres_database(url) if url else sqlite_database() as location:
            env = {"DATABASE_URL": location} if url else {"SQLITE_PATH": location}
            os.environ.update(env)
            status = run(describe(location) if url else "a temporary file", env)
    except Refused as exc:
        raise SystemExit(str(exc)) from None
    except Unreachable as exc:
        if not skip_unreachable:
            raise SystemExit(str(exc)) from None
        print(f"{exc}\nPostgreSQL pass skipped.")
        return 0
    print(f"Done in {time.perf_counter() - started:.0f} s.")
    return status


def database_version(connection):
    """The server's version, for the results (Django's connection, once Django is set up)."""
    if connection.vendor == "sqlite":
        return connection.Database.sqlite_version
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0]


def each_database_apart(module, args, options):
    """Run `python -m <module> --database <each>` for SQLite, then PostgreSQL; 1 when either run failed.

    Django reads its settings once per process, so each database gets a process of its own. `options` are
    the command-line options passed on from `args` (their values, and --skip-unreachable when given).
    """
    passed = [str(value) for option in options for value in (option, getattr(args, option[2:].replace("-", "_")))]
    passed += ["--skip-unreachable"] if args.skip_unreachable else []
    status = 0
    for database in ("sqlite", "postgresql"):
        env = dict(os.environ)
        if database == "sqlite":
            env.pop("DATABASE_URL", None)
        command = [sys.executable, "-m", module, "--database", database, *passed]
        status = max(status, 1 if subprocess.run(command, cwd=ROOT, env=env).returncode else 0)
    return status
