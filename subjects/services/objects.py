"""Single-object writes: types, subjects and relationships one at a time.

Subjects and relationships go through the same validation and guarded write as
the bulk services (a batch of one), so the admin, the API and imports cannot
disagree about what is valid. Because that write is SQL, the field diff is
logged to django-auditlog here, with the actor given explicitly.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from auditlog.context import disable_auditlog
from auditlog.diff import model_instance_diff
from auditlog.models import LogEntry
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, F, ProtectedError, Q

from audit.services import audit_log_entry, domain_event_record
from common.errors import ConflictError, ItemError, ServiceError

from ..models import (
    Cardinality,
    Relationship,
    RelationshipType,
    Subject,
    SubjectCategory,
    SubjectType,
)
from ..schemas import schema_definition_errors
from .relationship_bulk import relationship_bulk_upsert
from .scope_checks import require_visible
from .subject_bulk import subject_bulk_upsert

TYPE_FIELDS = (
    "code",
    "name",
    "category",
    "description",
    "attribute_schema",
    "scope_role",
)
RELATIONSHIP_TYPE_FIELDS = (
    "code",
    "name",
    "description",
    "from_type",
    "to_type",
    "cardinality",
    "taggable",
    "attribute_schema",
)


def _single(exc: ServiceError) -> ServiceError:
    """A batch-of-one error without the meaningless ``index`` (and with the batch's status)."""
    single = ServiceError(
        exc.message if len(exc.errors) != 1 else exc.errors[0].message,
        [ItemError(None, e.field, e.message, e.code) for e in exc.errors],
        exc.code,
    )
    single.status_code = exc.status_code
    return single


def _diff(old, new) -> dict | None:
    """Field diff over the model's own columns (not reverse relations)."""
    model = type(old if old is not None else new)
    return model_instance_diff(old, new, fields_to_check=[f.name for f in model._meta.concrete_fields])


def _log(instance, old, actor) -> None:
    """The django-auditlog entry of one write, with the actor given explicitly and PII masked.

    Services write these themselves (model signals are disabled around their
    writes): subjects and relationships are written by SQL, which signals never see,
    and token users and tasks are invisible to auditlog's middleware.
    """
    if old is None:
        action, changes = LogEntry.Action.CREATE, _diff(None, instance)
    else:
        action, changes = LogEntry.Action.UPDATE, _diff(old, instance)
        if not changes:
            return
    audit_log_entry(instance, action=action, changes=changes, actor=actor)


def _check_schema(schema: object) -> None:
    problems = schema_definition_errors(schema)
    if problems:
        path, message = problems[0]
        raise ServiceError.single(
            "attribute_schema" + (f".{path}" if path else ""),
            f"Invalid JSON Schema: {message}",
        )


# Subject types ---------------------------------------------------------------------------


def subject_type_save(*, actor, data: Mapping, instance: SubjectType | None = None) -> SubjectType:
    """Create a subject type, or update ``instance`` with ``data``."""
    _check_schema(data.get("attribute_schema", instance.attribute_schema if instance else {}))
    subject_type = instance or SubjectType()
    old = copy.copy(instance) if instance else None
    for name in TYPE_FIELDS:
        if name in data:
            setattr(subject_type, name, data[name])
    if old and old.scope_role != subject_type.scope_role and subject_type.subjects.exists():
        raise ServiceError.single("scope_role", "The scope role of a type that has subjects cannot change.")
    _full_clean(subject_type)
    with transaction.atomic(), disable_auditlog():
        subject_type.save()
        _log(subject_type, old, actor)
    return subject_type


def subject_type_delete(*, actor, subject_type: SubjectType) -> None:
    """Delete a type that nothing uses; refuse, saying what uses it, otherwise."""
    count = subject_type.subjects.count()
    if count:
        raise ServiceError.single(
            "subject_type",
            f"Subject type '{subject_type.code}' has {count} subjects; delete or move them first.",
            "protected",
        )
    used = (
        RelationshipType.objects.filter(from_type=subject_type)
        | RelationshipType.objects.filter(to_type=subject_type)
        | RelationshipType.objects.filter(subject_type=subject_type)
    )
    codes = sorted(used.values_list("code", flat=True))
    if codes:
        raise ServiceError.single(
            "subject_type",
            f"Subject type '{subject_type.code}' is used by relationship types: {', '.join(codes)}.",
            "protected",
        )
    with transaction.atomic(), disable_auditlog():
        audit_log_entry(subject_type, action=LogEntry.Action.DELETE, changes=_diff(subject_type, None), actor=actor)
        subject_type.delete()


# Relationship types ----------------------------------------------------------------------


def relationship_type_save(*, actor, data: Mapping, instance: RelationshipType | None = None) -> RelationshipType:
    _check_schema(data.get("attribute_schema", instance.attribute_schema if instance else {}))
    rtype = instance or RelationshipType()
    old = copy.copy(instance) if instance else None
    for name in RELATIONSHIP_TYPE_FIELDS:
        if name in data:
            setattr(rtype, name, data[name])
    has_relationships = bool(old) and rtype.relationships.exists()
    if has_relationships:
        for name in ("from_type_id", "to_type_id", "taggable"):
            if getattr(old, name) != getattr(rtype, name):
                raise ServiceError.single(
                    name.removesuffix("_id"),
                    f"'{name.removesuffix('_id')}' cannot change on a type that has relationships.",
                )
    _full_clean(rtype)
    with transaction.atomic(), disable_auditlog():
        if rtype.taggable and rtype.subject_type_id is None:
            rtype.subject_type = _relationship_subject_type(actor, rtype)
        rtype.save()
        if has_relationships and old.cardinality != rtype.cardinality:
            rows = _reslot(rtype)
            domain_event_record(
                actor=actor,
                action="relationships.cardinality_reslotted",
                object_type="subjects.relationship",
                row_count=rows,
                summary={"relationship_type": rtype.code, "from": old.cardinality, "to": rtype.cardinality},
            )
        _log(rtype, old, actor)
    return rtype


def _relationship_subject_type(actor, rtype: RelationshipType) -> SubjectType:
    """The subject type that a taggable relationship type's relationships are subjects of."""
    code = f"rel_{rtype.code}"
    if len(code) > 64 or SubjectType.objects.filter(code=code).exists():
        raise ServiceError.single(
            "code", f"Subject type '{code}' is needed for a taggable type and is taken (or too long)."
        )
    subject_type = SubjectType.objects.create(
        code=code,
        name=rtype.name,
        category=SubjectCategory.RELATIONSHIP,
        description=f"Subjects of the {rtype.code} relationships, so that they can carry tags.",
    )
    _log(subject_type, None, actor)
    return subject_type


def _reslot(rtype: RelationshipType) -> int:
    """Recompute cardinality slots for a new cardinality, refusing if stored data violates it."""
    open_rels = rtype.relationships.filter(valid_to__isnull=True)
    for end, unique in (
        ("from", Cardinality.from_is_unique),
        ("to", Cardinality.to_is_unique),
    ):
        if not unique(rtype.cardinality):
            continue
        clash = (
            open_rels.values(f"{end}_subject")
            .annotate(n=Count("id"))
            .filter(n__gt=1)
            .values_list(f"{end}_subject", flat=True)[:5]
        )
        if clash:
            raise ServiceError.single(
                "cardinality",
                f"Open relationships violate {rtype.cardinality}: subjects {', '.join(map(str, clash))} have several on the '{end}' side.",
            )
    cleared = rtype.relationships.update(from_slot=None, to_slot=None)
    if Cardinality.from_is_unique(rtype.cardinality):
        open_rels.update(from_slot=F("from_subject_id"))
    if Cardinality.to_is_unique(rtype.cardinality):
        open_rels.update(to_slot=F("to_subject_id"))
    return cleared


def relationship_type_delete(*, actor, relationship_type: RelationshipType) -> None:
    count = relationship_type.relationships.count()
    if count:
        raise ServiceError.single(
            "relationship_type",
            f"Relationship type '{relationship_type.code}' has {count} relationships; delete them first.",
            "protected",
        )
    with transaction.atomic(), disable_auditlog():
        audit_log_entry(
            relationship_type, action=LogEntry.Action.DELETE, changes=_diff(relationship_type, None), actor=actor
        )
        subject_type = relationship_type.subject_type
        relationship_type.delete()
        if subject_type is not None:
            try:
                subject_type.delete()
            except ProtectedError as exc:
                raise ServiceError.single(
                    "relationship_type",
                    f"Subject type '{subject_type.code}' still has subjects; delete them first.",
                    "protected",
                ) from exc


# Subjects and relationships --------------------------------------------------------------


def subject_save(*, actor, data: Mapping, instance: Subject | None = None) -> Subject:
    """Create a subject, or update ``instance``; its type and external key cannot change."""
    item = dict(data)
    if instance is not None:
        item = {**_subject_item(instance), **item}
        for name, current in (
            ("type", instance.subject_type.code),
            ("source", instance.source),
            ("external_id", instance.external_id),
        ):
            if item[name] != current:
                raise ServiceError.single(name, f"'{name}' identifies the subject and cannot change.")
    old = Subject.objects.get(pk=instance.pk) if instance else None
    with transaction.atomic(), disable_auditlog():
        try:
            result = subject_bulk_upsert(actor=actor, items=[item], action="subjects.saved")
        except ServiceError as exc:
            raise _single(exc) from exc
        if instance is None and result.results[0].status != "created":
            raise ConflictError.single(
                "external_id", "A subject with this type, source and external_id exists; update it instead.", "exists"
            )
        subject = Subject.objects.select_related("subject_type").get(pk=result.results[0].id)
        _log(subject, old, actor)
    return subject


def _subject_item(subject: Subject) -> dict:
    return {
        "type": subject.subject_type.code,
        "source": subject.source,
        "external_id": subject.external_id,
        "display_name": subject.display_name,
        "attributes": subject.attributes,
        "business_line": subject.business_line_id,
        "brand": subject.brand_id,
        "region": subject.region_id,
        "parent": subject.parent_id,
    }


def subject_delete(*, actor, subject: Subject) -> None:
    """Delete a subject with its relationships (and their relationship subjects)."""
    require_visible(actor, [subject.pk], "subject")
    touching = Relationship.objects.filter(Q(from_subject=subject) | Q(to_subject=subject))
    try:
        with transaction.atomic(), disable_auditlog():
            audit_log_entry(subject, action=LogEntry.Action.DELETE, changes=_diff(subject, None), actor=actor)
            relationship_ids = list(touching.values_list("id", flat=True))
            own_subjects = list(touching.exclude(subject=None).values_list("subject_id", flat=True))
            subject.delete()
            Subject.objects.filter(id__in=own_subjects).delete()
            if relationship_ids:
                domain_event_record(
                    actor=actor,
                    action="relationships.deleted_with_subject",
                    object_type="subjects.relationship",
                    row_count=len(relationship_ids),
                    summary={
                        "subject_id": subject.pk,
                        "ids": relationship_ids,
                        "relationship_subject_ids": own_subjects,
                    },
                )
    except ProtectedError as exc:
        raise ServiceError.single(
            "subject",
            f"{subject} is the scope or parent of {len(exc.protected_objects)} subjects; move them first.",
            "protected",
        ) from exc


def relationship_save(*, actor, data: Mapping, instance: Relationship | None = None) -> Relationship:
    item = dict(data)
    if instance is not None:
        item = {**_relationship_item(instance), **item}
        for name, current in (
            ("type", instance.relationship_type.code),
            ("source", instance.source),
            ("external_id", instance.external_id),
        ):
            if item[name] != current:
                raise ServiceError.single(name, f"'{name}' identifies the relationship and cannot change.")
    old = Relationship.objects.get(pk=instance.pk) if instance else None
    with transaction.atomic(), disable_auditlog():
        try:
            result = relationship_bulk_upsert(actor=actor, items=[item], action="relationships.saved")
        except ServiceError as exc:
            raise _single(exc) from exc
        if instance is None and result.results[0].status != "created":
            raise ConflictError.single(
                "external_id",
                "A relationship with this type, source and external_id exists; update it instead.",
                "exists",
            )
        relationship = Relationship.objects.select_related("relationship_type").get(pk=result.results[0].id)
        _log(relationship, old, actor)
    return relationship


def _relationship_item(rel: Relationship) -> dict:
    return {
        "type": rel.relationship_type.code,
        "source": rel.source,
        "external_id": rel.external_id,
        "from": rel.from_subject_id,
        "to": rel.to_subject_id,
        "weight": rel.weight,
        "valid_from": rel.valid_from.isoformat() if rel.valid_from else None,
        "valid_to": rel.valid_to.isoformat() if rel.valid_to else None,
        "attributes": rel.attributes,
    }


def relationship_delete(*, actor, relationship: Relationship) -> None:
    require_visible(actor, [relationship.from_subject_id, relationship.to_subject_id], "relationship")
    with transaction.atomic(), disable_auditlog():
        audit_log_entry(relationship, action=LogEntry.Action.DELETE, changes=_diff(relationship, None), actor=actor)
        subject = relationship.subject
        relationship.delete()
        if subject is not None:
            subject.delete()


def _actor(actor):
    return actor if actor is not None and actor.is_authenticated else None


def _full_clean(instance) -> None:
    try:
        instance.full_clean()
    except ValidationError as exc:
        raise ServiceError(
            "The object is invalid.",
            [ItemError(None, "" if f == "__all__" else f, m) for f, ms in exc.message_dict.items() for m in ms],
        ) from exc
