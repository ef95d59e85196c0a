"""The benchmark cases: a board filled with tickets, its page read, its cards moved. Import after django.setup()."""

import random
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from functools import partial

from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from board.models import Board, Priority, Task, Ticket
from board.selectors import PAGE_SIZE, BoardFilters
from board.services import POSITION_GAP, ticket_create, ticket_move
from discoveries.models import Discovery
from phases.defaults import DEFAULT_WORKFLOW_SLUG
from phases.models import Workflow

# Where the tickets are: a long backlog, a long tail of done work, a little in flight, some blocked.
PHASE_SHARE = {
    "PHASE_BACKLOG": 0.50,
    "PHASE_REQUIREMENTS": 0.04,
    "PHASE_DESIGN": 0.04,
    "PHASE_IMPLEMENTATION": 0.08,
    "PHASE_TESTING": 0.04,
    "PHASE_DEPLOYMENT": 0.02,
    "PHASE_DONE": 0.23,
    "PHASE_BLOCKED": 0.05,
}
PRIORITY_WEIGHT = {Priority.LOW: 25, Priority.MEDIUM: 45, Priority.HIGH: 22, Priority.CRITICAL: 8}
CREATED_BY_SERVICE = 5  # the rest are bulk-created

VERBS = ["Fix", "Add", "Refactor", "Speed up", "Document", "Remove", "Migrate", "Test", "Redesign", "Audit"]
SUBJECTS = [
    "login form",
    "invoice export",
    "search index",
    "payment retry",
    "user settings",
    "audit log",
    "email digest",
    "API pagination",
    "dark mode",
    "report builder",
    "CSV import",
    "session timeout",
]
AREAS = ["for admins", "on mobile", "in the API", "for new teams", "after upgrade", "in billing", "on the dashboard"]
SENTENCES = [
    "Customers report that the page takes several seconds to respond.",
    "The current behaviour does not match the documentation.",
    "Support has had a dozen tickets about this since the last release.",
    "This blocks the quarterly reporting for two large accounts.",
    "The fix should come with a regression test and a changelog entry.",
    "Agents found this while working on a related change.",
    "Acceptance: the scenario in the linked thread passes end to end.",
]
SEARCH_WORD = "invoice"  # in one subject of twelve: a filter that keeps about 8% of the tickets

# Board pages measured: (case, query string).
PAGE_CASES = [("plain", ""), ("lanes", "lanes=priority"), ("search", f"q={SEARCH_WORD}")]


def phase_counts(total):
    """How many tickets each phase gets; the rounding remainder goes to Done."""
    counts = {key: int(total * share) for key, share in PHASE_SHARE.items()}
    counts["PHASE_DONE"] += total - sum(counts.values())
    return counts


def _title(rng):
    return f"{rng.choice(VERBS)} {rng.choice(SUBJECTS)} {rng.choice(AREAS)}"


def _description(rng):
    return " ".join(rng.sample(SENTENCES, 3))


def _priority(rng):
    return rng.choices(list(PRIORITY_WEIGHT), weights=list(PRIORITY_WEIGHT.values()))[0]


def bench_user():
    user, _ = get_user_model().objects.get_or_create(username="bench-member", defaults={"email": "bench@example.org"})
    return user


def populate(*, size, user, rng):
    """A board of `size` tickets on the default workflow, with tasks and discoveries on some cards.

    Tickets are bulk-created, with gapped positions in each column, and a few
    go through `ticket_create` as the site would make them.
    """
    workflow = Workflow.objects.get(slug=DEFAULT_WORKFLOW_SLUG)
    board = Board.objects.create(name=f"Bench {size:,}", slug=f"bench-{size}", workflow=workflow)
    board.members.add(user)
    phases = {phase.key: phase for phase in workflow.phases.all()}
    column_of = {
        phase.pk: column.pk for column in workflow.columns.prefetch_related("phases") for phase in column.phases.all()
    }

    keys = [key for key, count in phase_counts(size - CREATED_BY_SERVICE).items() for _ in range(count)]
    rng.shuffle(keys)
    last_position = defaultdict(int)
    tickets = []
    for key in keys:
        phase = phases[key]
        last_position[column_of[phase.pk]] += POSITION_GAP
        blocked = key == "PHASE_BLOCKED" or rng.random() < 0.02
        tickets.append(
            Ticket(
                board=board,
                title=_title(rng),
                description=_description(rng),
                priority=_priority(rng),
                phase=phase,
                position=last_position[column_of[phase.pk]],
                is_blocked=blocked,
                blocked_reason="Waiting for access to the staging database." if blocked else "",
                created_by=user,
            )
        )
    Ticket.objects.bulk_create(tickets, batch_size=1000)
    for _ in range(CREATED_BY_SERVICE):
        ticket_create(
            board=board, title=_title(rng), description=_description(rng), priority=_priority(rng), actor=user
        )
    _add_tasks(board, rng)
    return board


