"""Benchmarks of the Kanban board: the board page and moves, at 1,000 and 10,000 tickets.

    python -m bench.board                               # SQLite, in a temporary file
    DATABASE_URL=postgres://…/omoi python -m bench.board  # PostgreSQL, in a new omoi_bench database

The database is always a new one, migrated fresh and removed at the end: a
temporary SQLite file, or beside DATABASE_URL's database a `<name>_bench` one
(kept as named when the name already ends in "bench"). Times are server time:
the request goes through the middleware, the view and the template in this
process, through Django's test client, with no network. Prints a table and
one line per figure, writes bench/results/<database>.json, and exits 1 when
a count of queries depends on the number of tickets or changes from one run
to the next.
"""

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

from .databases import database_version, on_new_database
from .facts import machine_facts

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

PAGE_LABELS = {"plain": "board page", "lanes": "?lanes=priority", "search": "?q={word}"}
MOVE_LABELS = {
    "view_reorder": "view: reorder in Backlog",
    "view_transfer": "view: Backlog → Analyzing",
    "service_reorder": "ticket_move: reorder in Backlog",
    "service_transfer": "ticket_move: Backlog → Analyzing",
}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.board", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="tickets on each board measured (default 1000,10000)")
    parser.add_argument("--runs", type=int, default=30, help="timed requests of each board page (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before each series (default 3)")
    parser.add_argument("--moves", type=int, default=200, help="timed moves of each kind (default 200)")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the generated data and moves")
    parser.add_argument(
        "--skip-unreachable",
        action="store_true",
        help="exit 0 with a note when DATABASE_URL's server does not answer (make bench's PostgreSQL pass)",
    )
    args = parser.parse_args(argv)
    args.sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    if args.runs < 2 or args.warmup < 1 or args.moves < 2:
        parser.error("--runs and --moves need at least 2, --warmup at least 1")
    return args


def configure_environment():
    """Settings as in production where they change the timings; read by omoi_site.settings at django.setup()."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "omoi_site.settings"
    os.environ["DEBUG"] = "false"
    if not os.environ.get("SECRET_KEY"):
        os.environ["SECRET_KEY"] = secrets.token_urlsafe(50)
    os.environ["ALLOWED_HOSTS"] = "testserver"
    # The in-memory channel layer: broadcasts cost a call, not a Redis round trip, so the figures are the database's.
    os.environ.pop("REDIS_URL", None)
    os.environ["LOG_LEVEL"] = "ERROR"


def main(argv=None):
    args = parse_args(argv)
    configure_environment()

    return on_new_database(lambda where, env: run(args, where), skip_unreachable=args.skip_unreachable)


def run(args, where):
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections

    try:
        print(f"Migrating a new {connection.display_name} database ({where})…", flush=True)
        call_command("migrate", interactive=False, verbosity=0)
        from bench import scenarios

        results = scenarios.run(
            sizes=args.sizes,
            runs=args.runs,
            warmup=args.warmup,
            moves=args.moves,
            seed=args.seed,
            progress=lambda text: print(text, flush=True),
        )
        database = {"vendor": connection.vendor, "version": database_version(connection), "where": where}
    finally:
        connections.close_all()

    results = {
        "database": database,
        **machine_facts(),
        "settings": {"runs": args.runs, "warmup": args.warmup, "moves": args.moves, "seed": args.seed},
        "search_word": scenarios.SEARCH_WORD,
        **results,
    }
    results["failures"] = check(results)
    print(report(results))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{database['vendor']}.json"
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"Written to {path.relative_to(ROOT)}.")
    return 1 if results["failures"] else 0


def _counts(figure):
    seen = figure["queries_seen"]
    return str(seen[0]) if len(seen) == 1 else f"{seen[0]}–{seen[-1]}"


def _renumbered(figure):
    renumbered = figure.get("renumbered")
    if not renumbered:
        return "never"
    return (
        f"{renumbered['runs']} times, median {renumbered['median_ms']:.1f} ms, max {renumbered['max_ms']:.1f} ms, "
        f"{_counts(renumbered)} queries"
    )


def check(results):
    """Query counts must not depend on the board's size, nor vary between runs of the same operation."""
    failures = []
    sizes = results["sizes"]
    for section, labels in (("page", PAGE_LABELS), ("moves", MOVE_LABELS)):
        for case in labels:
            by_size = {size: data[section][case] for size, data in sizes.items()}
            for size, figure in by_size.items():
                if len(figure["queries_seen"]) > 1:
                    failures.append(f"{section} {case}: {_counts(figure)} queries from one run to the next at {size:,}")
            if len({tuple(figure["queries_seen"]) for figure in by_size.values()}) > 1:
                described = ", ".join(f"{_counts(figure)} at {size:,}" for size, figure in by_size.items())
                failures.append(f"{section} {case}: the query count depends on the number of tickets ({described})")
    return failures


