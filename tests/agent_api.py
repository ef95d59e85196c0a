"""Calling the agent API the way an agent runtime does: JSON bodies, a bearer token, an optional Idempotency-Key."""

import json

from board.models import Event, IdempotencyRecord, PhaseHistory, Task, Ticket, TicketComment

API = "/api/v1"


class AgentClient:
    """A django.test.Client that speaks to /api/v1/ as the holder of `token` (None sends no Authorization)."""

    def __init__(self, client, token):
        self.client = client
        self.token = token

    def _headers(self, headers):
        auth = {"Authorization": f"Bearer {self.token}"} if self.token is not None else {}
        return {**auth, **headers}

    def get(self, path, **headers):
        return self.client.get(API + path, headers=self._headers(headers))

    def post(self, path, data=None, *, raw=None, key=None, **headers):
        """POST `data` as JSON ({} when None), or the bytes/str `raw` exactly as given."""
        body = raw if raw is not None else json.dumps({} if data is None else data)
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.client.post(API + path, body, content_type="application/json", headers=self._headers(headers))


def row_counts():
    """How many rows each table an API call may write holds, to show that a refused call wrote nothing."""
    models = (Ticket, Task, TicketComment, PhaseHistory, Event, IdempotencyRecord)
    return {model.__name__: model.objects.count() for model in models}


def messages_of(response):
    """The `msg` of each error in a 422 answer, or the `detail` itself when it is a sentence."""
    detail = response.json()["detail"]
    return [error["msg"] for error in detail] if isinstance(detail, list) else [detail]
