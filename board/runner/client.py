"""A small client for Omoi's agent API, standard library only: JSON over HTTP with keep-alive, safe retries.

    omoi = Omoi("http://127.0.0.1:8000", token)
    task = omoi.claim(board="demo")          # None when there is no work
    omoi.start(task["id"])
    omoi.complete(task["id"], result={"summary": "Done."}, attempt=task.get("attempt"))

Every write carries an Idempotency-Key, the same on each retry of that write,
so a retry after a lost answer gets the first answer again instead of acting
twice. Requests are retried, a bounded number of times with back-off, when
the connection fails or the server answers 5xx or 429; every other error
answer raises `ApiError` with the API's own message.

It never imports Django: it runs on an agent's machine with nothing but Python.
"""

import http.client
import json
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

# Answers worth asking again: the server was briefly unable to act, and said so.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# What a failed connection raises: refused, reset, timed out, or a reply that was not HTTP.
CONNECTION_ERRORS = (OSError, http.client.HTTPException)


class ApiError(Exception):
    """An error answer: `status` and the API's `detail` (a sentence, or a list of {loc, msg, type} for 422)."""

    def __init__(self, status, detail):
        self.status = status
        self.detail = detail
        super().__init__(f"{status}: {describe(detail)}")


def describe(detail):
    """The API's error detail as one line: a 422's problems joined with their places."""
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(map(str, error.get('loc', [])))}: {error.get('msg')}" if isinstance(error, dict) else str(error)
            for error in detail
        )
    return str(detail)


def urllib_transport(method, url, headers, body, timeout=30):
    """Send one request on a new connection; (status, body bytes). Error statuses are answers, not exceptions."""
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


class KeepAliveTransport:
    """Send requests over one persistent connection per server; (status, body bytes).

    An agent calls the API every few seconds for hours; opening a connection
    each time costs a handshake (a TLS one on a real deployment) per call.
    The server may close an idle connection at any moment: a request that
    fails on a reused connection is sent once more on a fresh one, which is
    safe because every write carries an Idempotency-Key.
    """

    def __init__(self, timeout=30):
        self.timeout = timeout
        self._connections = {}
        self._lock = threading.Lock()  # http.client connections are not safe to share between threads

    def __call__(self, method, url, headers, body):
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        key = (parts.scheme, parts.netloc)
        with self._lock:
            connection = self._connections.pop(key, None)
            reused = connection is not None
            while True:
                if connection is None:
                    connection = self._connect(parts)
                try:
                    connection.request(method, target, body=body, headers=headers)
                    response = connection.getresponse()
                    content = response.read()
                except CONNECTION_ERRORS:
                    connection.close()
                    if not reused:
                        raise
                    connection, reused = None, False  # the server had closed it; try once on a new one
                    continue
                if response.will_close:
                    connection.close()
                else:
                    self._connections[key] = connection
                return response.status, content

    def _connect(self, parts):
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return kind(parts.hostname, parts.port, timeout=self.timeout)

    def close(self):
        with self._lock:
            for connection in self._connections.values():
                connection.close()
            self._connections.clear()


