"""Writes of the OneID rules (source systems, identifier types, composite keys, blocked
values, survivorship rules): validated, saved, logged to django-auditlog with the actor."""

from __future__ import annotations

import re
from collections.abc import Mapping

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import ProtectedError

from audit.services import acting_as
from common.errors import ItemError, ServiceError
from subjects.models import SubjectCategory

from ..models import BlockedValue, CompositeKey, IdentifierType, SourceSystem
from ..normalize import NORMALIZERS


def check_rules(instance: models.Model) -> None:
    if isinstance(instance, SourceSystem):
        schema = instance.subject_type.attribute_schema if instance.subject_type_id else {}
        if schema.get("required"):
            raise ServiceError.single(
                "subject_type",
                "The OneID subject type must not require attributes: a OneID may come from a source that lacks them.",
            )
        if instance.brand_id and instance.brand.subject_type.scope_role != "brand":
            raise ServiceError.single("brand", "Must be a brand subject.")
        if instance.subject_type_id and instance.subject_type.category == SubjectCategory.RELATIONSHIP:
            raise ServiceError.single("subject_type", "Relationship subject types cannot be OneIDs.")
    if isinstance(instance, IdentifierType):
        if instance.normalizer not in NORMALIZERS:
            raise ServiceError.single("normalizer", f"Use one of: {', '.join(sorted(NORMALIZERS))}.")
        if (
            not isinstance(instance.fields, list)
            or not instance.fields
            or not all(isinstance(f, str) and f for f in instance.fields)
        ):
            raise ServiceError.single("fields", "Give a non-empty list of raw field names.")
    if isinstance(instance, CompositeKey):
        codes = set(IdentifierType.objects.values_list("code", flat=True))
        if (
            not isinstance(instance.parts, list)
            or len(instance.parts) < 2
            or not all(p in codes for p in instance.parts)
        ):
            raise ServiceError.single("parts", "Give at least two identifier type codes.")
    if isinstance(instance, BlockedValue) and instance.pattern:
        try:
            re.compile(instance.pattern)
        except re.error as exc:
            raise ServiceError.single("pattern", f"Not a regular expression: {exc}") from None


def config_save(*, actor, model: type[models.Model], data: Mapping, instance: models.Model | None = None):
    """Create ``model`` from ``data`` or update ``instance``; all checks before the write."""
    obj = instance or model()
    for name, value in data.items():
        setattr(obj, name, value)
    try:
        obj.full_clean()
    except ValidationError as exc:
        raise ServiceError(
            "The object is invalid.",
            [ItemError(None, f, str(m)) for f, ms in exc.message_dict.items() for m in ms],
        ) from None
    check_rules(obj)
    with transaction.atomic(), acting_as(actor):
        obj.save()
    return obj


def config_delete(*, actor, instance: models.Model) -> None:
    try:
        with transaction.atomic(), acting_as(actor):
            instance.delete()
    except ProtectedError:
        raise ServiceError.single(
            "", f"{instance} is in use (records or identifiers refer to it).", "protected"
        ) from None
