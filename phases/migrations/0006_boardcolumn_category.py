"""Columns get a category (waiting, working, done) for flow analytics; existing columns get a sensible one.

Terminal columns are done; Backlog and Blocked (the default workflow's keys,
which files descended from OmoiOS's share) wait, as does each workflow's first
column; the rest are working. The default workflow's columns come out as its
file now says: backlog and blocked waiting, analyzing to deploying working,
done done.
"""

from django.db import migrations, models

WAITING_KEYS = {"backlog", "blocked"}


def set_categories(apps, schema_editor):
    BoardColumn = apps.get_model("phases", "BoardColumn")
    first_seen = set()
    for column in BoardColumn.objects.order_by("workflow_id", "sequence_order", "key"):
        first = column.workflow_id not in first_seen
        first_seen.add(column.workflow_id)
        if column.is_terminal:
            category = "done"
        elif first or column.key in WAITING_KEYS:
            category = "waiting"
        else:
            category = "working"
        if column.category != category:
            column.category = category
            column.save(update_fields=["category"])


class Migration(migrations.Migration):
    dependencies = [("phases", "0005_default_workflow_tasks_and_outputs")]

    operations = [
        migrations.AddField(
            model_name="boardcolumn",
            name="category",
            field=models.CharField(
                choices=[
                    ("waiting", "Waiting (queued, nobody works on it)"),
                    ("working", "Working (in progress)"),
                    ("done", "Done (finished)"),
                ],
                default="working",
                help_text="How flow analytics count the column: cycle time runs from the first working column to done.",
                max_length=8,
            ),
        ),
        migrations.RunPython(set_categories, migrations.RunPython.noop),
    ]
