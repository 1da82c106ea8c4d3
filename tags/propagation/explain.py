"""Why a subject has its value of a tag: the rule or propagation path, and the inputs that produced it.

``explain(tag, subject_id) -> dict`` is a read for the admin and the API:

- every tag: the stored value, its source, rule version and when it last changed
  (with the history row's correlation id, which ties it to a domain event);
- an assigned tag: that it was set by hand or imported (the last change says when);
- a rule tag: the active rule document and the subject's values of the tags it reads;
- a propagated tag: the propagation document, its path in words, and the inputs —
  the source subjects reached along the path with their value, path weight and
  relationship time (up to ``MAX_INPUTS``, most recent first, plus their count),
  computed by the same SQL the recompute runs — and what the recompute would give
  now (equal to the stored value unless an input changed and its refresh is queued).
"""

from __future__ import annotations

import orjson
from django.db import connection
from django.utils import timezone

from tags.models import Computation, TagDefinition, TagValue, TagValueChange
from tags.rules.compiler import Selection

from .active import active_propagation
from .compiler import PropagationCompiler

MAX_INPUTS = 50


def _load(value: object) -> object:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def explain(tag: TagDefinition, subject_id: int) -> dict:
    stored = (
        TagValue.objects.filter(tag=tag, subject_id=subject_id)
        .values("value", "source", "rule_version", "updated_at")
        .first()
    )
    change = (
        TagValueChange.objects.filter(tag=tag, subject_id=subject_id)
        .order_by("-id")
        .values("old_value", "new_value", "source", "rule_version", "changed_at", "correlation_id")
        .first()
    )
    result: dict = {
        "tag": {"id": tag.pk, "code": tag.code, "computation": tag.computation, "version": tag.version},
        "subject_id": subject_id,
        "value": stored["value"] if stored else None,
        "has_value": stored is not None,
        "source": stored["source"] if stored else None,
        "rule_version": stored["rule_version"] if stored else None,
        "updated_at": stored["updated_at"] if stored else None,
        "last_change": change,
    }
    if tag.computation == Computation.PROPAGATED:
        result["why"] = _propagated(tag, subject_id)
    elif tag.computation == Computation.RULE:
        result["why"] = _rule(tag, subject_id)
    else:
        how = "set by hand" if stored and stored["source"] == "manual" else "imported" if stored else "not set"
        result["why"] = {"kind": "assigned", "summary": f"The value was {how}."}
    return result


def _rule(tag: TagDefinition, subject_id: int) -> dict:
    from tags.services.compiled import active_rule

    rule = active_rule(tag) if tag.rule_id else None
    if rule is None:
        return {"kind": "rule", "summary": "The tag has no active rule."}
    read = TagValue.objects.filter(subject_id=subject_id, tag_id__in=rule.tag_ids).values_list("tag__code", "value")
    return {
        "kind": "rule",
        "summary": f"Computed by rule version {tag.version}.",
        "document": tag.rule.document,
        "inputs": {"tags": dict(read)},
    }


def describe_path(prop) -> str:
    words = {
        "out": "→{code}→",
        "in": "←{code}←",
        "subject_to": "(own subject of {code})→",
        "subject_from": "(own subject of {code})←",
        "to_subject": "→(own subject of {code})",
        "from_subject": "←(own subject of {code})",
    }
    return " ".join(words[s.direction].format(code=s.code) for s in prop.steps)


def _propagated(tag: TagDefinition, subject_id: int) -> dict:
    prop = active_propagation(tag)
    if prop is None:
        return {"kind": "propagation", "summary": "The tag has no active propagation."}
    now = timezone.now()
    compiler = PropagationCompiler(prop, vendor=connection.vendor, now=now)
    selection = Selection.of_ids([subject_id])
    rows_sql, params = compiler.values(selection, elements=False)
    select_sql, select_params = compiler.select(selection)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT source_id, raw, w, at, rid, COUNT(*) OVER () FROM ({rows_sql}) v ORDER BY at DESC, rid DESC LIMIT {MAX_INPUTS}",
            params,
        )
        rows = cursor.fetchall()
        cursor.execute(f"SELECT value FROM ({select_sql}) c", select_params)
        now_value = cursor.fetchone()
    source = f'tag "{prop.source.tag_code}"' if prop.source.tag_id else f'attribute "{prop.source.attribute}"'
    return {
        "kind": "propagation",
        "summary": f"{prop.aggregate} of {source} along {describe_path(prop)} (rule version {tag.version}).",
        "document": tag.rule.document,
        "path": [{"relationship": s.code, "direction": s.direction, "within_days": s.within_days} for s in prop.steps],
        "inputs_total": rows[0][5] if rows else 0,
        "inputs": [
            {"subject_id": s, "value": _load(raw), "weight": w, "relationship_time": at, "relationship_id": rid}
            for s, raw, w, at, rid, _ in rows
        ],
        "recomputed_now": _load(now_value[0]) if now_value else None,
    }
