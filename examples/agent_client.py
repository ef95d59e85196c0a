"""A minimal Omoi agent, standard library only: claim a task, report a discovery that branches the work, complete it.

    OMOI_URL=http://127.0.0.1:8000 OMOI_TOKEN=omoi_... python examples/agent_client.py

OMOI_BOARD (a board slug) limits the claim to one board; OMOI_BRANCH_PHASE
puts the branched task in another phase (by default the claimed task's). The
token comes from `manage.py create_agent`. Exits 0 after one task, or when
there is no work; 1 on an error from the API, whose message it prints.
"""

import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid


class ApiError(Exception):
    """An error answer: `status` and the API's `detail` (a sentence, or a list of {loc, msg, type} for 422)."""

    def __init__(self, status, detail):
        self.status = status
        self.detail = detail
        super().__init__(f"{status}: {describe(detail)}")


def describe(detail):
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(map(str, error.get('loc', [])))}: {error.get('msg')}" for error in detail)
    return str(detail)


def urllib_transport(method, url, headers, body):
    """Send one request; (status, body bytes). Error statuses are answers too, not exceptions."""
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


class Omoi:
    """The agent API at `base_url` for the agent holding `token`."""

    def __init__(self, base_url, token, transport=urllib_transport, retries=3):
        self.api = base_url.rstrip("/") + "/api/v1"
        self.token = token
        self.transport = transport
        self.retries = retries

    def call(self, method, path, body=None):
        """The decoded answer, None for 204 (No Content); raises ApiError for an error answer.

        A POST carries an Idempotency-Key, the same on every retry: when the
        connection drops after the server acted, the retry gets the first
        answer again instead of acting twice (claiming a second task, say).
        """
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if method == "POST":
            headers["Content-Type"] = "application/json"
            headers["Idempotency-Key"] = str(uuid.uuid4())
            data = json.dumps(body if body is not None else {}).encode()
        for attempt in range(self.retries):
            try:
                status, content = self.transport(method, self.api + path, headers, data)
                break
            except OSError:  # refused, reset, timed out: safe to retry with the same key
                if attempt + 1 == self.retries:
                    raise
                time.sleep(2**attempt)
        if status == 204:
            return None
        answer = json.loads(content) if content else None
        if status >= 400:
            raise ApiError(status, answer.get("detail") if isinstance(answer, dict) else answer)
        return answer

    def claim(self, board=None):
        """The best ready task, now held by this agent; None when there is no work."""
        return self.call("POST", "/tasks/next", {"board": board} if board else {})

    def start(self, task_id):
        return self.call("POST", f"/tasks/{task_id}/start")

    def branch(self, source_task_id, *, discovery_type, description, phase=None, title=None, metadata=None):
        """Record a discovery and spawn one task for it; returns {"discovery": …, "task": …}."""
        body = {"source_task_id": source_task_id, "discovery_type": discovery_type, "description": description}
        body.update({key: value for key, value in (("phase", phase), ("title", title)) if value is not None})
        if metadata is not None:
            body["metadata"] = metadata
        return self.call("POST", "/discoveries/branch", body)

    def complete(self, task_id, *, result=None, artifacts=(), completed_criteria=()):
        body = {"result": result, "artifacts": list(artifacts), "completed_criteria": list(completed_criteria)}
        return self.call("POST", f"/tasks/{task_id}/complete", body)

    def fail(self, task_id, error, *, retryable=True):
        return self.call("POST", f"/tasks/{task_id}/fail", {"error": error, "retryable": retryable})


def work_once(omoi, *, board=None, branch_phase=None, log=print):
    """Claim one task, do it, report what was found, complete it. Returns the completed task, or None."""
    task = omoi.claim(board)
    if task is None:
        log("No task is ready for this agent.")
        return None
    log(f"Claimed task {task['id']} ({task['phase']}): {task['title']}")
    omoi.start(task["id"])
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
        done = omoi.complete(task["id"], result={"summary": "Done; see the discovery for what is still open."})
    except Exception as exc:
        # Hand the task back, so it is retried rather than held until it times out.
        with contextlib.suppress(ApiError, OSError):
            omoi.fail(task["id"], f"The agent stopped: {exc}")
        raise
    log(f"Completed task {done['id']}")
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
