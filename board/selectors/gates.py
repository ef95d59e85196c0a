"""Phase gates: whether a ticket's work in its phase is done, what is still missing, and where it goes next.

A gate passes when all of these hold:

- the ticket's phase is not terminal (terminal phases have no gate);
- the phase's default tasks were created for this visit (`ticket_phase_enter`),
  so a ticket does not race through a phase while its tasks are being made;
- every task counting for the phase (`Ticket.phase_tasks`; cancelled ones
  aside) is completed: an open task is work still under way, and a task that
  failed after its retries needs a person;
- every done-definition is met (`Ticket.done_criteria`) and every required
  expected output is found among the artifacts the phase's completed tasks
  reported (`output_check`);
- there is a next phase, and the ticket may enter it now: it is not marked
  blocked, and a `block` WIP limit on the next phase's column has room.

So a phase with no tasks passes only when it asks for nothing at all (no
default tasks, done-definitions or required outputs): an empty phase a ticket
simply walks through.

The next phase is the first phase of the column named by the ticket's
column's `auto_transition_to` that the ticket may enter; failing that (no
such column, or none of its phases allowed), the allowed transition with the
lowest `sequence_order` after the current phase's. Holding phases (Blocked)
are never a gate's destination.

`ticket_gates` judges many tickets in a fixed number of queries, whatever
their number: the orchestrator judges a batch per step, the ticket page one.
"""

import re
from dataclasses import dataclass, field

from django.db.models import BigIntegerField, Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce

from phases.models import BoardColumn, Phase

from ..models import PhaseHistory, Task, Ticket

TICKET_ID = "<ticket-id>"
# A validation rule the gate checks by itself; any other rule is shown to people, not checked.
RULE = re.compile(r"\s*(min_count|min_passing)\s*:\s*(\d{1,9})\s*", re.IGNORECASE)
# Longer artifact paths are not matched: a glob with many `**` is slow on a very long string.
MAX_PATH = 2000

# The three states a task counts in for the orchestrator's "did anything change?" (`with_task_counts`).
DONE = (Task.Status.COMPLETED,)
OPEN = Task.OPEN_STATUSES
OTHER = (Task.Status.FAILED, Task.Status.CANCELLED)


def phase_default_tasks(phase):
    """The tasks a ticket entering `phase` gets: `configuration["default_tasks"]`, entries with a title only.

    Workflow files are validated on load, but a row saved before that (or by
    hand) may hold anything; an entry that is not a titled mapping is skipped.
    """
    configuration = phase.configuration if isinstance(phase.configuration, dict) else {}
    entries = configuration.get("default_tasks")
    if not isinstance(entries, list):
        return []
    return [
        entry
        for entry in entries
        if isinstance(entry, dict) and isinstance(entry.get("title"), str) and entry["title"].strip()
    ]


def with_gate_facts(tickets):
    """Annotate what a gate reads from each ticket's history, inside the tickets' own query.

    `gate_visit`: the id of the ticket's latest phase history row, which
    brought it into its current phase (0 without history): together with the
    phase it names one visit, for which phase entry runs once.
    `gate_left_at`: when the ticket last left its current phase (None when it
    never did), so an earlier visit's work does not count (`Ticket.phase_tasks`).
    """
    latest = PhaseHistory.objects.filter(ticket_id=OuterRef("pk")).order_by("-id").values("id")[:1]
    left = (
        PhaseHistory.objects.filter(ticket_id=OuterRef("pk"), from_phase_id=OuterRef("phase_id"))
        .order_by("-created_at", "-id")
        .values("created_at")[:1]
    )
    return tickets.annotate(
        gate_visit=Coalesce(Subquery(latest), Value(0), output_field=BigIntegerField()),
        gate_left_at=Subquery(left),
    )


def with_task_counts(tickets):
    """Annotate `gate_done`, `gate_open` and `gate_other`: the ticket's tasks in its current phase by state.

    What the gate reads changes only when one of these counts does (a task is
    created, finishes, fails for good or is reopened), so the orchestrator
    compares them with the counts recorded at the last evaluation instead of
    judging every ticket on every pass.
    """

    def count(statuses):
        rows = (
            Task.objects.filter(ticket_id=OuterRef("pk"), phase_id=OuterRef("phase_id"), status__in=statuses)
            .order_by()
            .values("ticket_id")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return Coalesce(Subquery(rows), Value(0), output_field=IntegerField())

    return tickets.annotate(gate_done=count(DONE), gate_open=count(OPEN), gate_other=count(OTHER))


def task_counts(ticket, tasks):
    """The counts `with_task_counts` annotates, from loaded tasks."""
    mine = [task for task in tasks if task.phase_id == ticket.phase_id]
    return {
        "done": sum(task.status in DONE for task in mine),
        "open": sum(task.status in OPEN for task in mine),
        "other": sum(task.status in OTHER for task in mine),
    }


def glob_regex(pattern):
    """A compiled regular expression for a path glob: `**` spans folders, `*` and `?` stay within one."""
    parts, index = [], 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:[^/]*/)*")  # any number of folders, none included
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(parts), re.DOTALL)


