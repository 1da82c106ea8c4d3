from django.apps import AppConfig


class SubjectsConfig(AppConfig):
    name = "subjects"
    verbose_name = "Subjects and relationships"

    def ready(self) -> None:
        from . import audit_registry  # noqa: F401  (registers models with auditlog)
