"""One error shape for the whole API.

``{"error": {"code", "message", "details": [{"index", "field", "message", "code"}]}}``
where ``index`` is the item's position in a batch (``null`` for single objects)
and ``field`` a dotted path (``attributes.age``).
"""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from common.errors import ItemError, ServiceError

logger = logging.getLogger("tagweave.api")


def error_response(code: str, message: str, details: list[dict], status_code: int) -> Response:
    return Response(
        {"error": {"code": code, "message": message, "details": details}},
        status=status_code,
    )


def service_error_response(exc: ServiceError) -> Response:
    return error_response(exc.code, exc.message, [e.as_dict() for e in exc.errors], exc.status_code)


def flatten_drf_errors(data: object, index: int | None = None, prefix: str = "") -> list[ItemError]:
    """DRF's nested error dicts and lists as flat ``ItemError`` rows."""
    if isinstance(data, dict):
        rows: list[ItemError] = []
        for key, value in data.items():
            name = "" if key in ("non_field_errors", "detail") else str(key)
            rows += flatten_drf_errors(value, index, f"{prefix}.{name}" if prefix and name else prefix or name)
        return rows
    if isinstance(data, list):
        if all(not isinstance(v, (dict, list)) for v in data):
            return [ItemError(index, prefix, str(v), getattr(v, "code", "invalid")) for v in data]
        rows = []
        for position, value in enumerate(data):
            rows += flatten_drf_errors(value, index, f"{prefix}.{position}" if prefix else str(position))
        return rows
    return [ItemError(index, prefix, str(data), getattr(data, "code", "invalid"))]


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ServiceError):
        return service_error_response(exc)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    response = drf_exception_handler(exc, context)
    if response is None:
        # An unexpected failure: integrations get the same JSON shape (never an HTML page or
        # a traceback), and the traceback goes to the log with the view that raised it.
        view = context.get("view")
        logger.exception("Unhandled error in %s", type(view).__name__ if view else "API view", exc_info=exc)
        return error_response("server_error", "Internal server error.", [], status.HTTP_500_INTERNAL_SERVER_ERROR)
    if isinstance(exc, exceptions.ValidationError):
        details = [e.as_dict() for e in flatten_drf_errors(exc.detail)]
        return error_response("invalid", "The request is invalid.", details, status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, exceptions.APIException):
        code = exc.default_code
    else:  # Django's Http404 and PermissionDenied, converted by DRF
        code = "not_found" if response.status_code == 404 else "permission_denied"
    detail = getattr(exc, "detail", str(exc))
    response.data = {"error": {"code": code, "message": str(detail), "details": []}}
    return response
