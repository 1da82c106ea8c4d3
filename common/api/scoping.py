"""The base every DRF viewset over scoped data inherits, so a subclass cannot forget the scope.

``ScopedQuerysetMixin`` filters ``get_queryset`` through ``subjects.access`` (the one scope
function): list, detail, custom actions and the objects a write looks up all start from it, so an
object out of scope is absent (404), never "forbidden" (which would confirm it exists). It also
limits the querysets of writable related fields (a ``PrimaryKeyRelatedField`` to ``Subject``)
to visible objects: DRF does not filter them, so without this a user could link to a subject
they cannot see (RELIABILITY.md, DRF traps).
"""

from __future__ import annotations

from django.db.models import Q, QuerySet
from rest_framework import serializers

from subjects.access import visible_subject_filter, visible_subjects


def scope_filter(user, fields: str | tuple[str, ...]) -> Q:
    """The condition "every subject column in ``fields`` is visible to ``user``"; ``""`` is the row itself."""
    names = (fields,) if isinstance(fields, str) else fields
    condition = Q()
    for name in names:
        condition &= visible_subject_filter(user, name or "pk")
    return condition


def scope_queryset(queryset: QuerySet, user, fields: str | tuple[str, ...]) -> QuerySet:
    """``queryset`` restricted to the rows whose subject columns ``fields`` are visible to ``user``."""
    if fields == "":
        return visible_subjects(user, queryset)
    return queryset.filter(scope_filter(user, fields))


class ScopedQuerysetMixin:
    """Put first among a viewset's bases: ``class V(ScopedQuerysetMixin, ModelViewSet)``.

    ``scope_field`` names the subject column(s) that decide visibility: ``""`` for the Subject
    model itself, ``"subject"`` for tag values or source records, ``("from_subject",
    "to_subject")`` for relationships (both ends must be visible). ``None`` means "not scoped"
    and must be said explicitly (reference data such as subject types), so that a viewset over a
    new scoped model cannot slip through by default.
    """

    scope_field: str | tuple[str, ...] | None

    def get_queryset(self):
        queryset = super().get_queryset()
        if not hasattr(self, "scope_field"):
            raise AssertionError(f"{type(self).__name__} must set scope_field (None: not scoped).")
        if self.scope_field is None:
            return queryset
        return scope_queryset(queryset, self.request.user, self.scope_field)

    def get_serializer(self, *args, **kwargs):
        serializer = super().get_serializer(*args, **kwargs)
        if self.request is not None and getattr(self.request, "method", "GET") not in ("GET", "HEAD", "OPTIONS"):
            limit_related_fields(serializer, self.request.user)
        return serializer


def limit_related_fields(serializer, user) -> None:
    """Limit every writable related field that points at subjects (or relationships) to visible rows."""
    from subjects.models import Relationship, Subject

    root = getattr(serializer, "child", serializer)  # a ListSerializer's items
    fields = getattr(root, "fields", {})
    for field in fields.values():
        related = field.child_relation if isinstance(field, serializers.ManyRelatedField) else field
        if not isinstance(related, serializers.RelatedField) or related.read_only:
            continue
        queryset = related.queryset
        if queryset is None:
            continue
        if queryset.model is Subject:
            related.queryset = visible_subjects(user, queryset)
        elif queryset.model is Relationship:
            related.queryset = queryset.filter(scope_filter(user, ("from_subject", "to_subject")))
        elif _has_subject_fk(queryset.model):
            related.queryset = queryset.filter(visible_subject_filter(user, "subject"))


def _has_subject_fk(model) -> bool:
    """Whether ``model`` belongs to a subject through a ``subject`` FK (tag values, source records…)."""
    from django.core.exceptions import FieldDoesNotExist

    from subjects.models import Subject

    try:
        field = model._meta.get_field("subject")
    except FieldDoesNotExist:
        return False
    return getattr(field, "related_model", None) is Subject
