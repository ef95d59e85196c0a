"""On PostgreSQL, the tables that decide who may follow a board notify `omoi_access` when they change.

A server process re-checks the access of all its open board sockets every
OMOI_LIVE_ACCESS_SECONDS; a notification brings the check forward to within a
poll interval, so a member taken off a board (by a service, the admin or any
SQL), a deleted board, a revoked agent, a changed password or a logout ends
the socket at once, while idle sockets cost no query meanwhile (board/live.py).
SQLite notifies nobody: there any commit brings the check forward.
"""

from django.conf import settings
from django.db import migrations

CHANNEL = "omoi_access"

FUNCTION = f"""
CREATE FUNCTION omoi_access_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END
$$;
"""

# (model, operations): a membership or an agent's place on a board removed, a board or a user deleted, a user
# or an agent changed (active, password, revoked), a session deleted (a logout).
WATCHED = [
    ("board.Board_members", "DELETE"),
    ("board.Agent_boards", "DELETE"),
    ("board.Board", "DELETE"),
    ("board.Agent", "UPDATE OR DELETE"),
    (settings.AUTH_USER_MODEL, "UPDATE OR DELETE"),
    ("sessions.Session", "DELETE"),
]


def tables(apps):
    found = []
    for label, operations in WATCHED:
        app_label, model_name = label.split(".")
        if model_name.endswith(("_members", "_boards")):
            owner, field = model_name.split("_")
            model = apps.get_model(app_label, owner)._meta.get_field(field).remote_field.through
        else:
            model = apps.get_model(app_label, model_name)
        found.append((model._meta.db_table, operations))
    return found


def notify(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(FUNCTION)
        for table, operations in tables(apps):
            cursor.execute(
                f"CREATE TRIGGER omoi_access_changed AFTER {operations} ON {quote(table)} "
                "FOR EACH STATEMENT EXECUTE FUNCTION omoi_access_changed()"
            )


def stop_notifying(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    with schema_editor.connection.cursor() as cursor:
        for table, _ in tables(apps):
            cursor.execute(f"DROP TRIGGER IF EXISTS omoi_access_changed ON {quote(table)}")
        cursor.execute("DROP FUNCTION IF EXISTS omoi_access_changed()")


class Migration(migrations.Migration):
    dependencies = [
        ("board", "0006_event_log_positions"),
        ("sessions", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(notify, stop_notifying)]
