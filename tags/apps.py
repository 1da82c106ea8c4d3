from django.apps import AppConfig, apps


class TagsConfig(AppConfig):
    name = "tags"
    verbose_name = "Tags"

    def ready(self) -> None:
        from tags import audit_registry  # noqa: F401  (registers models with auditlog)
        from tags.realtime import receivers  # noqa: F401  (real-time engine subscriptions)

        if apps.is_installed("identity"):  # tags works without OneID; with it, values follow merges
            from tags import identity_follow

            identity_follow.connect()
