"""Errors that services raise and the API turns into its one error shape."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ItemError:
    """One problem with one item of a batch: ``index`` into the batch, dotted ``field``."""

    index: int | None
    field: str
    message: str
    code: str = "invalid"

    def as_dict(self) -> dict:
        return {
            "index": self.index,
            "field": self.field,
            "message": self.message,
            "code": self.code,
        }


class ServiceError(Exception):
    """A request the domain refuses; nothing was written.

    ``errors`` name each failing item and field so callers can show them all at once.
    """

    status_code = 400

    def __init__(self, message: str, errors: list[ItemError] | None = None, code: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []
        self.code = code

    @classmethod
    def single(cls, field: str, message: str, code: str = "invalid") -> ServiceError:
        return cls(message, [ItemError(None, field, message, code)], code=code)


class ConflictError(ServiceError):
    """The request is valid but collides with concurrent or existing state."""

    status_code = 409
