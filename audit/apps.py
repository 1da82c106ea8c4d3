from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit"

    def ready(self) -> None:
        # The tag usage pages register with the admin site (audit/admin.py holds the audit log's).
        from . import usage_admin  # noqa: F401
