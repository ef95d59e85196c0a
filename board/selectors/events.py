"""Reading the event log by position: what a page has seen, and what a live connection still has to send.

An event's position (`Event.seq`) is given as its transaction commits, so a
board's positions follow commit order: a reader that has everything up to
position N and asks for what is after it never misses an event that commits
later. A page renders with the position of its board's newest event, its live
connection asks for everything after it, and clients see positions as the
events' `id`. These are the only queries that read the log by position.
"""

from django.db.models import Max, Q

from ..models import Event


def last_event_id(board_id):
    """The position of the board's newest event (0 for none): what a page just rendered has seen."""
    return Event.objects.filter(board_id=board_id).aggregate(last=Max("seq"))["last"] or 0


def newest_event_id():
    """The newest position of any board: a position above it was never given out."""
    return Event.objects.aggregate(last=Max("seq"))["last"] or 0


def events_after(board_id, after, *, before=None, limit):
    """The board's events after position `after` (and before `before`), oldest first, as messages; one query."""
    events = Event.objects.filter(board_id=board_id, seq__gt=after)
    if before is not None:
        events = events.filter(seq__lt=before)
    return [event.as_message() for event in events.order_by("seq")[:limit]]


def boards_events_after(cursors, *, limit):
    """Events of several boards in one query: {board id: its events after its position in `cursors`}, oldest first.

    At most `limit` events in all, the oldest positions first: a board left
    with `limit` events may have more, to be asked for again.
    """
    if not cursors:
        return {}
    wanted = Q()
    for board_id, after in cursors.items():
        wanted |= Q(board_id=board_id, seq__gt=after)
    found = {board_id: [] for board_id in cursors}
    for event in Event.objects.filter(wanted).order_by("seq")[:limit]:
        found[event.board_id].append(event.as_message())
    return found


def missed_more_than(board_id, after, limit):
    """Whether the board has more than `limit` events after position `after`."""
    missed = Event.objects.filter(board_id=board_id, seq__gt=after).order_by("seq").values_list("seq", flat=True)
    return bool(missed[limit : limit + 1])
