"""A scripted agent for demos and load: it works through the HTTP API exactly as a real agent would.

For each claimed task it starts the task, "thinks" for a few seconds
(heartbeating meanwhile), reads the task's phase and completes the task with
every done-definition met and an artifact for each expected output, shaped
to the output's pattern and rule. Now and then it records a discovery or
branches the work, and now and then it fails, so the board, the graph and the
retry rules all have something to show. A seed makes a run repeatable.
"""

import random
import re
import time

from .client import CONNECTION_ERRORS, ApiError
from .loop import Heartbeat, Stop, log_line, report_completion, report_failure, start_task

# At speed 1 a task takes a person-watchable few seconds.
THINK_SECONDS = (2.0, 6.0)
# The API accepts at most this many artifacts on a completion (and no output may ask for more).
MAX_ARTIFACTS = 100

DISCOVERIES = [
    ("bug", "Saving {title} with an empty description fails with a server error instead of a message."),
    ("missing_requirement", "Nothing says what {title} should do when the upstream service times out."),
    ("optimization", "The list behind {title} runs one query per row; one joined query would do."),
    ("security_issue", "The endpoint used by {title} does not check that the caller is a member of the board."),
    ("performance_issue", "{title} takes over two seconds on a board with 500 tickets."),
    ("technical_debt", "The code touched by {title} duplicates the validation of the ticket form."),
    ("clarification_needed", "It is unclear whether {title} applies to archived tickets too."),
]
# New work a demo board receives, so it never runs dry (see SimulatedAgent.file_new_work).
NEW_WORK = [
    ("Audit log export for compliance", "HIGH"),
    ("Slack notifications when a ticket is blocked", "MEDIUM"),
    ("Two-factor authentication for staff", "CRITICAL"),
    ("Bulk edit of ticket priorities", "LOW"),
    ("Archive boards that saw no change for a year", "LOW"),
    ("Webhook when a ticket reaches Done", "MEDIUM"),
    ("Faster search over ticket descriptions", "HIGH"),
    ("Per-column colour themes", "LOW"),
    ("Retry button for failed tasks", "MEDIUM"),
    ("Rate limits per agent token", "HIGH"),
]
FAILURES = [
    "The test database did not answer within 30 seconds.",
    "A dependency could not be downloaded: the package index returned 503.",
    "The workspace ran out of disk space while building.",
    "The linter crashed on a file it could not parse.",
]