def _number(value):
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _limit(output, name, rule):
    """A numeric check the output asks for: its own field first, else a `name: N` validation rule."""
    value = output.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(rule.group(2)) if rule and rule.group(1).lower() == name else None


@dataclass
class OutputCheck:
    """One expected output of a phase, held against the artifacts its completed tasks reported."""

    type: str
    pattern: str  # with <ticket-id> replaced
    required: bool
    validation_rule: str
    description: str
    satisfied: bool
    checked: bool  # False: a rule only a person can check (satisfied then means "something is there")
    matches: list
    why: str

    @property
    def label(self):
        return f"{self.type} {self.pattern}".strip() if self.pattern else f"{self.type} (any)"


def output_check(output, artifacts, ticket_id):
    """Whether the artifacts satisfy one expected output (a dict as stored on Phase.expected_outputs).

    An artifact matches when it is an object of the output's `type` whose
    `path` matches the output's `pattern` as a glob (`<ticket-id>` standing
    for the ticket's id); without a pattern any artifact of the type matches.
    One match is enough, unless the output asks for more: `min_count: N`
    matches, or `min_passing: N` (for tests: a matching artifact whose numeric
    `passed` is at least N). Both may be fields of the output or its
    validation rule; any other validation rule is shown, not checked.
    """
    kind = str(output.get("type") or output.get("artifact_type") or "")
    pattern = str(output.get("pattern") or "").replace(TICKET_ID, str(ticket_id))
    rule_text = output.get("validation_rule") or ""
    rule_text = rule_text if isinstance(rule_text, str) else str(rule_text)
    regex = glob_regex(pattern) if pattern else None
    matching = []
    for artifact in artifacts:
        if not isinstance(artifact, dict) or str(artifact.get("type", "")).casefold() != kind.casefold():
            continue
        path = artifact.get("path")
        if regex is not None and not (isinstance(path, str) and len(path) <= MAX_PATH and regex.fullmatch(path)):
            continue
        matching.append(artifact)
    paths = [str(artifact.get("path", "")) for artifact in matching]
    where = f" matching {pattern}" if pattern else ""

    rule = RULE.fullmatch(rule_text)
    min_count = _limit(output, "min_count", rule)
    min_passing = _limit(output, "min_passing", rule)
    problems = []
    if min_count is not None:
        if len(matching) < min_count:
            problems.append(f"{len(matching)} of the {min_count} {kind} artifacts{where} needed")
    elif not matching:
        problems.append(f"no {kind} artifact{where} reported")
    if min_passing is not None:
        passed = [number for number in (_number(a.get("passed")) for a in matching) if number is not None]
        if not passed:
            problems.append(f"no {kind} artifact{where} reports a passed count ({min_passing} passing needed)")
        elif max(passed) < min_passing:
            problems.append(f"the best run passed {max(passed):g}; {min_passing} needed")
    checked = rule is not None or not rule_text
    if problems:
        why = "; ".join(problems)
    else:
        why = "found: " + ", ".join(paths) if any(paths) else f"{len(matching)} found"
        if not checked:
            why += "; its validation rule is for a person to check"
    return OutputCheck(
        type=kind,
        pattern=pattern,
        required=output.get("required", True) is not False,
        validation_rule=rule_text,
        description=str(output.get("description") or ""),
        satisfied=not problems,
        checked=checked,
        matches=paths,
        why=why,
    )


