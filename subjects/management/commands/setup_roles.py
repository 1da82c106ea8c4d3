"""``manage.py setup_roles``: create or complete the six role groups (also run after ``migrate``)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from subjects.roles import ROLES, ensure_roles


class Command(BaseCommand):
    help = "Create the role groups (HQ admin, HQ analyst, brand operator, …) with their permissions."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Remove permissions a group holds beyond its role's defaults.",
        )
        parser.add_argument("--database", default="default")

    def handle(self, *args, reset: bool, database: str, **options) -> None:
        report = ensure_roles(reset=reset, using=database)
        for code, role in ROLES.items():
            line = f"{role.group}: +{report.added.get(code, 0)}"
            if reset:
                line += f" -{report.removed.get(code, 0)}"
            if code in report.unknown:
                line += f" (no such permission: {', '.join(report.unknown[code])})"
            self.stdout.write(line)
        if report.created_groups:
            self.stdout.write(f"Created: {', '.join(report.created_groups)}")