def _add_tasks(board, rng):
    """One to four tasks on 40% of the tickets past the backlog, and an open discovery on some of them."""
    tasks = []
    started = Ticket.objects.filter(board=board).exclude(phase__key="PHASE_BACKLOG").only("pk", "phase_id", "priority")
    for ticket in started:
        if rng.random() >= 0.4:
            continue
        for number in range(rng.randint(1, 4)):
            status = rng.choice(
                [Task.Status.COMPLETED, Task.Status.COMPLETED, Task.Status.RUNNING, Task.Status.PENDING]
            )
            tasks.append(
                Task(
                    ticket_id=ticket.pk,
                    phase_id=ticket.phase_id,
                    title=f"Step {number + 1}",
                    status=status,
                    priority=ticket.priority,
                    created_by="agent:bench",
                )
            )
    Task.objects.bulk_create(tasks, batch_size=1000)
    discoveries = [
        Discovery(
            source_task=task,
            discovery_type=Discovery.Type.BUG,
            description="Found while working on the task.",
            discovered_by="agent:bench",
        )
        for task in Task.objects.filter(ticket__board=board).only("pk")
        if rng.random() < 0.1
    ]
    Discovery.objects.bulk_create(discoveries, batch_size=1000)


# Measuring


class QueryCounter:
    """Counts queries at almost no cost, to check each timed run (CaptureQueriesContext would slow it down)."""

    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


@dataclass
class Run:
    seconds: float
    queries: int
    renumbered: bool  # a move that found no room between its neighbours and spread the column out again


@dataclass
class Measurement:
    timed: list  # of Run
    warm: list  # of Run, untimed, their queries captured by CaptureQueriesContext
    size: int = 0  # bytes of the last response

    def summary(self):
        ms = [run.seconds * 1000 for run in self.timed]
        percentiles = statistics.quantiles(ms, n=100, method="inclusive")
        usual = [run for run in self.warm + self.timed if not run.renumbered]
        captured = [run.queries for run in self.warm if not run.renumbered]
        renumbered = [run for run in self.timed if run.renumbered]
        figures = {
            "runs": len(ms),
            "median_ms": round(statistics.median(ms), 2),
            "p90_ms": round(percentiles[89], 2),
            "p99_ms": round(percentiles[98], 2),
            "min_ms": round(min(ms), 2),
            "max_ms": round(max(ms), 2),
            # Per operation, as CaptureQueriesContext counts them; `queries_seen` has every count met, warm-up
            # and timed runs alike, and holds one value when the count is fixed.
            "queries": captured[-1] if captured else None,
            "queries_seen": sorted({run.queries for run in usual}),
        }
        if renumbered:
            figures["renumbered"] = {
                "runs": len(renumbered),
                "median_ms": round(statistics.median(run.seconds * 1000 for run in renumbered), 2),
                "max_ms": round(max(run.seconds * 1000 for run in renumbered), 2),
                "queries_seen": sorted({run.queries for run in renumbered}),
            }
        return figures


def measure(prepare, *, runs, warmup, check):
    """Time `runs` operations after `warmup` untimed ones whose queries CaptureQueriesContext counts.

    `prepare()` returns the next operation and whether it will renumber a
    column, doing its own reads outside the timing; `check` refuses a wrong result.
    """
    counter, warm, timed, missed = QueryCounter(), [], [], set()
    with connection.execute_wrapper(counter):
        for index in range(warmup + runs):
            operation, renumbers = prepare()
            before = counter.count
            if index < warmup:
                with CaptureQueriesContext(connection) as captured:
                    result = operation()
                warm.append(Run(0.0, len(captured), renumbers))
                missed.add(len(captured) - (counter.count - before))
            else:
                start = time.perf_counter()
                result = operation()
                timed.append(Run(time.perf_counter() - start, counter.count - before, renumbers))
            check(result)
    # The counter misses what CaptureQueriesContext logs outside cursors (COMMIT, and BEGIN on PostgreSQL):
    # the difference, taken on the warm-up runs, brings the timed runs' counts to the same measure.
    for run in timed:
        run.queries += max(missed)
    size = len(result.content) if hasattr(result, "content") else 0
    return Measurement(timed=timed, warm=warm, size=size)


def _expect_page(response):
    if response.status_code != 200:
        raise AssertionError(f"The board page answered {response.status_code}.")


def _expect_moved(response):
    if response.status_code != 200 or b"message-success" not in response.content:
        raise AssertionError(f"The move answered {response.status_code}: {response.content[:500]!r}")


def measure_pages(client, board, *, runs, warmup):
    """The board page, as a member gets it, for each case of PAGE_CASES."""
    url = reverse("board:detail", args=[board.slug])
    results = {}
    for case, query in PAGE_CASES:
        full = f"{url}?{query}" if query else url
        results[case] = measure(
            lambda full=full: (partial(client.get, full), False), runs=runs, warmup=warmup, check=_expect_page
        )
    return results


