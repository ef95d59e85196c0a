"""Idempotency keys: an agent's write carrying a key is done once, and each retry gets the first answer again.

One store for every interface an agent writes through: the API's
Idempotency-Key header (`board.middleware`) and the MCP tools'
`idempotency_key` argument keep their records in the same table, so a key is
one agent's, whichever way it was sent.
"""

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from ..errors import Refused
from ..models import IdempotencyRecord

KEY_MAX = 200
# One new record in this many prunes a batch of expired ones.
PRUNE_EVERY = 256


class IdempotencyKeyReused(Refused):
    """A key first used for another request: the retry is not a retry, and nothing is done."""

    status = 422


def idempotency_key_problem(key, *, name="Idempotency-Key"):
    """Why `key` cannot be a key (the message names it `name`), or None."""
    if not isinstance(key, str) or not key.strip() or len(key) > KEY_MAX or not key.isprintable():
        return f"{name} must be 1 to {KEY_MAX} printable characters."
    return None


def idempotent_call(*, agent, key, method, path, body_hash, call):
    """Run `call()` once for the agent's `key`; a retry of the same request gets the answer it kept.

    `call()` does the work and returns `(status_code, answer, result)`:
    the answer (JSON) is kept for retries; a status of 500 or more rolls
    back the work and the record, so a retry runs again. The record, the
    change and the kept answer commit together: a retry either finds the
    first answer or finds that nothing happened.

    Returns `(result, None)` the first time and `(None, record)` for a retry
    (`record.status_code`, `record.response`). The same key for another
    method, path or body raises `IdempotencyKeyReused`.
    """
    with transaction.atomic():
        record = _record_key(agent, key, method=method, path=path, body_hash=body_hash)
        if record is None:
            return None, _replayable(agent, key, path=path, body_hash=body_hash)
        if record.pk % PRUNE_EVERY == 0:
            # Records expire; every so often a request clears a batch of old ones, so nothing else has to.
            idempotency_prune()
        status_code, answer, result = call()
        if status_code >= 500:
            transaction.set_rollback(True)
            return result, None
        record.status_code = status_code
        record.response = answer
        record.save(update_fields=["status_code", "response"])
    return result, None


def idempotency_prune(*, now=None, batch=1000):
    """Delete up to `batch` Idempotency-Key records older than OMOI_IDEMPOTENCY_TTL, oldest first; return how many.

    A retry after that long is a new request. Fewer than `batch` deleted means
    nothing is left to prune.
    """
    expired = (now or timezone.now()) - settings.OMOI_IDEMPOTENCY_TTL
    oldest = IdempotencyRecord.objects.filter(created_at__lt=expired).order_by("created_at")
    ids = list(oldest.values_list("pk", flat=True)[:batch])
    return IdempotencyRecord.objects.filter(pk__in=ids).delete()[0] if ids else 0


def _replayable(agent, key, *, path, body_hash):
    record = IdempotencyRecord.objects.get(agent=agent, key=key)
    if record.path != path[:500] or record.body_hash != body_hash:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key!r} was first used for another request ({record.method} {record.path}); "
            "use a new key for a new request."
        )
    return record


def _record_key(agent, key, *, method, path, body_hash):
    """A new record of `key` for this request, or None when a live one exists (the request is a retry).

    A record older than OMOI_IDEMPOTENCY_TTL no longer counts: it is replaced.
    """
    fields = {"method": method, "path": path[:500], "body_hash": body_hash}
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(agent=agent, key=key, **fields)
    except IntegrityError:
        pass
    expired = timezone.now() - settings.OMOI_IDEMPOTENCY_TTL
    if not IdempotencyRecord.objects.filter(agent=agent, key=key, created_at__lt=expired).delete()[0]:
        return None
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(agent=agent, key=key, **fields)
    except IntegrityError:
        return None  # a concurrent retry recorded it first
