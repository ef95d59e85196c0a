"""Idempotency-Key records expire: a retry after the time-to-live is a new request, and old records are pruned."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from board.models import IdempotencyRecord, Task
from board.services import idempotency, idempotency_prune, ticket_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def ticket(board, alice):
    return ticket_create(board=board, title="Single sign-on", actor=alice)


def age(record_filter, by):
    IdempotencyRecord.objects.filter(**record_filter).update(created_at=timezone.now() - by)


def test_a_retry_within_the_time_to_live_replays(api, ticket, settings):
    body = {"ticket_id": ticket.pk, "title": "Once"}
    api.post("/tasks", body, key="k1")
    age({"key": "k1"}, settings.OMOI_IDEMPOTENCY_TTL - timedelta(minutes=1))
    assert api.post("/tasks", body, key="k1")["Idempotent-Replayed"] == "true"
    assert Task.objects.count() == 1


def test_after_the_time_to_live_the_same_key_is_a_new_request(api, ticket, settings):
    api.post("/tasks", {"ticket_id": ticket.pk, "title": "First"}, key="k1")
    age({"key": "k1"}, settings.OMOI_IDEMPOTENCY_TTL + timedelta(minutes=1))
    again = api.post("/tasks", {"ticket_id": ticket.pk, "title": "Second"}, key="k1")
    assert again.status_code == 201 and "Idempotent-Replayed" not in again
    assert sorted(Task.objects.values_list("title", flat=True)) == ["First", "Second"]
    record = IdempotencyRecord.objects.get()
    assert record.response["title"] == "Second"
    assert timezone.now() - record.created_at < timedelta(minutes=1)


def test_the_time_to_live_is_configurable(api, ticket, settings):
    settings.OMOI_IDEMPOTENCY_TTL = timedelta(hours=1)
    api.post("/tasks", {"ticket_id": ticket.pk, "title": "First"}, key="k1")
    age({"key": "k1"}, timedelta(hours=2))
    assert "Idempotent-Replayed" not in api.post("/tasks", {"ticket_id": ticket.pk, "title": "Again"}, key="k1")


def test_pruning_deletes_only_expired_records_oldest_first_in_batches(api, ticket, settings):
    for n in range(5):
        api.post("/tasks", {"ticket_id": ticket.pk, "title": f"T{n}"}, key=f"k{n}")
    for n in range(4):
        age({"key": f"k{n}"}, settings.OMOI_IDEMPOTENCY_TTL + timedelta(hours=n + 1))
    assert idempotency_prune(batch=2) == 2
    assert sorted(IdempotencyRecord.objects.values_list("key", flat=True)) == ["k0", "k1", "k4"]
    assert idempotency_prune(batch=2) == 2
    assert idempotency_prune(batch=2) == 0
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["k4"]


def test_the_api_prunes_now_and_then_by_itself(api, ticket, settings, monkeypatch):
    monkeypatch.setattr(idempotency, "PRUNE_EVERY", 1)
    api.post("/tasks", {"ticket_id": ticket.pk, "title": "Old"}, key="old")
    age({"key": "old"}, settings.OMOI_IDEMPOTENCY_TTL + timedelta(hours=1))
    api.post("/tasks", {"ticket_id": ticket.pk, "title": "New"}, key="new")
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]


def test_the_prune_command_empties_every_batch(api, ticket, settings, capsys, monkeypatch):
    for n in range(3):
        api.post("/tasks", {"ticket_id": ticket.pk, "title": f"T{n}"}, key=f"k{n}")
    age({}, settings.OMOI_IDEMPOTENCY_TTL + timedelta(hours=1))
    monkeypatch.setattr("board.management.commands.prune_idempotency_keys.BATCH", 2)
    call_command("prune_idempotency_keys")
    assert "Deleted 3 expired Idempotency-Key records." in capsys.readouterr().out
    assert not IdempotencyRecord.objects.exists()
