"""A GIN (jsonb_path_ops) index on DomainEvent.summary, PostgreSQL only.

The auditors' admin filters domain events by subject and tag as JSON containment
(``summary @> …``); without the index each filter scans the whole log. SQLite (the
embedded default) has no GIN and filters without it.
"""

from django.db import migrations

INDEX = "audit_domainevent_summary_gin"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON audit_domainevent USING gin (summary jsonb_path_ops)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_tag_usage_names")]

    operations = [migrations.RunPython(create, drop)]
