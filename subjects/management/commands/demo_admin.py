"""``manage.py demo_admin``: a superuser and an API token for trying the demo.

The password comes from ``DEMO_ADMIN_PASSWORD`` or defaults to ``tagweave-demo``;
it is a demo convenience, never a production account. Running it again keeps the
same user and token and changes nothing unless the password variable changed.
"""

from __future__ import annotations

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from rest_framework.authtoken.models import Token

DEFAULT_PASSWORD = "tagweave-demo"
USERNAME = "admin"


class Command(BaseCommand):
    help = "Create (idempotently) the demo superuser 'admin' and its API token, and print how to log in."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="http://127.0.0.1:8000", help="Base URL printed for the links.")

    def handle(self, *args, host, **options):
        password = os.environ.get("DEMO_ADMIN_PASSWORD") or DEFAULT_PASSWORD
        with transaction.atomic():
            user, created = get_user_model().objects.get_or_create(
                username=USERNAME, defaults={"is_staff": True, "is_superuser": True, "email": "admin@example.com"}
            )
            changed = created or not (user.is_staff and user.is_superuser and user.is_active)
            if not user.check_password(password):
                user.set_password(password)
                changed = True
            if changed:
                user.is_staff = user.is_superuser = user.is_active = True
                user.save()
            token, _ = Token.objects.get_or_create(user=user)
        state = "created" if created else ("updated" if changed else "unchanged")
        base = host.rstrip("/")
        self.stdout.write(f"Demo superuser {state}.")
        self.stdout.write(f"username: {USERNAME}")
        self.stdout.write(f"password: {password}")
        self.stdout.write(f"token:    {token.key}")
        self.stdout.write(f"admin:    {base}/admin/")
        self.stdout.write(f"api docs: {base}/api/docs/")
        self.stdout.write(f'try:      curl -H "Authorization: Token {token.key}" {base}/api/v1/')