@dataclass
class Gate:
    """A ticket's phase gate as judged now; `passed` says whether the orchestrator moves it to `target`."""

    ticket: Ticket
    phase: Phase
    terminal: bool = False
    criteria: list = field(default_factory=list)  # {"text", "met"} per done-definition
    outputs: list = field(default_factory=list)  # OutputCheck per expected output
    tasks_done: int = 0
    tasks_total: int = 0  # counting tasks, cancelled ones aside
    failed: list = field(default_factory=list)  # tasks that failed after their retries
    target: Phase | None = None
    target_column: BoardColumn | None = None
    hold: str = ""  # why the ticket may not enter the next phase now
    wip_full: bool = False
    awaiting_entry: bool = False
    refused: str = ""  # the transition service's refusal, when it had the last word
    visit: int = 0
    counts: dict = field(default_factory=dict)

    @property
    def met(self):
        return [item["text"] for item in self.criteria if item["met"]]

    @property
    def missing(self):
        return [item["text"] for item in self.criteria if not item["met"]]

    @property
    def outputs_missing(self):
        return [output for output in self.outputs if output.required and not output.satisfied]

    @property
    def tasks_open(self):
        return self.tasks_total - self.tasks_done - len(self.failed)

    @property
    def blockers(self):
        """Why the gate does not pass, one sentence per reason; empty when it passes."""
        if self.terminal:
            if self.phase.is_holding:
                return [f"{self.phase.name} holds tickets until a person moves them back."]
            return [f"{self.phase.name} is a terminal phase: tickets stay here."]
        reasons = []
        if self.awaiting_entry:
            reasons.append(f"Waiting for the tasks of {self.phase.name} to be created.")
        if self.failed:
            numbers = ", ".join(f"#{task.pk}" for task in self.failed)
            reasons.append(f"Failed after their retries: {numbers}; a person must retry or cancel them.")
        if self.tasks_open:
            reasons.append(f"{self.tasks_open} of {self.tasks_total} tasks still open.")
        if self.missing:
            reasons.append(f"{len(self.missing)} of {len(self.criteria)} done-definitions not met yet.")
        if self.outputs_missing:
            reasons.append("Required outputs missing: " + "; ".join(o.label for o in self.outputs_missing) + ".")
        if self.target is None:
            reasons.append(f"No next phase to move to from {self.phase.name}.")
        if self.hold:
            reasons.append(self.hold)
        if self.refused:
            reasons.append(self.refused)
        return reasons

    @property
    def passed(self):
        return not self.blockers

    @property
    def waiting_for_room(self):
        """Whether only a full column stands in the way: then room made by another ticket lets it pass."""
        return self.wip_full and not self.ticket.is_blocked and self.blockers == [self.hold]

    def summary(self):
        """What was met, for the transition's reason."""
        parts = [f"{self.tasks_done}/{self.tasks_total} tasks completed"]
        if self.criteria:
            parts.append(f"{len(self.criteria)} done-definitions met")
        required = [output for output in self.outputs if output.required]
        if required:
            parts.append(f"{len(required)} required outputs present")
        return ", ".join(parts) + (f"; on to {self.target.name}" if self.target else "")

    def outcome(self):
        """What was judged, as stored in Ticket.gate_state and sent with `phase_gate.evaluated`."""
        return {
            "passed": self.passed,
            "met": self.met,
            "missing": self.missing,
            "outputs_missing": [output.label for output in self.outputs_missing],
            "tasks": {"done": self.tasks_done, "total": self.tasks_total, "failed": [t.pk for t in self.failed]},
            "target": self.target.key if self.target else None,
            "hold": self.hold or self.refused,
            "waiting_for_room": self.waiting_for_room,
            "awaiting_entry": self.awaiting_entry,
        }

    def same_visit(self, state):
        return bool(state) and state.get("visit") == self.visit and state.get("phase") == self.phase.pk

    def state(self, stored):
        """What Ticket.gate_state holds after this evaluation (phase entry's mark of this visit kept)."""
        return {
            "visit": self.visit,
            "phase": self.phase.pk,
            "entered": self.same_visit(stored) and stored.get("entered") is True,
            "version": self.ticket.version,
            "workflow_version": self.phase.workflow.version,
            "tasks": self.counts,
            "outcome": self.outcome(),
        }


def recorded(stored):
    """A stored gate_state without its time, to compare with a new evaluation."""
    return {key: value for key, value in (stored or {}).items() if key != "at"}


def _add_facts(tickets):
    lacking = [ticket for ticket in tickets if not hasattr(ticket, "gate_visit")]
    if not lacking:
        return
    facts = with_gate_facts(Ticket.objects.filter(pk__in=[t.pk for t in lacking])).values_list(
        "pk", "gate_visit", "gate_left_at"
    )
    found = {pk: (visit, left_at) for pk, visit, left_at in facts}
    for ticket in lacking:
        ticket.gate_visit, ticket.gate_left_at = found.get(ticket.pk, (0, None))


def _order(phase):
    return (phase.sequence_order, phase.key)


def _target(phase, phases, column_of, columns):
    """(next phase, its column) for a ticket in `phase`: see the module's docstring."""
    column = column_of.get(phase.pk)
    auto = columns.get(column.auto_transition_to_id) if column and column.auto_transition_to_id else None
    if auto is not None:
        for shown in sorted(auto.phases.all(), key=_order):
            candidate = phases.get(shown.pk)
            if candidate and candidate != phase and not candidate.is_holding and phase.can_transition_to(candidate):
                return candidate, auto
    later = [
        phases[p.pk]
        for p in phase.allowed_transitions.all()
        if p.pk in phases and not phases[p.pk].is_holding and p.sequence_order > phase.sequence_order
    ]
    if not later:
        return None, None
    target = min(later, key=_order)
    return target, column_of.get(target.pk)