class ColumnOrder:
    """A column's card ids top to bottom, kept in step with the moves the benchmark makes."""

    def __init__(self, board, column):
        self.column = column
        self.ids = list(
            Ticket.objects.filter(board=board, phase__columns=column)
            .order_by("position", "id")
            .values_list("id", flat=True)
        )

    def drop_slot(self, rng):
        """A place between two visible cards, as a drag and drop would give: (slot, previous id, next id)."""
        slot = rng.randrange(1, min(PAGE_SIZE, len(self.ids)))
        return slot, self.ids[slot - 1], self.ids[slot]


def reorder_plan(order, rng):
    """Take a visible card and drop it between two other visible cards of the same column."""
    ticket_id = order.ids.pop(rng.randrange(min(PAGE_SIZE, len(order.ids))))
    slot, previous_id, next_id = order.drop_slot(rng)
    order.ids.insert(slot, ticket_id)
    return ticket_id, order.column, previous_id, next_id


def transfer_plan(source, target, rng):
    """Take a card from the source column (from its end, leaving the visible ones for reorders) into the target."""
    ticket_id = source.ids.pop()
    slot, previous_id, next_id = target.drop_slot(rng)
    target.ids.insert(slot, ticket_id)
    return ticket_id, target.column, previous_id, next_id


def _renumbers(previous_id, next_id):
    """Whether dropping a card between these neighbours finds the gap used up, and so renumbers the column."""
    positions = dict(Ticket.objects.filter(pk__in=[previous_id, next_id]).values_list("pk", "position"))
    return positions[next_id] - positions[previous_id] <= 1


def measure_moves(client, board, user, *, moves, warmup, rng):
    """Moves through the view (htmx) and through the service alone: reorders in Backlog, Backlog → Analyzing.

    Analyzing has a `warn` WIP limit that the board is already over, so every
    move into it takes the WIP path and is allowed (Backlog → Requirements
    Analysis is a transition of the default workflow).
    """
    columns = {column.key: column for column in board.workflow.columns.all()}
    backlog, analyzing = ColumnOrder(board, columns["backlog"]), ColumnOrder(board, columns["analyzing"])
    needed = 2 * (moves + warmup) + PAGE_SIZE
    if len(backlog.ids) < needed:
        raise RuntimeError(f"Backlog has {len(backlog.ids)} cards; {needed} are needed for {moves} moves.")

    def through_view(plan):
        def prepare():
            ticket_id, column, previous_id, next_id = plan()
            url = reverse("board:ticket-move", args=[board.slug, ticket_id])
            data = {"column": column.key, "previous": previous_id, "next": next_id}
            move = partial(client.post, url, data, headers={"HX-Request": "true"})
            return move, _renumbers(previous_id, next_id)

        return prepare

    def through_service(plan):
        def prepare():
            ticket_id, column, previous_id, next_id = plan()
            ticket = Ticket.objects.get(pk=ticket_id)
            move = partial(
                ticket_move, ticket=ticket, column=column, actor=user, previous_id=previous_id, next_id=next_id
            )
            return move, _renumbers(previous_id, next_id)

        return prepare

    def reorder():
        return reorder_plan(backlog, rng)

    def transfer():
        return transfer_plan(backlog, analyzing, rng)

    def moved_by_service(ticket):
        if ticket.version < 2:
            raise AssertionError(f"Ticket #{ticket.pk} was not moved.")

    options = {"runs": moves, "warmup": warmup}
    return {
        "view_reorder": measure(through_view(reorder), check=_expect_moved, **options),
        "view_transfer": measure(through_view(transfer), check=_expect_moved, **options),
        "service_reorder": measure(through_service(reorder), check=moved_by_service, **options),
        "service_transfer": measure(through_service(transfer), check=moved_by_service, **options),
    }


def run(*, sizes, runs, warmup, moves, seed, progress):
    """Fill a board at each size, then measure its page and its moves; returns plain data for the report."""
    rng = random.Random(seed)
    user = bench_user()
    client = Client()
    client.force_login(user)
    results = {"sizes": {}}
    for size in sizes:
        progress(f"Populating a board with {size:,} tickets…")
        start = time.perf_counter()
        board = populate(size=size, user=user, rng=rng)
        populate_seconds = time.perf_counter() - start
        tickets = Ticket.objects.filter(board=board).count()
        matching = Ticket.objects.filter(board=board).filter(BoardFilters(text=SEARCH_WORD).q()).count()
        progress(f"  {tickets:,} tickets in {populate_seconds:.1f} s; measuring the board page…")
        pages = measure_pages(client, board, runs=runs, warmup=warmup)
        progress(f"  measuring {moves} moves of each kind…")
        move_results = measure_moves(client, board, user, moves=moves, warmup=warmup, rng=rng)
        results["sizes"][size] = {
            "tickets": tickets,
            "populate_seconds": round(populate_seconds, 2),
            "search_matches": matching,
            "page": {case: {**m.summary(), "bytes": m.size} for case, m in pages.items()},
            "moves": {case: m.summary() for case, m in move_results.items()},
        }
    return results
