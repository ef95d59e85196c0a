"""Run a real command-line agent (Claude Code, Codex, OpenCode or any program) once per claimed task, headless.

The child gets the phase's instructions and the task as its prompt (on
standard input, or in a file), and the task's coordinates and the API's
address and token in its environment, so it can call the API itself; an
agent CLI that speaks MCP finds Omoi's MCP server there too: its URL in
$OMOI_MCP_URL, and a ready configuration in $OMOI_MCP_CONFIG (the
`mcpServers` JSON Claude Code's `--mcp-config` reads, token included). The
runner starts the task, heartbeats while the child lives, enforces the time
limits, and then reports: the child's result (the JSON object it prints last,
or writes to $OMOI_RESULT_FILE) completes the task; a non-zero exit, a time-out
or a missing result fails it with the tail of the child's output. A child that
completed or failed the task itself through the API is left to have done so.
"""

import json
import os
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .client import CONNECTION_ERRORS, ApiError
from .loop import (
    ABANDONED,
    FAILED,
    HANDLED_BY_CHILD,
    SUPERSEDED,
    Heartbeat,
    Stop,
    log_line,
    report_completion,
    report_failure,
    start_task,
)
from .process import IDLE, STOPPED, TIMED_OUT, run_watched

# Ready-made commands for the agents people run. Each reads the prompt on standard input and prints
# its final answer on standard output, where the runner looks for the result line the prompt asks for.
PRESETS = {
    # One JSON object whose `result` is the answer's text; `is_error` says whether the run failed.
    "claude": "claude -p --output-format json",
    # `-` reads the prompt from standard input; only the final message goes to standard output.
    "codex": "codex exec --skip-git-repo-check -",
    # Piped standard input is added to the message given as the argument.
    "opencode": 'opencode run "Carry out the task given on standard input."',
}
PROMPT_FILE, RESULT_FILE = "{prompt_file}", "{result_file}"
# Where the server answers MCP, and the name its tools go by in an agent CLI (mcp__omoi__… in Claude Code).
MCP_PATH = "/mcp"
MCP_SERVER_NAME = "omoi"
# What a failure report quotes of the child's output, and the API's bounds on what a completion carries.
TAIL_CHARS = 2000
TEXT_MAX = 20_000
LIST_MAX = 100
EXTRA_MAX_BYTES = 32 * 1024
RESULT_FILE_MAX_BYTES = 1024 * 1024
# Fields of a Claude Code result worth keeping beside the summary: what the run cost and how to resume it.
RUN_FIELDS = ("session_id", "total_cost_usd", "num_turns", "duration_ms")
# Keys a result object may use for the three parts the API stores separately.
REPORTED_KEYS = ("summary", "artifacts", "completed_criteria")

RESULT_HOWTO = """\
## Reporting your result

When you have finished, end your output with one line holding a JSON object, or write that object to the
file named by the environment variable OMOI_RESULT_FILE:

    {"summary": "<what you did, in a few sentences>", "artifacts": [{"type": "<type>", "path": "<path>"}], "completed_criteria": ["<each completion criterion you met, copied word for word>"]}

List an artifact for each expected output you produced. If you cannot do the task, say why and exit with a
non-zero status: the task is then retried. To record a discovery (a bug, a missing requirement, anything outside
this task), call the API: POST $OMOI_URL/api/v1/discoveries/record with the header
"Authorization: Bearer $OMOI_TOKEN" and a body such as
{"source_task_id": $OMOI_TASK_ID, "discovery_type": "bug", "description": "..."}; or, when you have
Omoi's MCP tools, call record_discovery.
"""


def render_prompt(task, instructions):
    """The prompt for one task: the phase's instructions, the task itself, and how to report."""
    lines = [instructions.rstrip(), "", "## Your task", ""]
    lines.append(f"- Task {task['id']}: {task['title']}")
    lines.append(f"- Ticket {task['ticket_id']} on board {task['board']}, phase {task['phase']}")
    if task.get("attempt") is not None:
        lines.append(f"- Attempt {task['attempt']}")
    if task.get("retry_count"):
        lines.append(f"- Tried {task['retry_count']} time(s) before; the last failure: {task.get('error') or '?'}")
    if (task.get("description") or "").strip():
        lines += ["", task["description"].strip()]
    lines += ["", RESULT_HOWTO]
    return "\n".join(lines)


def mcp_url(url):
    """The address of the server's MCP endpoint."""
    return url.rstrip("/") + MCP_PATH


def write_mcp_config(path, *, url, token):
    """Write the MCP configuration for Omoi to `path`, readable by its owner only (it holds the token)."""
    config = {
        "mcpServers": {
            MCP_SERVER_NAME: {"type": "http", "url": mcp_url(url), "headers": {"Authorization": f"Bearer {token}"}}
        }
    }
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as written:
        json.dump(config, written, indent=2)
    return path


