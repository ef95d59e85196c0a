"""Discovery.discovered_by_agent: the agent that recorded a discovery, which may close it."""

import django.db.models.deletion
from django.db import migrations, models

AGENT_LABEL_PREFIX = "agent:"


def link_recorded_discoveries(apps, schema_editor):
    """Discoveries recorded before the link name their agent in `discovered_by` ("agent:<name>"); names are unique."""
    Agent = apps.get_model("board", "Agent")
    Discovery = apps.get_model("discoveries", "Discovery")
    for agent in Agent.objects.only("pk", "name").iterator():
        Discovery.objects.filter(
            discovered_by=AGENT_LABEL_PREFIX + agent.name, discovered_by_agent__isnull=True
        ).update(discovered_by_agent=agent)


class Migration(migrations.Migration):
    dependencies = [
        ("board", "0002_agents_tasks"),
        ("discoveries", "0001_discovery"),
    ]

    operations = [
        migrations.AddField(
            model_name="discovery",
            name="discovered_by_agent",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="board.agent",
            ),
        ),
        migrations.RunPython(link_recorded_discoveries, migrations.RunPython.noop),
    ]