class Omoi:
    """The agent API at `base_url` for the agent holding `token`.

    `transport(method, url, headers, body)` sends one request and returns
    (status, body bytes); `retries` is how many times a request is sent at most.
    """

    def __init__(self, base_url, token, *, transport=None, retries=4, backoff=0.5, max_backoff=8.0):
        self.base_url = base_url.rstrip("/")
        self.api = self.base_url + "/api/v1"
        self.token = token
        self.transport = transport if transport is not None else KeepAliveTransport()
        self.retries = max(1, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff

    def call(self, method, path, body=None, *, params=None):
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
        query = {name: value for name, value in (params or {}).items() if value is not None}
        url = self.api + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        for attempt in range(self.retries):
            last = attempt + 1 == self.retries
            try:
                status, content = self.transport(method, url, headers, data)
            except CONNECTION_ERRORS:
                if last:
                    raise
                self._pause(attempt)
                continue
            if status in RETRY_STATUSES and not last:
                self._pause(attempt)
                continue
            return _answer(status, content)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _pause(self, attempt):
        # Jitter, so agents that lost the server together do not all come back in the same instant.
        delay = min(self.max_backoff, self.backoff * 2**attempt)
        time.sleep(delay * random.uniform(0.5, 1.0))

    # Who am I

    def me(self):
        return self.call("GET", "/agents/me")

    def heartbeat(self, status=None):
        """Tell the orchestrator this agent is alive; `status` is idle, busy or offline (unchanged when None)."""
        return self.call("POST", "/agents/me/heartbeat", {"status": status} if status else {})

    # Tasks

    def claim(self, board=None):
        """The best ready task, now held by this agent; None when there is no work."""
        return self.call("POST", "/tasks/next", {"board": board} if board else {})

    def task(self, task_id):
        return self.call("GET", f"/tasks/{task_id}")

    def start(self, task_id, *, attempt=None):
        """Mark the task running. `attempt` is the claimed task's, when it has one: a superseded attempt gets 409."""
        return self.call("POST", f"/tasks/{task_id}/start", {"attempt": attempt} if attempt is not None else {})

    def complete(self, task_id, *, result=None, artifacts=(), completed_criteria=(), attempt=None):
        """Report the task done. `attempt` is the claimed task's, when it has one: a superseded attempt gets 409."""
        body = {"result": result, "artifacts": list(artifacts), "completed_criteria": list(completed_criteria)}
        if attempt is not None:
            body["attempt"] = attempt
        return self.call("POST", f"/tasks/{task_id}/complete", body)

    def fail(self, task_id, error, *, retryable=True, attempt=None):
        """Report a failure; a retryable one goes back to the queue while the task has retries left."""
        body = {"error": error, "retryable": retryable}
        if attempt is not None:
            body["attempt"] = attempt
        return self.call("POST", f"/tasks/{task_id}/fail", body)

    # Phases

    def phase(self, key, board=None):
        """The phase: done_definitions, expected_outputs, phase_prompt, …; `board` decides between workflows."""
        return self.call("GET", f"/phases/{urllib.parse.quote(key, safe='')}", params={"board": board})

    def instructions(self, key, board=None):
        """The phase's instructions for an agent, in Markdown."""
        answer = self.call("GET", f"/phases/{urllib.parse.quote(key, safe='')}/instructions", params={"board": board})
        return answer["instructions"]

    # Discoveries

    def record(self, source_task_id, *, discovery_type, description, priority_boost=False, metadata=None):
        """Record a discovery without branching the work."""
        body = {"source_task_id": source_task_id, "discovery_type": discovery_type, "description": description}
        body["priority_boost"] = priority_boost
        if metadata is not None:
            body["metadata"] = metadata
        return self.call("POST", "/discoveries/record", body)

    def branch(self, source_task_id, *, discovery_type, description, phase=None, title=None, metadata=None, **extra):
        """Record a discovery and spawn one task for it; returns {"discovery": …, "task": …}.

        `extra` takes the branch's other fields (task_description, priority, priority_boost,
        required_capabilities) as the API names them.
        """
        body = {"source_task_id": source_task_id, "discovery_type": discovery_type, "description": description}
        body.update({key: value for key, value in (("phase", phase), ("title", title)) if value is not None})
        if metadata is not None:
            body["metadata"] = metadata
        body.update(extra)
        return self.call("POST", "/discoveries/branch", body)


def _answer(status, content):
    if status == 204:
        return None
    try:
        answer = json.loads(content) if content else None
    except ValueError:
        # A proxy's error page, say: keep its text, so the person reading the log sees what answered.
        text = content.decode("utf-8", errors="replace").strip()[:500]
        raise ApiError(status, text or f"HTTP {status} with a body that is not JSON") from None
    if status >= 400:
        raise ApiError(status, answer.get("detail") if isinstance(answer, dict) else answer)
    return answer