def child_env(task, *, url, token, result_file, mcp_config=None, base=None):
    """The child's environment: ours, plus where the API and MCP server are, who it is, and which task it works on."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "OMOI_URL": url,
            "OMOI_MCP_URL": mcp_url(url),
            "OMOI_TOKEN": token,
            "OMOI_TASK_ID": str(task["id"]),
            # Empty when the server does not number attempts.
            "OMOI_ATTEMPT": "" if task.get("attempt") is None else str(task["attempt"]),
            "OMOI_TICKET_ID": str(task["ticket_id"]),
            "OMOI_PHASE": task["phase"],
            "OMOI_BOARD": task["board"],
            "OMOI_RESULT_FILE": str(result_file),
        }
    )
    if mcp_config is not None:
        env["OMOI_MCP_CONFIG"] = str(mcp_config)
    return env


# Reading the result


@dataclass
class Result:
    """What the child reported: the three parts the API stores, anything else it said, and whether it gave up."""

    summary: str
    artifacts: list = field(default_factory=list)
    completed_criteria: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    is_error: bool = False

    def as_result(self):
        """The completion's `result` object: the summary and the rest of what the child said."""
        return {"summary": self.summary, **self.extra}


def read_result(stdout, result_file_text=None):
    """The child's Result, from the result file when it wrote one, else the last JSON object on its output; or None.

    A result file that is not JSON is taken as the summary: the child chose to
    write it. A result whose `result` is text (Claude Code's) gives its summary,
    or, when that text ends with a JSON result line, that line.
    """
    if result_file_text is not None and result_file_text.strip():
        text = result_file_text.strip()
        found = _json_object(text)
        return normalise(found if found is not None else {"summary": text})
    found = last_json_object(stdout)
    return normalise(found) if found is not None else None


def last_json_object(text, *, max_lines=2000):
    """The JSON object printed last in `text`: a whole-text object, one ending the text over several lines, or a line."""
    text = text.strip()
    found = _json_object(text)
    if found is not None:
        return found
    lines = text.splitlines()[-max_lines:]
    multiline_tries = 20  # a pretty-printed object ends the output; give up on that shape after a few starts
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index].strip()
        if not line.startswith("{"):
            continue
        found = _json_object(line)
        if found is None and multiline_tries > 0:
            multiline_tries -= 1
            found = _json_object("\n".join(lines[index:]))
        if found is not None:
            return found
    return None


def _json_object(text):
    try:
        found = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return found if isinstance(found, dict) else None


def normalise(found):
    """A Result from the object a child reported, cut to what the API accepts."""
    found = dict(found)
    is_error = found.get("is_error") is True
    text = found.get("result")
    if isinstance(text, str) and "summary" not in found:
        inner = last_json_object(text)
        if inner is not None and any(key in inner for key in REPORTED_KEYS):
            run = {key: found[key] for key in RUN_FIELDS if key in found}
            found = {**inner, **({"agent_run": run} if run else {})}
        else:
            found.pop("result")
            found["summary"] = text
    summary = found.pop("summary", "")
    if not isinstance(summary, str):
        summary = json.dumps(summary)
    artifacts = found.pop("artifacts", [])
    artifacts = artifacts[:LIST_MAX] if isinstance(artifacts, list) else [artifacts]
    criteria = found.pop("completed_criteria", [])
    criteria = [item[:TEXT_MAX] for item in (criteria if isinstance(criteria, list) else []) if isinstance(item, str)]
    found.pop("usage", None)  # token counts per model: long, and kept by the agent's own logs
    found.pop("modelUsage", None)
    if len(json.dumps(found)) > EXTRA_MAX_BYTES:
        found = {"omitted": sorted(found)[:LIST_MAX]}
    return Result(
        summary=summary[:TEXT_MAX],
        artifacts=artifacts,
        completed_criteria=criteria[:LIST_MAX],
        extra=found,
        is_error=is_error,
    )


# The worker


