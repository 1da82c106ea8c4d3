"""Writing audit records; called by the services of every app inside their transaction.

Two layers: django-auditlog ``LogEntry`` rows (field diffs of one object, written by the services
with ``audit_log_entry`` or by auditlog's signals for the models registered in each app's
``audit_registry``) and ``DomainEvent`` rows (one per operation, bulk and set-based ones included).
Both get the actor explicitly (``audit.actor``) and neither stores personal data in clear: a diff
of a PII field records *that* it changed (``MASK`` → ``MASK_CHANGED``), never the values, because an
append-only log full of plaintext PII could not honour an erasure request.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from contextvars import ContextVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models.signals import pre_save

from .actor import acting_as, current_actor, system_actor
from .models import DomainEvent

__all__ = [
    "acting_as",
    "audit_log_entry",
    "bulk_write_record",
    "current_actor",
    "domain_event_record",
    "mask_changes",
    "operation_record",
    "system_actor",
]

MASK_CHANGED = "*** (changed)"

# Fields of each model whose values are personal data wherever they are diffed or shown.
# "attributes" fields are masked key by key (subjects.pii); the others wholly.
PII_FIELDS: dict[str, tuple[str, ...]] = {
    "subjects.subject": ("display_name", "attributes"),
    "subjects.relationship": ("attributes",),
    "identity.sourcerecord": ("raw", "external_id"),
    "identity.identifier": ("value", "scope"),
    "identity.blockedvalue": ("value",),
    "identity.mergeevent": ("evidence",),
    "identity.matchsuggestion": ("evidence",),
    "identity.donotlink": ("reason",),
}


def domain_event_record(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    action: str,
    object_type: str = "",
    row_count: int = 0,
    summary: Mapping | None = None,
    correlation_id: uuid.UUID | None = None,
) -> DomainEvent:
    """One domain event; without an authenticated ``actor`` it is attributed to ``current_actor()``."""
    return DomainEvent.objects.create(
        action=action,
        actor=actor if actor is not None and actor.is_authenticated else current_actor(),
        object_type=object_type,
        row_count=row_count,
        summary=dict(summary or {}),
        correlation_id=correlation_id or uuid.uuid4(),
    )


def bulk_write_record(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    action: str,
    object_type: str,
    counts: Mapping[str, int],
    ids: list[int],
    correlation_id: uuid.UUID | None = None,
    extra: Mapping | None = None,
) -> uuid.UUID:
    """Record one bulk write with the ids it wrote (and ``extra`` summary keys); returns its correlation id.

    A batch that wrote nothing (every item unchanged) leaves no event, so an
    idempotent re-run changes nothing at all. Callers pass one ``correlation_id``
    for all the batches of one operation (a CSV import in chunks).
    """
    correlation_id = correlation_id or uuid.uuid4()
    if ids:
        domain_event_record(
            actor=actor,
            action=action,
            object_type=object_type,
            row_count=len(ids),
            summary={**counts, "ids": ids, **(extra or {})},
            correlation_id=correlation_id,
        )
    return correlation_id


def operation_record(
    *,
    actor,
    action: str,
    object_type: str,
    row_count: int,
    correlation_id: uuid.UUID,
    summary: Mapping | None = None,
) -> DomainEvent | None:
    """The one event of a set-based operation (merge, split, propagation…): what, who, how many rows.

    ``correlation_id`` is required: it links this event with the entries the operation's steps
    wrote (chunks, resolutions, value history). An operation that changed no row leaves none.
    """
    if not row_count:
        return None
    return domain_event_record(
        actor=actor,
        action=action,
        object_type=object_type,
        row_count=row_count,
        summary=summary,
        correlation_id=correlation_id,
    )


# Field diffs (django-auditlog) ---------------------------------------------------------------


def _label(model_or_instance) -> str:
    return model_or_instance._meta.label_lower


def mask_changes(label: str, changes: Mapping | None, pii_type=None, *, type_known: bool = False) -> dict | None:
    """``changes`` ({field: [old, new]}) with every PII value replaced; a change stays visible.

    ``pii_type`` is the subject or relationship type of the object (its schema marks PII
    attributes; its category says whether the display name is PII). Without it (``type_known``
    False) the display name counts as PII: over-masking an organisation's name is the safe error.
    """
    if not changes:
        return changes
    from subjects import pii

    fields = PII_FIELDS.get(label, ())
    masked = {}
    for name, pair in changes.items():
        if name not in fields or not isinstance(pair, (list, tuple)) or len(pair) != 2:
            masked[name] = pair
        elif name == "attributes":
            masked[name] = _mask_json_pair(pair, pii.pii_attribute_keys(pii_type))
        elif name == "display_name" and type_known and not pii.is_pii_type(pii_type):
            masked[name] = pair
        else:
            masked[name] = _mask_pair(pair)
    return masked


def _mask_pair(pair) -> list:
    """[old, new] of a wholly personal field: ``MASK`` for a value, emptiness kept, change marked."""
    from subjects.pii import MASK

    old, new = (_masked_scalar(None if v == "None" else v) for v in pair)
    if old == MASK and new == MASK:
        new = MASK_CHANGED
    return [old, new]


def _masked_scalar(value):
    from subjects.pii import MASK

    if value in (None, "", "{}", "[]"):
        return value
    return MASK


def _mask_json_pair(pair, keys) -> list:
    """Attributes diffs: keys kept, PII values masked, a changed PII value marked as changed."""
    from subjects.pii import MASK, is_pii_key, mask_attributes

    old, new = (_loads(v) for v in pair)
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return [mask_attributes(old, keys) if old is not None else None, mask_attributes(new, keys)]
    masked_old = mask_attributes(old, keys)
    masked_new = mask_attributes(new, keys)
    for key, value in new.items():
        if is_pii_key(key, keys) and key in old and old[key] != value and masked_new.get(key) == MASK:
            masked_new[key] = MASK_CHANGED
    return [json.dumps(masked_old, sort_keys=True), json.dumps(masked_new, sort_keys=True)]


def _loads(value):
    if value is None or isinstance(value, (Mapping, list)):
        return value
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _pii_type(instance):
    return getattr(instance, "subject_type", None) or getattr(instance, "relationship_type", None)


def audit_log_entry(instance, *, action: int, changes: dict | None, actor):
    """The django-auditlog entry of one service write: explicit actor, PII masked, masked label.

    ``object_repr`` is taken with labels masked even when the caller renders revealed data.
    """
    from auditlog.models import LogEntry

    from subjects import pii

    label = _label(instance)
    pii_type = _pii_type(instance)
    if label in PII_FIELDS:
        changes = mask_changes(label, changes, pii_type, type_known=pii_type is not None)
    with pii.masked_labels():
        representation = str(instance)
    token = _masked_by_service.set(True)
    try:
        return LogEntry.objects.log_create(
            instance,
            action=action,
            changes=changes,
            actor=actor if actor is not None and getattr(actor, "is_authenticated", False) else current_actor(),
            object_repr=representation,
        )
    finally:
        _masked_by_service.reset(token)


_masked_by_service: ContextVar[bool] = ContextVar("tagweave_log_masked", default=False)


def _guard_log_entry(sender, instance, **kwargs) -> None:
    """Last line for every LogEntry, however written: an actor when one is known, PII masked."""
    if instance.actor_id is None:
        actor = current_actor()
        if actor is not None:
            instance.actor = actor
    instance.actor_email = None  # a staff member's e-mail is personal data; the actor FK names them
    if _masked_by_service.get():
        return
    label = f"{instance.content_type.app_label}.{instance.content_type.model}" if instance.content_type_id else ""
    if label not in PII_FIELDS:
        return
    pii_type, known = _stored_type(label, instance.object_id)
    instance.changes = mask_changes(label, instance.changes, pii_type, type_known=known)
    if label in ("subjects.subject", "identity.sourcerecord", "identity.identifier") and not known:
        instance.object_repr = f"{label} #{instance.object_pk}"
    elif label == "subjects.subject" and pii_type is not None and _is_pii(pii_type):
        from subjects.pii import MASK

        if not instance.object_repr.startswith(MASK):
            instance.object_repr = f"{MASK} ({label} #{instance.object_pk})"


def _is_pii(pii_type) -> bool:
    from subjects.pii import is_pii_type

    return is_pii_type(pii_type)


def _stored_type(label: str, object_id):
    """The subject/relationship type of a logged object (one query), ``(None, False)`` if gone."""
    if object_id is None or label not in ("subjects.subject", "subjects.relationship"):
        return None, False
    from subjects.models import Relationship, Subject

    if label == "subjects.subject":
        row = Subject.objects.select_related("subject_type").filter(pk=object_id).first()
        return (row.subject_type, True) if row else (None, False)
    row = Relationship.objects.select_related("relationship_type").filter(pk=object_id).first()
    return (row.relationship_type, True) if row else (None, False)


def connect_log_entry_guard() -> None:
    pre_save.connect(_guard_log_entry, sender="auditlog.LogEntry", dispatch_uid="audit.guard_log_entry")