class SimulatedAgent:
    """The worker for `run_agent`: does one claimed task the scripted way and reports it."""

    def __init__(
        self,
        omoi,
        *,
        rng=None,
        speed=1.0,
        discovery_rate=0.15,
        failure_rate=0.10,
        think=THINK_SECONDS,
        stop=None,
        heartbeat=None,
        log=log_line,
        new_work=0,
    ):
        if speed <= 0:
            raise ValueError("speed must be greater than 0")
        self.omoi = omoi
        self.rng = rng or random.Random()
        self.speed = speed
        self.discovery_rate = discovery_rate
        self.failure_rate = failure_rate
        self.think_range = think
        self.stop = stop or Stop()
        self.heartbeat = heartbeat or Heartbeat(omoi, log=log)
        self.log = log
        self.new_work = new_work
        self.filed = 0

    def __call__(self, task):
        start_task(self.omoi, task, log=self.log)
        thinking = self.rng.uniform(*self.think_range) / self.speed
        self.pause(thinking * 0.6)
        phase = self.omoi.phase(task["phase"], board=task["board"])
        if self.rng.random() < self.failure_rate:
            error = f"Simulated failure: {self.rng.choice(FAILURES)}"
            self.log(f"Task {task['id']}: failing on purpose ({error})")
            return report_failure(self.omoi, task, error, log=self.log)
        if self.rng.random() < self.discovery_rate:
            self.discover(task)
        self.pause(thinking * 0.4)
        artifacts = outputs_for(phase, task, self.rng)
        criteria = list(phase.get("done_definitions") or [])
        result = {
            "summary": f"Simulated work on {task['title']!r}: {len(artifacts)} artifacts, "
            f"{len(criteria)} completion criteria met.",
            "simulated": True,
        }
        return report_completion(
            self.omoi, task, result=result, artifacts=artifacts, completed_criteria=criteria, log=self.log
        )

    def discover(self, task):
        """Record a discovery, or record one and branch the work with it: half of each."""
        discovery_type, template = self.rng.choice(DISCOVERIES)
        # Named by id, not title: a branched task's title quotes its source's, which would nest with each branch.
        description = template.format(title=f"task #{task['id']}")
        metadata = {"simulated": True, "found_in_task": task["id"]}
        if self.rng.random() < 0.5:
            found = self.omoi.record(
                task["id"], discovery_type=discovery_type, description=description, metadata=metadata
            )
            self.log(f"Task {task['id']}: recorded discovery {found['id']} ({discovery_type})")
        else:
            found = self.omoi.branch(
                task["id"], discovery_type=discovery_type, description=description, metadata=metadata
            )
            self.log(
                f"Task {task['id']}: discovery {found['discovery']['id']} ({discovery_type}) "
                f"branched task {found['task']['id']}"
            )

    def file_new_work(self, board):
        """Keep `new_work` tickets in the phases that have work for agents: file one more when fewer are.

        For a demo: new work arrives the way a team files it, so a board
        whose tickets have all reached Done keeps moving. A ticket goes into
        the first phase that gives its tickets tasks (Requirements in the
        default workflow).
        """
        if not self.new_work or not board:
            return None
        try:
            return self._file_new_work(board)
        except (ApiError, *CONNECTION_ERRORS) as error:
            self.log(f"New work not filed: {error}")
            return None

    def _file_new_work(self, board):
        phases = sorted(self.omoi.call("GET", "/phases", params={"board": board}), key=_in_order)
        working = [phase["key"] for phase in phases if (phase.get("configuration") or {}).get("default_tasks")]
        if not working:
            return None
        columns = self.omoi.call("GET", f"/boards/{board}")["columns"]
        in_progress = sum(column["count"] for column in columns if set(column["phases"]) & set(working))
        if in_progress >= self.new_work:
            return None
        title, priority = NEW_WORK[self.filed % len(NEW_WORK)]
        self.filed += 1
        ticket = self.omoi.call(
            "POST",
            "/tickets",
            {"board": board, "title": title, "priority": priority, "phase": working[0]},
        )
        self.log(f"Filed new work: ticket {ticket['id']} “{title}” in {working[0]}.")
        return ticket

    def pause(self, seconds):
        """Think for `seconds`, heartbeating meanwhile; a stop cuts the thinking short so the task ends soon."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.stop.wait(min(left, 1.0)):
                return
            self.heartbeat.maybe()


# Expected outputs


def outputs_for(phase, task, rng=None):
    """Artifacts that satisfy the phase's expected outputs for this task.

    Each output gets an artifact of its type (`type`, or `artifact_type`):
    `{"type": …, "path": …}` with a path matching its `pattern` (a glob:
    `<ticket-id>` is the ticket's id, `**` spans folders), as the phase gate
    looks for them. `min_count: N` (a key, or in the `validation_rule` text)
    asks for N of them; `min_passing: N` puts `"passed": N` on a test
    artifact. Optional outputs are produced half the time.
    """
    rng = rng or random.Random()
    artifacts = []
    for output in phase.get("expected_outputs") or []:
        if not output.get("required", True) and rng.random() < 0.5:
            continue
        kind = output.get("type") or output.get("artifact_type") or "file"
        count = min(MAX_ARTIFACTS, max(1, _rule_number(output, "min_count") or 1))
        passing = _rule_number(output, "min_passing")
        pattern = str(output.get("pattern") or "")
        for copy in range(1, count + 1):
            artifact = {"type": kind}
            if pattern:
                word = _slug(task["title"], task["id"]) + (f"-{copy}" if count > 1 else "")
                artifact["path"] = path_matching(pattern.replace("<ticket-id>", str(task["ticket_id"])), word)
            else:
                artifact["name"] = f"{kind} for task {task['id']}" + (f" ({copy})" if count > 1 else "")
            if passing is not None or kind == "test":
                artifact["passed"] = passing if passing is not None else 1
                artifact["failed"] = 0
            artifacts.append(artifact)
    return artifacts[:MAX_ARTIFACTS]


def _in_order(phase):
    return (phase.get("sequence_order", 0), phase["key"])


def _rule_number(output, name):
    """`name: N` as a key of the output, or written in its validation_rule; None when neither says."""
    value = output.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    found = re.search(rf"\b{name}\s*[:=]\s*(\d+)", str(output.get("validation_rule") or ""))
    return int(found.group(1)) if found else None


def _slug(title, task_id):
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40].strip("-")
    return slug or f"task-{task_id}"


def path_matching(pattern, word):
    """A path the glob `pattern` matches: `*` becomes `word`, `**` one folder, `?` one letter.

    The same glob as the phase gate's (board/selectors/gates.py): only `*`,
    `**` and `?` are wildcards; everything else stands for itself.
    """
    parts = []
    position = 0
    while position < len(pattern):
        if pattern.startswith("**", position):
            position += 2
            parts.append("sim" if pattern.startswith("/", position) else "sim/" + word)
            continue
        char = pattern[position]
        parts.append(word if char == "*" else "x" if char == "?" else char)
        position += 1
    return "".join(parts)


def glob_regex(pattern):
    """The regular expression for a glob: `**` spans folders, `*` and `?` stay inside one."""
    parts = []
    position = 0
    while position < len(pattern):
        if pattern.startswith("**/", position):
            parts.append("(?:[^/]*/)*")
            position += 3
        elif pattern.startswith("**", position):
            parts.append(".*")
            position += 2
        else:
            char = pattern[position]
            parts.append("[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char))
            position += 1
    return re.compile("".join(parts) + r"\Z", re.DOTALL)