def ticket_gates(tickets, *, tasks=None):
    """The gates of `tickets`, in their order, in at most seven queries whatever their number.

    `tasks` maps a ticket id to its tasks when the caller has them already (at
    least those of the ticket's current phase); otherwise they are loaded
    here. Tickets from `with_gate_facts` cost no query for their history.
    """
    tickets = list(tickets)
    if not tickets:
        return []
    _add_facts(tickets)
    phase_ids = {ticket.phase_id for ticket in tickets}
    workflows = Phase.objects.filter(pk__in=phase_ids).values("workflow_id")
    phases = {
        phase.pk: phase
        for phase in Phase.objects.filter(workflow_id__in=workflows).select_related("workflow").with_transitions()
    }
    columns = {
        column.pk: column
        for column in BoardColumn.objects.filter(workflow_id__in={p.workflow_id for p in phases.values()})
        .prefetch_related("phases")
        .order_by("sequence_order", "pk")
    }
    column_of = {}
    for column in columns.values():
        for shown in column.phases.all():
            column_of.setdefault(shown.pk, column)

    if tasks is None:
        tasks = {}
        for task in Task.objects.filter(ticket_id__in=[t.pk for t in tickets], phase_id__in=phase_ids).order_by(
            "created_at", "id"
        ):
            tasks.setdefault(task.ticket_id, []).append(task)

    targets = {}
    wip_phase_ids = set()
    for ticket in tickets:
        phase = phases[ticket.phase_id]
        if phase.is_terminal:
            continue
        target, target_column = _target(phase, phases, column_of, columns)
        targets[ticket.pk] = (target, target_column)
        if _limits(target_column, column_of.get(phase.pk)):
            wip_phase_ids |= {p.pk for p in target_column.phases.all()}
    occupancy = {}
    if wip_phase_ids:
        rows = (
            Ticket.objects.filter(board_id__in={t.board_id for t in tickets}, phase_id__in=wip_phase_ids)
            .values("board_id", "phase_id")
            .annotate(n=Count("id"))
            .order_by()
        )
        occupancy = {(row["board_id"], row["phase_id"]): row["n"] for row in rows}

    gates = []
    for ticket in tickets:
        phase = ticket.phase = phases[ticket.phase_id]
        own = tasks.get(ticket.pk, [])
        gate = Gate(ticket=ticket, phase=phase, visit=ticket.gate_visit, counts=task_counts(ticket, own))
        gates.append(gate)
        counting = [
            t for t in ticket.phase_tasks(own, left_at=ticket.gate_left_at) if t.status != Task.Status.CANCELLED
        ]
        gate.tasks_total = len(counting)
        gate.tasks_done = sum(t.status == Task.Status.COMPLETED for t in counting)
        gate.failed = [t for t in counting if t.status == Task.Status.FAILED]
        gate.criteria = ticket.done_criteria(own, left_at=ticket.gate_left_at)
        artifacts = ticket.reported_artifacts(own, left_at=ticket.gate_left_at)
        gate.outputs = [
            output_check(output, artifacts, ticket.pk) for output in phase.expected_outputs if isinstance(output, dict)
        ]
        if phase.is_terminal:
            gate.terminal = True  # shown as it stands, but no gate: nothing below applies
            continue
        stored = ticket.gate_state if isinstance(ticket.gate_state, dict) else {}
        gate.awaiting_entry = bool(phase_default_tasks(phase)) and not (
            gate.same_visit(stored) and stored.get("entered") is True
        )
        gate.target, gate.target_column = targets[ticket.pk]
        if ticket.is_blocked:
            gate.hold = f"The ticket is marked blocked: {ticket.blocked_reason}"
        if _limits(gate.target_column, column_of.get(phase.pk)):
            column = gate.target_column
            count = sum(occupancy.get((ticket.board_id, p.pk), 0) for p in column.phases.all())
            if count >= column.wip_limit:
                gate.wip_full = True
                gate.hold = gate.hold or f"Waiting for room in {column.name} ({count}/{column.wip_limit})."
    return gates


def _limits(target_column, own_column):
    """Whether entering `target_column` is bounded by a `block` WIP limit (moving within a column is not)."""
    return (
        target_column is not None
        and target_column != own_column
        and target_column.wip_limit is not None
        and target_column.wip_policy == BoardColumn.WipPolicy.BLOCK
    )


def ticket_gate(ticket, *, tasks=None):
    """The phase gate of one ticket; `tasks`, when given, are its tasks as already loaded."""
    return ticket_gates([ticket], tasks=None if tasks is None else {ticket.pk: list(tasks)})[0]
