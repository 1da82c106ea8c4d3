from django.db import migrations


def install(apps, schema_editor):
    from identity.defaults import install_defaults

    install_defaults(apps)


class Migration(migrations.Migration):
    dependencies = [("identity", "0001_initial")]
    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
