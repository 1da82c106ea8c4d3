"""Saving, activating and previewing propagation documents (versions of a propagated tag's rule).

The storage is a rule version like any other (``TagRule.document`` holds the
``{"propagate": …}`` document); activation replaces the tag's dependency edges of
kind "propagation" (target → source tag), so the graph, cycle refusal and
archive refusal cover propagation with no special case.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from audit.services import domain_event_record
from audit.usage import record_tag_use
from common.errors import ConflictError, ServiceError
from tags.models import Computation, DependencyKind, JobStatus, RecomputeJob, TagDefinition, TagRule, TagStatus
from tags.rules.compiler import Selection
from tags.services.graph import check_no_cycle, replace_dependencies

from .active import forget, parse_for
from .recompute import compiled_select


def _user(actor):
    return actor if actor is not None and actor.is_authenticated else None


def _audit(actor, action: str, summary: dict) -> None:
    domain_event_record(actor=actor, action=action, object_type="tagrule", row_count=1, summary=summary)


def propagation_save(*, actor, tag: TagDefinition, document: object, activate: bool = False) -> TagRule:
    """Validate ``document`` and store it as the tag's next rule version (optionally activating it)."""
    if tag.status == TagStatus.ARCHIVED:
        raise ServiceError.single("tag", f'Tag "{tag.code}" is archived.', "archived")
    if tag.computation != Computation.PROPAGATED:
        raise ServiceError.single("computation", f'Tag "{tag.code}" is {tag.computation}, not propagated.')
    prop = parse_for(tag, document)
    _check_cycle(tag, prop.tag_ids)
    with transaction.atomic():
        version = (TagRule.objects.filter(tag=tag).aggregate(v=Max("version"))["v"] or 0) + 1
        try:
            with transaction.atomic():
                saved = TagRule.objects.create(tag=tag, version=version, document=document, created_by=_user(actor))
        except IntegrityError:
            raise ConflictError.single("rule", "Another version was saved at the same time; try again.") from None
        _audit(actor, "tags.rule_saved", {"tag_id": tag.pk, "version": version, "kind": "propagation"})
        if activate:
            activate_propagation(actor=actor, tag=tag, version=version)
    return saved


def _check_cycle(tag: TagDefinition, depends_on) -> None:
    try:
        check_no_cycle(tag, depends_on, kind=DependencyKind.PROPAGATION)
    except ServiceError as error:
        raise ServiceError(error.message.replace("The rule", "The propagation"), error.errors, error.code) from None


def activate_propagation(*, actor, tag: TagDefinition, version: int, recompute: bool = True) -> TagRule:
    """Make ``version`` the active propagation; its values follow by a queued full recompute."""
    saved = TagRule.objects.filter(tag=tag, version=version).first()
    if saved is None:
        raise ServiceError.single("version", f'Tag "{tag.code}" has no rule version {version}.', "unknown")
    prop = parse_for(tag, saved.document)
    with transaction.atomic():
        TagDefinition.objects.select_for_update().filter(pk=tag.pk).first()
        _check_cycle(tag, prop.tag_ids)
        replace_dependencies(tag, prop.tag_ids, kind=DependencyKind.PROPAGATION)
        TagRule.objects.filter(pk=saved.pk).update(activated_at=timezone.now())
        tag.rule, tag.version = saved, version
        if tag.status == TagStatus.DRAFT:
            tag.status = TagStatus.ACTIVE
        tag.save(update_fields=["rule", "version", "status", "updated_at"])
        forget()
        _audit(actor, "tags.rule_activated", {"tag_id": tag.pk, "version": version, "kind": "propagation"})
        if recompute:
            start_recompute(tag, actor=actor)
    return saved


def start_recompute(tag: TagDefinition, *, actor) -> RecomputeJob:
    """Queue a full recompute of the propagated ``tag`` after the current transaction commits."""
    from tags.realtime.tasks import recompute_propagated

    job = RecomputeJob.objects.create(tag=tag, status=JobStatus.QUEUED, requested_by=_user(actor))
    domain_event_record(
        actor=actor,
        action="tags.recompute_requested",
        object_type=f"tag:{tag.code}",
        summary={"tag_id": tag.pk, "job_id": job.pk},
        correlation_id=job.correlation_id,
    )
    transaction.on_commit(lambda: recompute_propagated.delay(job.pk))
    return job


def preview_propagation(tag: TagDefinition, document: object, *, subjects=None) -> dict:
    """What ``document`` would give the tag's subjects against their current values (the recompute's SQL).

    Same shape as tags-core's ``preview_rule``: ``{"total", "counts", "no_value", "changes", "sample"}``.
    """
    from tags.services.preview import preview_computed, restrict_to_subjects

    prop = parse_for(tag, document)
    record_tag_use([tag.pk, *prop.tag_ids], "preview")
    computed_sql, params = compiled_select(prop, Selection.everything(), timezone.now())
    return preview_computed(tag, *restrict_to_subjects(computed_sql, params, subjects))
