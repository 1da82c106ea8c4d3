"""API throttling: one rate per kind of caller, in the project's error shape.

Anonymous callers (only the schema and 401s reach them) get the ``anon`` rate per address, people
the ``user`` rate, and integration tokens (holders of ``subjects.integration_rate``, the Integration role) their own
``integration`` rate: an integration pushing batches must not starve, nor be starved by, people
using the API. Rates come from ``TAGWEAVE_THROTTLE_ANON`` / ``_USER`` / ``_INTEGRATION``
("1200/min"). A throttled call answers 429 with ``Retry-After`` and the ``throttled`` error code.

Counters live in Django's default cache: with several processes configure a shared cache
(Redis) or each process counts on its own.
"""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

INTEGRATION_RATE_PERMISSION = "subjects.integration_rate"


def is_integration(user) -> bool:
    """Whether ``user`` acts as an integration: holds ``subjects.integration_rate`` (the Integration role).

    A permission, not a group lookup: by the time throttles run, DRF's permission check has
    loaded the user's permissions on the request's user object, so this costs no query.
    Superusers hold every permission and count as people.
    """
    return not user.is_superuser and user.has_perm(INTEGRATION_RATE_PERMISSION)


class RoleRateThrottle(SimpleRateThrottle):
    """``anon``, ``user`` or ``integration`` rate, chosen per request."""

    scope = "user"

    def __init__(self) -> None:  # the rate depends on the request: chosen in allow_request
        pass

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            self.scope = "anon"
        elif is_integration(user):
            self.scope = "integration"
        else:
            self.scope = "user"
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view) -> str:
        ident = request.user.pk if request.user and request.user.is_authenticated else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}
