"""Writes of the OneID rules (source systems, identifier types, composite keys, blocked
values, survivorship rules): validated, saved, logged to django-auditlog with the actor.

A change that alters what extraction or resolution makes of the stored records (a blocked
value, a type's fields or limits, a source's app) enqueues, once committed, the re-application
of the rules to every record (``identity.reapply_rules``): stored identifiers are re-derived and
the partition recomputed. A survivorship rule or a source's trust rank refreshes golden records.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import ProtectedError

from audit.services import acting_as
from common.errors import ItemError, ServiceError
from subjects.models import SubjectCategory

from ..models import BlockedValue, CompositeKey, IdentifierType, SourceSystem, SurvivorshipRule
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


# Per rules model: the fields whose change alters identifiers or the partition (None: every change
# does) and the fields whose change alters golden records only.
EXTRACTION_FIELDS: dict[type[models.Model], tuple[str, ...] | None] = {
    IdentifierType: None,
    CompositeKey: None,
    BlockedValue: None,
    SourceSystem: ("code", "app_id", "open_platform_id", "subject_type_id"),
}
GOLDEN_FIELDS: dict[type[models.Model], tuple[str, ...] | None] = {
    SurvivorshipRule: None,
    SourceSystem: ("trust_rank",),
}


def _stored(model: type[models.Model], pk) -> dict | None:
    if pk is None:
        return None
    return model.objects.filter(pk=pk).values().first()


def _touches(fields: tuple[str, ...] | None, before: dict | None, obj: models.Model, created: bool) -> bool:
    """Whether saving ``obj`` changed one of ``fields`` (``None``: any field; a new row: only then)."""
    if created or before is None:
        return fields is None  # a new rule applies to every record; a new source system has none yet
    names = fields if fields is not None else [f.attname for f in obj._meta.concrete_fields]
    return any(before.get(name) != getattr(obj, name) for name in names)


REAPPLY_SCHEDULED = "_tagweave_reapply_scheduled"  # set on the saved / deleted object when a run was asked for


def _schedule_reapply(obj: models.Model, actor, *, extraction: bool, golden: bool) -> None:
    """After commit, re-apply the rules to the stored records (a Celery task; in process when eager)."""
    setattr(obj, REAPPLY_SCHEDULED, extraction or golden)
    if not (extraction or golden):
        return

    def request() -> None:
        from ..tasks import reapply_rules
        from .reapply import reapply_request

        reapply_rules.delay(reapply_request(actor=actor, refresh_golden=golden).pk)

    # robust: in eager mode a failing run is recorded on the run and logged, not raised into the
    # request that saved the rule
    transaction.on_commit(request, robust=True)


def config_save(*, actor, model: type[models.Model], data: Mapping, instance: models.Model | None = None):
    """Create ``model`` from ``data`` or update ``instance``; all checks before the write."""
    obj = instance or model()
    created = obj.pk is None
    before = _stored(model, obj.pk)
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
        _schedule_reapply(
            obj,
            actor,
            extraction=model in EXTRACTION_FIELDS and _touches(EXTRACTION_FIELDS[model], before, obj, created),
            golden=model in GOLDEN_FIELDS and _touches(GOLDEN_FIELDS[model], before, obj, created),
        )
    return obj


def config_delete(*, actor, instance: models.Model) -> None:
    try:
        with transaction.atomic(), acting_as(actor):
            model = type(instance)
            instance.delete()
            _schedule_reapply(
                instance,
                actor,
                extraction=EXTRACTION_FIELDS.get(model, ()) is None,
                golden=GOLDEN_FIELDS.get(model, ()) is None,
            )
    except ProtectedError:
        raise ServiceError.single(
            "", f"{instance} is in use (records or identifiers refer to it).", "protected"
        ) from None
