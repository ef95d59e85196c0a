"""Events get their log position as their transaction commits, so a board's writers no longer wait for each other.

Until now the first event of a transaction locked its board's row until the
transaction ended: ids are handed out at insert, transactions commit in any
order, and a reader resuming "after id N" must never find an event with a
smaller id commit later. That made every writer of a board wait for the one
before it, for all its statements.

Now each event's position (`seq`) is handed out by the database at commit:

- PostgreSQL: a deferred constraint trigger runs as the transaction commits;
  it locks the board's row, takes the next value of the events' id sequence,
  stores it on the event with the board's previous position, and notifies
  `omoi_events` with the board's id. The row lock is held from there to the
  end of the commit only, so positions follow commit order within a board.
  Until it commits, an event's position is its id and it has no previous one
  (a BEFORE INSERT trigger); no other transaction can see it.
- SQLite runs one write transaction at a time (BEGIN IMMEDIATE), so ids are
  already in commit order: the position is the id, set by an AFTER INSERT trigger.

Existing events keep their ids as positions.
"""

from django.db import migrations, models

CHANNEL = "omoi_events"

POSTGRESQL = """
CREATE FUNCTION board_event_provisional_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.seq := NEW.id;
    NEW.previous_seq := NULL;
    RETURN NEW;
END
$$;

CREATE TRIGGER board_event_provisional_seq BEFORE INSERT ON board_event
    FOR EACH ROW EXECUTE FUNCTION board_event_provisional_seq();

CREATE FUNCTION board_event_commit_seq() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    before bigint;
    given bigint;
BEGIN
    -- One commit of the board at a time from here to the end of the commit: positions follow commit order.
    PERFORM 1 FROM board_board WHERE id = NEW.board_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;  -- the board was deleted in the same transaction, and its events with it
    END IF;
    -- The board's newest position given so far: this transaction's own events still waiting for theirs
    -- have no previous_seq yet, and other transactions' uncommitted ones cannot be seen.
    SELECT max(seq) INTO before FROM board_event WHERE board_id = NEW.board_id AND previous_seq IS NOT NULL;
    given := nextval(%(sequence)s);
    UPDATE board_event SET seq = given, previous_seq = COALESCE(before, 0) WHERE id = NEW.id;
    PERFORM pg_notify(%(channel)s, NEW.board_id::text);
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER board_event_commit_seq AFTER INSERT ON board_event
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION board_event_commit_seq();
"""

POSTGRESQL_REVERSE = """
DROP TRIGGER IF EXISTS board_event_commit_seq ON board_event;
DROP FUNCTION IF EXISTS board_event_commit_seq();
DROP TRIGGER IF EXISTS board_event_provisional_seq ON board_event;
DROP FUNCTION IF EXISTS board_event_provisional_seq();
"""

SQLITE = """
CREATE TRIGGER board_event_seq AFTER INSERT ON board_event FOR EACH ROW
BEGIN
    UPDATE board_event
        SET seq = NEW.id,
            previous_seq = COALESCE((SELECT max(seq) FROM board_event WHERE board_id = NEW.board_id), 0)
        WHERE id = NEW.id;
END
"""

BACKFILL = """
UPDATE board_event SET seq = board_event.id, previous_seq = COALESCE(earlier.previous, 0)
FROM (SELECT id, lag(id) OVER (PARTITION BY board_id ORDER BY id) AS previous FROM board_event) AS earlier
WHERE earlier.id = board_event.id
"""


def positions_given_at_commit(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        cursor.execute(BACKFILL)
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_get_serial_sequence('board_event', 'id')")
            sequence = cursor.fetchone()[0]
            cursor.execute(POSTGRESQL % {"sequence": quote(sequence), "channel": quote(CHANNEL)})
        elif connection.vendor == "sqlite":
            cursor.execute(SQLITE)
        else:
            raise RuntimeError(f"Omoi runs on PostgreSQL or SQLite, not {connection.vendor}.")


def positions_given_at_insert(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        if schema_editor.connection.vendor == "postgresql":
            cursor.execute(POSTGRESQL_REVERSE)
        else:
            cursor.execute("DROP TRIGGER IF EXISTS board_event_seq")


def quote(text):
    return "'" + text.replace("'", "''") + "'"


class Migration(migrations.Migration):
    dependencies = [
        ("board", "0005_board_owners"),
        ("phases", "0006_boardcolumn_category"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="event",
            name="board_event_board_i_13236d_idx",
        ),
        migrations.AddField(
            model_name="event",
            name="previous_seq",
            field=models.BigIntegerField(editable=False, null=True),
        ),
        migrations.AddField(
            model_name="event",
            name="seq",
            field=models.BigIntegerField(editable=False, null=True),
        ),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(fields=["board", "seq"], name="board_event_board_i_1bd33e_idx"),
        ),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(fields=["seq"], name="board_event_seq_bde55d_idx"),
        ),
        migrations.AddIndex(
            model_name="task",
            index=models.Index(
                condition=models.Q(("status", "pending")),
                fields=["-score", "created_at", "id"],
                name="board_task_queue",
            ),
        ),
        migrations.RunPython(positions_given_at_commit, positions_given_at_insert),
    ]
