from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("identity", "0002_defaults"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="sourcesystem",
            options={
                "ordering": ["code"],
                "permissions": [
                    (
                        "push_records",
                        "Can push source records from this source system (granted per source system)",
                    )
                ],
            },
        ),
    ]