def report(results):
    database, settings = results["database"], results["settings"]
    name = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}.get(database["vendor"], database["vendor"])
    vendor = database["vendor"]
    lines = [
        "",
        f"== Board benchmark: {name} {database['version']} ({database['where']}) ==",
        f"Django {results['django']}, Python {results['python']}; server time in ms (test client in process, "
        "DEBUG off, in-memory channel layer)",
        f"Load average {' '.join(str(load) for load in results['load_average'])} on {results['cpus']} CPUs "
        "at the end: other work on the machine inflates the figures, p90 and p99 first.",
        "",
        f"Board page, GET /boards/<slug>/ as a member: {settings['runs']} timed runs after {settings['warmup']} "
        f"warm-up (the p99 of {settings['runs']} runs is about the slowest)",
        f"{'case':<26}{'tickets':>8}{'median':>9}{'p90':>9}{'p99':>9}{'queries':>9}{'KB':>8}",
    ]
    for case, label in PAGE_LABELS.items():
        for data in results["sizes"].values():
            figure = data["page"][case]
            text = label.format(word=results["search_word"])
            if case == "search":
                text += f" ({data['search_matches']:,} match)"
            lines.append(
                f"{text:<26}{data['tickets']:>8,}{figure['median_ms']:>9.1f}{figure['p90_ms']:>9.1f}"
                f"{figure['p99_ms']:>9.1f}{_counts(figure):>9}{figure['bytes'] / 1024:>8.1f}"
            )
    lines += [
        "",
        f"Moves: {settings['moves']} timed of each kind after {settings['warmup']} warm-up; the view with HX-Request",
        f"{'case':<36}{'tickets':>8}{'median':>9}{'p99':>9}{'queries':>9}   renumbered the column",
    ]
    for case, label in MOVE_LABELS.items():
        for data in results["sizes"].values():
            figure = data["moves"][case]
            lines.append(
                f"{label:<36}{data['tickets']:>8,}{figure['median_ms']:>9.2f}{figure['p99_ms']:>9.2f}"
                f"{_counts(figure):>9}   {_renumbered(figure)}"
            )
    populated = ", ".join(
        f"{data['tickets']:,} in {data['populate_seconds']:.1f} s" for data in results["sizes"].values()
    )
    lines += ["", f"Boards populated: {populated}.", ""]
    for size, data in results["sizes"].items():
        for case, figure in data["page"].items():
            lines.append(
                f"{vendor} page {case} tickets={size} median_ms={figure['median_ms']} p90_ms={figure['p90_ms']} "
                f"p99_ms={figure['p99_ms']} queries={_counts(figure)} bytes={figure['bytes']}"
            )
        for case, figure in data["moves"].items():
            lines.append(
                f"{vendor} move {case} tickets={size} median_ms={figure['median_ms']} p99_ms={figure['p99_ms']} "
                f"queries={_counts(figure)} renumbered={figure.get('renumbered', {}).get('runs', 0)}"
            )
    lines.append("")
    if results["failures"]:
        lines += [f"FAIL: {failure}" for failure in results["failures"]]
    else:
        lines.append("OK: every query count is the same at every size and on every run.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
