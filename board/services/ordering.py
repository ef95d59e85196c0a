"""Card order within a column: gapped positions, so most moves rewrite one row, and a one-statement renumber."""

from django.db import connection
from django.db.models import Max

from ..models import Ticket

# Room between neighbouring cards, so most moves rewrite one row.
POSITION_GAP = 1024


def position_after_last(*, board_id, column_phase_ids, exclude=None):
    """A position after the last card of the column showing `column_phase_ids` (ids, or a subquery of them)."""
    cards = Ticket.objects.filter(board_id=board_id, phase_id__in=column_phase_ids)
    if exclude is not None:
        cards = cards.exclude(pk=exclude)
    return position_after(cards.aggregate(Max("position"))["position__max"])


def position_after(last):
    """The position of a card put after the card at `last` (None: an empty column)."""
    return (last or 0) + POSITION_GAP


def position_between(*, ticket, column_phase_ids, previous_id, next_id):
    """A position between the given neighbours in the column, renumbering the column if the gap is used up.

    Neighbours come from the client and may be stale: one that is no longer in
    the column is ignored, and the real neighbour of the one kept is used.
    """
    cards = Ticket.objects.filter(board_id=ticket.board_id, phase_id__in=column_phase_ids).exclude(pk=ticket.pk)
    given = {card.pk: card.position for card in cards.filter(pk__in=[i for i in (previous_id, next_id) if i])}
    if previous_id in given:
        low = given[previous_id]
        following = cards.filter(position__gt=low).order_by("position", "pk").values_list("position", flat=True)
        high = following.first()
    elif next_id in given:
        high = given[next_id]
        preceding = cards.filter(position__lt=high).order_by("-position", "-pk").values_list("position", flat=True)
        low = preceding.first()
    else:
        return position_after_last(board_id=ticket.board_id, column_phase_ids=column_phase_ids, exclude=ticket.pk)
    if high is None:
        return low + POSITION_GAP
    if low is None:
        low = high - 2 * POSITION_GAP
    if high - low > 1:
        return (low + high) // 2
    # The gap is used up: spread this column out again, leaving room where the card goes.
    # One statement, however long the column: row by row, a 5,000-card column took seconds
    # under the column lock.
    insert_at = cards.filter(position__lt=high).count()
    renumber(cards, insert_at)
    return (insert_at + 1) * POSITION_GAP


def renumber(cards, insert_at):
    """Positions 1, 2, 3… × POSITION_GAP in the current order, skipping one slot after the first `insert_at`."""
    inner, params = cards.order_by().values("pk").query.sql_with_params()
    table = connection.ops.quote_name(Ticket._meta.db_table)
    order = f"ORDER BY {connection.ops.quote_name('position')}, {connection.ops.quote_name('id')}"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET position = (n.rn + CASE WHEN n.rn > %s THEN 1 ELSE 0 END) * %s "
            f"FROM (SELECT id, ROW_NUMBER() OVER ({order}) AS rn FROM {table} WHERE id IN ({inner})) AS n "
            f"WHERE {table}.id = n.id",
            [insert_at, POSITION_GAP, *params],
        )