class CommandAgent:
    """The worker for `run_agent`: runs `command` (a shell command line) for one claimed task and reports."""

    def __init__(
        self,
        omoi,
        command,
        *,
        token,
        agent_name=None,
        prompt_file=False,
        timeout=None,
        idle_timeout=None,
        kill_grace=10.0,
        workdir=None,
        stop=None,
        heartbeat=None,
        log=log_line,
        shell="/bin/sh",
    ):
        self.omoi = omoi
        self.command = command
        self.token = token
        self.agent_name = agent_name
        self.prompt_file = prompt_file or PROMPT_FILE in command
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.kill_grace = kill_grace
        self.workdir = workdir
        self.stop = stop or Stop()
        self.heartbeat = heartbeat or Heartbeat(omoi, log=log)
        self.log = log
        self.shell = shell

    def __call__(self, task):
        start_task(self.omoi, task, log=self.log)
        prompt = render_prompt(task, self.omoi.instructions(task["phase"], board=task["board"]))
        timeout = self.timeout if self.timeout is not None else task.get("timeout_seconds")
        with tempfile.TemporaryDirectory(prefix=f"omoi-task-{task['id']}-") as scratch:
            result_file = Path(scratch) / "result.json"
            mcp_config = write_mcp_config(Path(scratch) / "mcp.json", url=self.omoi.base_url, token=self.token)
            env = child_env(
                task, url=self.omoi.base_url, token=self.token, result_file=result_file, mcp_config=mcp_config
            )
            command = self.command.replace(RESULT_FILE, shlex.quote(str(result_file)))
            stdin_data = prompt.encode()
            if self.prompt_file:
                prompt_path = Path(scratch) / "prompt.md"
                prompt_path.write_text(prompt, encoding="utf-8")
                env["OMOI_PROMPT_FILE"] = str(prompt_path)
                command = command.replace(PROMPT_FILE, shlex.quote(str(prompt_path)))
                stdin_data = None
            self.log(f"Task {task['id']}: running {self.command!r} (time-out {timeout} s)")
            run = run_watched(
                [self.shell, "-c", command],
                stdin_data=stdin_data,
                env=env,
                cwd=self.workdir,
                timeout=timeout,
                idle_timeout=self.idle_timeout,
                kill_grace=self.kill_grace,
                tick=self.heartbeat.maybe,
                should_abandon=lambda: self.stop.abandon,
            )
            written = _read_bounded(result_file)
        self.log(
            f"Task {task['id']}: the command {run.reason} after {run.seconds:.1f} s "
            f"(exit status {run.returncode}; {run.stdout.total} bytes on stdout, {run.stderr_bytes} on stderr)"
        )
        return self.report(task, run, written, timeout=timeout)

    def report(self, task, run, written, *, timeout=None):
        """Tell the API what became of the task, unless the child already did."""
        if run.reason == STOPPED:
            outcome = report_failure(
                self.omoi, task, "The agent runner was stopped before the command finished.", log=self.log
            )
            return ABANDONED if outcome == FAILED else outcome
        settled = self._settled_elsewhere(task)
        if settled:
            return settled
        tail = run.output_tail(TAIL_CHARS)
        if run.reason in (TIMED_OUT, IDLE):
            limit = (
                f"ran past its time-out of {timeout} s"
                if run.reason == TIMED_OUT
                else f"printed nothing for {self.idle_timeout} s"
            )
            return self._fail(task, f"The command {limit} and was stopped.", tail)
        if run.returncode != 0:
            return self._fail(task, f"The command exited with status {run.returncode}.", tail)
        result = read_result(run.stdout.text(), written)
        if result is None:
            return self._fail(task, "The command exited 0 without a result (no JSON object on its output).", tail)
        if result.is_error:
            return self._fail(task, "The agent reported an error.", result.summary[-TAIL_CHARS:])
        return report_completion(
            self.omoi,
            task,
            result=result.as_result(),
            artifacts=result.artifacts,
            completed_criteria=result.completed_criteria,
            log=self.log,
        )

    def _settled_elsewhere(self, task):
        """An outcome when the task is no longer this attempt's to report (the child reported it, or it timed out)."""
        try:
            current = self.omoi.task(task["id"])
        except (ApiError, *CONNECTION_ERRORS) as error:
            self.log(f"Task {task['id']}: could not read its state ({error}); reporting anyway.")
            return None
        status = current["status"]
        still_open = status in ("assigned", "running")
        ours = self.agent_name is None or current.get("assigned_agent") == self.agent_name
        same_attempt = task.get("attempt") is None or current.get("attempt") == task.get("attempt")
        if still_open and ours and same_attempt:
            return None
        if still_open or not same_attempt:
            self.log(f"Task {task['id']} is {status} on another attempt or agent: nothing to report.")
            return SUPERSEDED
        # Done, failed or back in the queue while the command ran: the command reported it through the API
        # (or the orchestrator timed it out). Either way this attempt has nothing left to say.
        self.log(f"Task {task['id']} is {status} already: it was reported during the run.")
        return HANDLED_BY_CHILD

    def _fail(self, task, error, tail):
        message = error + (f"\n--- last output ---\n{tail}" if tail.strip() else "")
        self.log(f"Task {task['id']}: {error}")
        return report_failure(self.omoi, task, message[:TEXT_MAX], log=self.log)


def _read_bounded(path):
    """The result file's text, at most RESULT_FILE_MAX_BYTES of it; None when the child wrote none."""
    try:
        with open(path, "rb") as written:
            return written.read(RESULT_FILE_MAX_BYTES).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
