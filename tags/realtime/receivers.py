"""Subscriptions of the real-time engine to writes made elsewhere.

- ``tags.signals.values_changed`` (manual edits, imports, full recomputes): the
  changed subjects' downstream tags. Skipped while the engine itself writes — it
  carries its own changes downstream in dependency order.
- Relationship writes: the ``subjects`` services send no signal of their own, so
  the engine listens to what exists: the domain event they record for every bulk
  write (``post_save`` of ``audit.DomainEvent`` with object type
  ``subjects.relationship``, ``summary.ids`` = relationships written) and
  ``post_delete`` of ``Relationship`` (single deletes and cascades, whose ends are
  gone after commit). A relationship that moved to other ends is seen at its new
  ends and, in the same plan, at its old ones: the subjects services list them in
  the event (``summary.previous_ends``) for every update that moves one (bulk,
  single saves from the API and admin, OneID merges). Only a write that bypasses
  the services (raw SQL, a queryset ``update``) leaves the old ends to the
  nightly reconcile (``tags.reconcile_propagated``).
- Subject writes (attributes, e.g. from source records): the same domain events
  with object type ``subjects.subject``.

Each receiver only builds a plan and enqueues it after commit.
"""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from audit.models import DomainEvent
from subjects.models import Relationship, Subject
from tags.signals import values_changed

from .enqueue import enqueue_after_commit
from .planner import ENGINE_ACTIVE, Plan, plan_for_relationships, plan_for_subjects


@receiver(values_changed, dispatch_uid="tagweave.realtime.values_changed")
def on_values_changed(sender, tag, subject_ids, correlation_id=None, **kwargs) -> None:
    if ENGINE_ACTIVE.get() or not subject_ids:
        return
    from . import index as tag_index

    if not tag_index.current().dependents.get(tag.pk):
        return
    plan = Plan()
    plan.changed(tag.pk, subject_ids)
    enqueue_after_commit(plan)


@receiver(post_save, sender=DomainEvent, dispatch_uid="tagweave.realtime.domain_event")
def on_domain_event(sender, instance: DomainEvent, created: bool, **kwargs) -> None:
    if not created or ENGINE_ACTIVE.get():
        return
    ids = (instance.summary or {}).get("ids") if isinstance(instance.summary, dict) else None
    if not ids:
        return
    if instance.object_type not in ("subjects.relationship", "subjects.subject"):
        return
    from . import index as tag_index

    index = tag_index.current()
    if instance.object_type == "subjects.relationship" and index.by_relationship:
        rows = Relationship.objects.filter(id__in=ids, relationship_type_id__in=list(index.by_relationship))
        ends = list(rows.values_list("relationship_type_id", "from_subject_id", "to_subject_id", "subject_id"))
        enqueue_after_commit(plan_for_relationships([*ends, *_previous_ends(instance.summary, index)]))
    elif instance.object_type == "subjects.subject" and index.by_attributes:
        rows = Subject.objects.filter(id__in=ids, subject_type_id__in=list(index.by_attributes))
        enqueue_after_commit(plan_for_subjects(rows.values_list("id", "subject_type_id")))


def _previous_ends(summary: dict, index) -> list[tuple]:
    """The ends a relationship had before a write moved it, as the writer tells them.

    ``subjects.services.relationship_bulk_upsert`` lists them in its domain event's summary
    (``previous_ends``: ``[[type, from, to, own subject], …]``, moved relationships only):
    their old ends are refreshed now, not by the nightly reconcile.
    """
    found = []
    for entry in summary.get("previous_ends") or ():
        if isinstance(entry, list | tuple) and len(entry) >= 3 and entry[0] in index.by_relationship:
            found.append((int(entry[0]), int(entry[1]), int(entry[2]), *(entry[3:4] or [None])))
    return found


@receiver(post_delete, sender=Relationship, dispatch_uid="tagweave.realtime.relationship_deleted")
def on_relationship_deleted(sender, instance: Relationship, **kwargs) -> None:
    from . import index as tag_index

    if instance.relationship_type_id not in tag_index.current().by_relationship:
        return
    enqueue_after_commit(
        plan_for_relationships(
            [(instance.relationship_type_id, instance.from_subject_id, instance.to_subject_id, instance.subject_id)]
        )
    )
