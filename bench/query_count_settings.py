"""Settings for a benchmark's server that counts its own database queries: the project's settings, plus a counter.

    DJANGO_SETTINGS_MODULE=bench.query_count_settings OMOI_QUERY_COUNT_FILE=/tmp/q.json daphne …

Every query the process sends through Django (a cursor's execute or
executemany, on any connection, any thread) is counted, and the total is
written to OMOI_QUERY_COUNT_FILE every half second as
{"queries": n, "at": <time.time()>}, so that bench.live can read how many
queries idle pages cost on SQLite, where the database keeps no statistics.
Transactions' BEGIN and COMMIT are not counted: they do not go through a
cursor. Used only by the benchmarks.
"""

import json
import os
import threading
import time

from django.db.backends.signals import connection_created

from omoi_site.settings import *  # noqa: F403

_count_file = os.environ.get("OMOI_QUERY_COUNT_FILE")
_lock = threading.Lock()
_queries = 0


def _count(execute, sql, params, many, context):
    global _queries
    with _lock:
        _queries += 1
    return execute(sql, params, many, context)


def _install(sender, connection, **kwargs):
    # Without persistent connections the same wrapper object connects again and again: install once.
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


def _write_counts():
    while True:
        temporary = f"{_count_file}.tmp"
        with open(temporary, "w") as file:
            json.dump({"queries": _queries, "at": time.time()}, file)
        os.replace(temporary, _count_file)
        time.sleep(0.5)


if _count_file:
    connection_created.connect(_install, weak=False)
    threading.Thread(target=_write_counts, name="query-count", daemon=True).start()
