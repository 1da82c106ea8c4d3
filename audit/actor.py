"""Who is acting: the actor of every audit record, set explicitly where middleware cannot see it.

django-auditlog's middleware reads ``request.user`` before DRF authenticates a token, and Celery
tasks have no request at all, so both would log changes with no actor. Here:

- ``acting_as(user)`` sets the actor for a block (tasks: the job's requesting user or a named
  ``system_actor``); it nests and is reset on exit (auditlog's own ``set_actor`` is not).
- ``ActorMiddleware`` remembers the request for its duration; ``current_actor()`` then resolves
  ``request.user`` lazily, i.e. after DRF has authenticated the token (DRF writes the user back
  to the Django request).
- A ``pre_save`` guard on auditlog's ``LogEntry`` fills a missing actor from ``current_actor()``
  and masks personal data of PII models, so no code path stores plaintext PII or loses the actor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_actor: ContextVar[object | None] = ContextVar("tagweave_audit_actor", default=None)
_request: ContextVar[object | None] = ContextVar("tagweave_audit_request", default=None)


def _authenticated(user) -> bool:
    return user is not None and bool(getattr(user, "is_authenticated", False))


@contextlib.contextmanager
def acting_as(actor) -> Iterator[None]:
    """Attribute every audit record written inside the block to ``actor`` (a user or ``None``)."""
    token = _actor.set(actor if _authenticated(actor) else None)
    try:
        yield
    finally:
        _actor.reset(token)


def current_actor():
    """The explicit actor of the block, else the current request's authenticated user, else ``None``."""
    actor = _actor.get()
    if actor is not None:
        return actor
    request = _request.get()
    user = getattr(request, "user", None) if request is not None else None
    return user if _authenticated(user) else None


def system_actor(name: str):
    """The named system user (``system:<name>``) that background work acts as when no user asked.

    Inactive with an unusable password: it can never log in; it only names the actor in the log.
    """
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    username = f"system:{name}"[:150]
    user = user_model.objects.filter(username=username).first()
    if user is None:
        user, created = user_model.objects.get_or_create(username=username, defaults={"is_active": False})
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
    return user


class ActorMiddleware:
    """Makes the request's (lazily authenticated) user the default actor; after AuditlogMiddleware."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        token = _request.set(request)
        try:
            return self.get_response(request)
        finally:
            _request.reset(token)
