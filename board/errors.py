"""One vocabulary for refusals: services raise these, and each interface translates them in one place.

The API answers a refusal with its `status` and its message; pages and forms
show the message to the person who asked (`board.views`, `board.forms`).
Invalid input stays Django's `ValidationError` (422 in the API, a form error
on a page) and permission Django's `PermissionDenied` (403).
"""


class Refused(Exception):
    """A request the rules refuse in the object's current state; the message says why, for whoever asked."""

    status = 409


class NotFound(Refused):
    """Nothing of that id or key where the caller may look (another board's objects are not found either)."""

    status = 404


class TransitionRefused(Refused):
    """A phase change or move the workflow does not allow (an unknown phase, a full column, a forbidden force)."""


class TaskStateError(Refused):
    """A task change its current state, holder or attempt does not allow."""
