"""Reading the event log by position: what a page has seen, and what a live connection still has to send.

A page renders with the position of its board's newest event and its live
connection asks for everything after it; these are the only queries that
read the log by position.
"""

from ..models import Event


def last_event_id(board_id):
    """The position of the board's newest event (0 for none): what a page just rendered has seen."""
    return Event.objects.filter(board_id=board_id).order_by("-id").values_list("id", flat=True).first() or 0


def newest_event_id():
    """The newest position of any board: a position above it was never given out."""
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def events_after(board_id, after, *, before=None, limit):
    """The board's events after position `after` (and before `before`), oldest first, as messages; one query."""
    events = Event.objects.filter(board_id=board_id, id__gt=after)
    if before is not None:
        events = events.filter(id__lt=before)
    return [event.as_message() for event in events.order_by("id")[:limit]]


def missed_more_than(board_id, after, limit):
    """Whether the board has more than `limit` events after position `after`."""
    missed = Event.objects.filter(board_id=board_id, id__gt=after).order_by("id").values_list("id", flat=True)
    return bool(missed[limit : limit + 1])
