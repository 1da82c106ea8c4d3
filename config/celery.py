"""Celery application.

Without ``CELERY_BROKER_URL`` the settings switch Celery to eager mode, so the
same task code runs in process (the embedded default of ``make run``).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("tagweave")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Task modules outside ``<app>.tasks``: the real-time engine's.
app.autodiscover_tasks(["tags.realtime"])
