from django.apps import AppConfig


class IdentityConfig(AppConfig):
    name = "identity"
    verbose_name = "OneID"

    def ready(self) -> None:
        from . import audit_registry  # noqa: F401  (registers models with auditlog)
