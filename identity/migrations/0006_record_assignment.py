"""Which OneID a record belongs to moves from ``SourceRecord.oneid`` to the narrow ``RecordAssignment``;
the OneIDs' heir column gets a partial index.

The assignments are copied by one ``INSERT … SELECT`` (the same SQL on PostgreSQL and SQLite)
before the column is dropped; reversing copies them back.
"""

import django.db.models.deletion
from django.db import migrations, models

FORWARD = (
    "INSERT INTO identity_recordassignment (record_id, oneid_id)"
    " SELECT id, oneid_id FROM identity_sourcerecord WHERE oneid_id IS NOT NULL"
)
BACKWARD = (
    "UPDATE identity_sourcerecord SET oneid_id = (SELECT a.oneid_id FROM identity_recordassignment a"
    " WHERE a.record_id = identity_sourcerecord.id)"
)


class Migration(migrations.Migration):
    dependencies = [
        ("identity", "0005_reapply_run"),
        ("subjects", "0005_subject_type_single_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="RecordAssignment",
            fields=[
                (
                    "record",
                    models.OneToOneField(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="assignment",
                        serialize=False,
                        to="identity.sourcerecord",
                    ),
                ),
                (
                    "oneid",
                    models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="record_assignments",
                        to="subjects.subject",
                    ),
                ),
            ],
            options={"verbose_name": "record assignment"},
        ),
        migrations.RunSQL(FORWARD, BACKWARD, elidable=False),
        migrations.RemoveField(model_name="sourcerecord", name="oneid"),
        # Only retired OneIDs have an heir: the index holds those alone.
        migrations.AlterField(
            model_name="oneid",
            name="merged_into",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="subjects.subject",
            ),
        ),
        migrations.AddIndex(
            model_name="oneid",
            index=models.Index(
                condition=models.Q(("merged_into__isnull", False)), fields=["merged_into"], name="oneid_merged_into_idx"
            ),
        ),
    ]
