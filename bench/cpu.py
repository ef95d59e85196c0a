"""CPU time of the server, the database and Redis, from the processes' own accounting in /proc (Linux).

Used by bench.api and bench.live; not run on its own. A process's utime +
stime in /proc/<pid>/stat covers all its threads. PostgreSQL runs one process
per connection, so the database's CPU is the postmaster's own, its live
children's (backends, checkpointer, writers) and, through the postmaster's
cutime + cstime, the children that have exited: with no persistent
connections every request's backend exits within the run, and is counted
there once the postmaster has reaped it.

The figures are for the whole database server: another database busy on the
same server during a run counts too. The benchmarks report the other
databases' transactions beside them, so such a run can be told apart.
"""

import contextlib
import os
from pathlib import Path

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def stat_fields(pid):
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses), or None.

    Index 0 is the state (field 3 of proc(5)), so field n is at index n - 3.
    """
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def own_seconds(fields):
    """utime + stime, in seconds, from stat_fields()."""
    return (int(fields[11]) + int(fields[12])) / TICKS


def reaped_seconds(fields):
    """cutime + cstime: the CPU of the children the process has waited for, in seconds."""
    return (int(fields[13]) + int(fields[14])) / TICKS


def process_seconds(pid):
    """CPU seconds the process has used so far, all threads; None when it is gone."""
    fields = stat_fields(pid)
    return None if fields is None else own_seconds(fields)


def all_processes():
    """{pid: stat fields} of every process readable now."""
    found = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = stat_fields(entry.name)
            if fields is not None:
                found[int(entry.name)] = fields
    return found


def command_name(pid):
    with contextlib.suppress(OSError):
        return (PROC / str(pid) / "comm").read_text().strip()
    return ""


def command_line(pid):
    with contextlib.suppress(OSError):
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


def tree_seconds(root):
    """CPU seconds of `root`, its live children and its reaped children; None when `root` is gone.

    The children are read before the root: a child exiting in between is
    then counted twice (alive, then reaped) for that one instant rather
    than not at all.
    """
    children = [fields for fields in all_processes().values() if int(fields[1]) == root]
    live = sum(own_seconds(fields) for fields in children)
    fields = stat_fields(root)
    if fields is None:
        return None
    return own_seconds(fields) + reaped_seconds(fields) + live


def postmaster_pid(connection):
    """The pid of the PostgreSQL server a psycopg/Django cursor-capable `connection` talks to, or None.

    From postmaster.pid in its data directory when this process may read it,
    else the one `postgres` process on this machine whose parent is not one
    (started with that data directory, when several run). None when the
    server is on another machine or cannot be found.
    """
    with connection.cursor() as cursor:
        cursor.execute("SHOW data_directory")
        data_directory = cursor.fetchone()[0]
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((Path(data_directory) / "postmaster.pid").read_text().split()[0])
        if command_name(pid) in ("postgres", "postmaster"):
            return pid
    processes = all_processes()
    postgres = {pid for pid in processes if command_name(pid) in ("postgres", "postmaster")}
    roots = [pid for pid in postgres if int(processes[pid][1]) not in postgres]
    matching = [pid for pid in roots if data_directory in command_line(pid)]
    candidates = matching or roots
    return candidates[0] if len(candidates) == 1 else None


def redis_pid(port):
    """The pid of the redis-server listening on `port` of this machine (judged by its command line), or None."""
    servers = [
        int(entry.name)
        for entry in PROC.iterdir()
        if entry.name.isdigit() and command_name(entry.name) == "redis-server"
    ]
    matching = [pid for pid in servers if f":{port}" in command_line(pid)]
    candidates = matching or servers
    return candidates[0] if len(candidates) == 1 else None


class CpuMeter:
    """Reads the CPU seconds of the server process, the database server and Redis (those whose pid is known)."""

    def __init__(self, *, server_pid, postmaster_pid=None, redis_pid=None, database_in_server=False):
        self.server_pid = server_pid
        self.postmaster_pid = postmaster_pid
        self.redis_pid = redis_pid
        # SQLite: the database's work is done by the server process itself.
        self.database_in_server = database_in_server

    def read(self):
        return {
            "server": process_seconds(self.server_pid),
            "database": tree_seconds(self.postmaster_pid) if self.postmaster_pid else None,
            "redis": process_seconds(self.redis_pid) if self.redis_pid else None,
        }

    def per_unit(self, before, after, units):
        """Milliseconds of CPU per unit (request, second…) between two reads: server, database, total, redis.

        The total is the server's plus the database's (the server's alone on
        SQLite, which runs inside it); None where a figure is unknown.
        """

        def delta(name):
            if before[name] is None or after[name] is None or units <= 0:
                return None
            return round((after[name] - before[name]) * 1000 / units, 3)

        server, database = delta("server"), delta("database")
        if self.database_in_server:
            total = server
        else:
            total = None if server is None or database is None else round(server + database, 3)
        return {"server_ms": server, "database_ms": database, "total_ms": total, "redis_ms": delta("redis")}
