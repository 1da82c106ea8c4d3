from django.apps import AppConfig
from django.db.models.signals import post_migrate


class SubjectsConfig(AppConfig):
    name = "subjects"
    verbose_name = "Subjects and relationships"

    def ready(self) -> None:
        from . import audit_registry  # noqa: F401  (registers models with auditlog)
        from .roles import ensure_roles_after_migrate

        post_migrate.connect(ensure_roles_after_migrate, dispatch_uid="subjects.ensure_roles")
