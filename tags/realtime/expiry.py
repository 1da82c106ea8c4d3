"""Windowed tags expire on their own: the beat sweep finds what aged out since the last sweep.

A value changes with time alone when an input crosses its window's edge:
- a rule's event aggregate over the last N days: events whose ``occurred_at``
  fell out, i.e. lies in ``(last - N days, now - N days]``;
- a propagation step limited to its last N days: relationships whose time
  (``valid_from``, else ``created_at``) fell out the same way;
- ``valid_now`` steps: relationships whose ``valid_from`` or ``valid_to`` passed
  in ``(last, now]``.
Only those subjects are recomputed (then downstream, by the planner). The
watermark is the tag's ``last_computed_at`` (set by full recomputes and by each
sweep); a tag never computed in full starts its sweeps from now.
"""

from __future__ import annotations

import datetime as dt

from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from subjects.models import Relationship
from tags.models import Computation, Event, TagDefinition

from . import index as tag_index
from .planner import Plan, plan_for_relationships, run_plan


def sweep(now: dt.datetime | None = None) -> dict:
    """One sweep over every windowed tag; returns ``{"tags", "subjects", "rows_changed"}``."""
    now = now or timezone.now()
    index = tag_index.current()
    plan, swept = Plan(), []
    for tag_id, tag in index.tags.items():
        since = tag.last_computed_at
        if tag.computation == Computation.RULE and tag_id in index.windowed_rules:
            swept.append(tag_id)
            if since is not None:
                _rule_window(plan, tag, index.windowed_rules[tag_id], since, now)
        elif tag.computation == Computation.PROPAGATED:
            prop = index.propagation(tag_id)
            if prop is None or not (prop.windowed or prop.valid_now):
                continue
            swept.append(tag_id)
            if since is not None:
                plan.merge(_propagation_window(tag_id, prop, since, now))
    outcome = run_plan(plan, now=now) if plan else None
    TagDefinition.objects.filter(pk__in=swept).update(last_computed_at=now)
    return {
        "tags": len(swept),
        "subjects": plan.subject_count(),
        "rows_changed": outcome.rows_changed if outcome else 0,
    }


def _rule_window(plan: Plan, tag: TagDefinition, windows: list[tuple[str, int]], since, now) -> None:
    for event_type, days in set(windows):
        edge = dt.timedelta(days=days)
        ids = (
            Event.objects.filter(type=event_type, occurred_at__gt=since - edge, occurred_at__lte=now - edge)
            .filter(subject__subject_type_id=tag.subject_type_id)
            .values_list("subject_id", flat=True)
            .distinct()
        )
        plan.recompute(tag.pk, ids)


def _propagation_window(tag_id: int, prop, since, now) -> Plan:
    plan = Plan()
    relevant = Q()
    for step in prop.steps:
        of_type = Q(relationship_type_id=step.relationship_type_id)
        if step.within_days is not None:
            edge = dt.timedelta(days=step.within_days)
            relevant |= of_type & Q(moment__gt=since - edge, moment__lte=now - edge)
        if prop.valid_now:
            relevant |= of_type & (
                Q(valid_from__gt=since, valid_from__lte=now) | Q(valid_to__gt=since, valid_to__lte=now)
            )
    if not relevant:
        return plan
    rows = (
        Relationship.objects.annotate(moment=Coalesce("valid_from", "created_at"))
        .filter(relevant)
        .values_list("relationship_type_id", "from_subject_id", "to_subject_id", "subject_id")
    )
    full = plan_for_relationships(rows)
    if tag_id in full.pending:
        plan.recompute(tag_id, full.pending[tag_id])
    return plan
