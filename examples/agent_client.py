"""A minimal Omoi agent: claim a task, report a discovery that branches the work, complete it.

    OMOI_URL=http://127.0.0.1:8000 OMOI_TOKEN=omoi_... python examples/agent_client.py

OMOI_BOARD (a board slug) limits the claim to one board; OMOI_BRANCH_PHASE
puts the branched task in another phase (by default the claimed task's). The
token comes from `manage.py create_agent`. Exits 0 after one task, or when
there is no work; 1 on an error from the API, whose message it prints.

It uses the project's API client, board/runner/client.py, which needs only
Python's standard library (run it from a checkout of the project). For an
agent that keeps working, see `manage.py run_agent` (board/runner/).
"""

import contextlib
import os
import sys
import time
from pathlib import Path

# The project's root, so that `board.runner` imports when this file is run as a script.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from board.runner.client import ApiError, Omoi, urllib_transport

__all__ = ["ApiError", "Omoi", "main", "urllib_transport", "work_once"]


def work_once(omoi, *, board=None, branch_phase=None, log=print):
    """Claim one task, do it, report what was found, complete it. Returns the completed task, or None."""
    task = omoi.claim(board)
    if task is None:
        log("No task is ready for this agent.")
        return None
    log(f"Claimed task {task['id']} ({task['phase']}): {task['title']}")
    started = time.monotonic()
    attempt = task.get("attempt")  # sent back with each report: one from a superseded attempt is refused
    omoi.start(task["id"], attempt=attempt)
    try:
        # The real work happens here. This agent "finds" that a requirement is missing.
        branched = omoi.branch(
            task["id"],
            discovery_type="missing_requirement",
            description=f"While doing task {task['id']}: the expected behaviour on timeout is not specified.",
            phase=branch_phase,
            metadata={"found_by": "examples/agent_client.py"},
        )
        log(f"Recorded discovery {branched['discovery']['id']}; branched task {branched['task']['id']}")
        done = omoi.complete(
            task["id"], result={"summary": "Done; see the discovery for what is still open."}, attempt=attempt
        )
    except Exception as exc:
        # Hand the task back, so it is retried rather than held until it times out.
        with contextlib.suppress(ApiError, OSError):
            omoi.fail(task["id"], f"The agent stopped: {exc}", attempt=attempt)
        raise
    log(f"Completed task {done['id']} in {time.monotonic() - started:.1f} s")
    return done


def main():
    url, token = os.environ.get("OMOI_URL"), os.environ.get("OMOI_TOKEN")
    if not url or not token:
        print(
            "Set OMOI_URL (e.g. http://127.0.0.1:8000) and OMOI_TOKEN (from manage.py create_agent).", file=sys.stderr
        )
        return 2
    omoi = Omoi(url, token)
    try:
        work_once(omoi, board=os.environ.get("OMOI_BOARD"), branch_phase=os.environ.get("OMOI_BRANCH_PHASE"))
    except ApiError as error:
        print(f"The API refused: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
