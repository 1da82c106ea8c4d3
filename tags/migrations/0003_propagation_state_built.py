import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tags", "0002_propagation_state_refresh_requests"),
    ]

    operations = [
        migrations.CreateModel(
            name="PropagationStateBuilt",
            fields=[
                (
                    "tag",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="tags.tagdefinition",
                    ),
                ),
                ("built_at", models.DateTimeField()),
                (
                    "rule",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="tags.tagrule"
                    ),
                ),
            ],
        ),
    ]
