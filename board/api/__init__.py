"""The agent API for agents, tasks, tickets, phases and boards (django-ninja routers, one module per group).

Endpoints parse the body with a schema, find objects only on the calling
agent's boards (`board.selectors`: 404 otherwise), call a service and serialise
the result. Refusals from services are translated in one place
(`errors.install_error_handlers`): a `board.errors.Refused` answers with its own
status, `PermissionDenied` 403, `ValidationError` 422, each with the service's
own message.
"""

from . import agents, boards, phases, tasks, tickets
from .auth import AgentAuth
from .errors import document_errors, install_error_handlers
from .schemas import (
    AnyJSON,
    BoardSlug,
    Capabilities,
    PhaseKey,
    PriorityName,
    RequiredText,
    TaskOut,
    Text,
    TitleOrDefault,
)

__all__ = [
    "agents",
    "boards",
    "phases",
    "tasks",
    "tickets",
    "AgentAuth",
    "AnyJSON",
    "BoardSlug",
    "Capabilities",
    "PhaseKey",
    "PriorityName",
    "RequiredText",
    "TaskOut",
    "Text",
    "TitleOrDefault",
    "document_errors",
    "install_error_handlers",
]
