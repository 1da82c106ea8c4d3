"""Fuzzy match suggestions (rapidfuzz): candidate merges for an operator, never merges.

Candidates are OneIDs that share a value which does not link on its own (a phone
without the same name, an address without the order id) — a cheap blocking step,
so nothing compares all pairs. Each pair gets a score from the similarity of the
golden names and addresses; pairs above ``threshold`` become open suggestions.
Accepting one is a manual merge; rejecting it is remembered so it is not proposed again.
"""

from __future__ import annotations

import itertools

from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from rapidfuzz import fuzz

from audit.services import domain_event_record
from common.errors import ConflictError, ServiceError

from ..models import Identifier, IdentifierStatus, MatchSuggestion, SourceRecord, SuggestionStatus
from .operations import oneid_merge

MAX_BLOCK = 10


def _text(attributes: dict, name: str) -> str:
    value = attributes.get(name)
    return value if isinstance(value, str) else ""


def score_pair(a: dict, b: dict) -> tuple[float, dict]:
    """Similarity of two golden records (0–100) and the evidence behind it."""
    name = fuzz.token_sort_ratio(_text(a, "name"), _text(b, "name")) if _text(a, "name") and _text(b, "name") else 0.0
    address = (
        fuzz.token_set_ratio(_text(a, "address"), _text(b, "address"))
        if _text(a, "address") and _text(b, "address")
        else None
    )
    score = name if address is None else 0.6 * name + 0.4 * address
    return round(score, 1), {"name_score": round(name, 1), "address_score": address and round(address, 1)}


def suggestions_generate(*, actor, threshold: float = 80.0) -> int:
    """Propose pairs of OneIDs that share a non-linking value and look alike; returns how many are new."""
    shared = (
        Identifier.objects.filter(status=IdentifierStatus.PART)
        .values("identifier_type_id", "value")
        .annotate(n=Count("record__assignment__oneid", distinct=True))
        .filter(n__gt=1, n__lte=MAX_BLOCK)
    )
    blocks: dict[tuple[int, str], set[int]] = {}
    keys = {(row["identifier_type_id"], row["value"]) for row in shared[:10_000]}  # a set: probed per row
    if not keys:
        return 0
    values = {v for _, v in keys}
    for type_id, value, oneid in Identifier.objects.filter(status=IdentifierStatus.PART, value__in=values).values_list(
        "identifier_type_id", "value", "record__assignment__oneid"
    ):
        if (type_id, value) in keys and oneid is not None:
            blocks.setdefault((type_id, value), set()).add(oneid)
    pairs: dict[tuple[int, int], list[str]] = {}
    for (_, value), oneids in blocks.items():
        for a, b in itertools.combinations(sorted(oneids), 2):
            pairs.setdefault((a, b), []).append(value)
    known = set(MatchSuggestion.objects.values_list("oneid_a_id", "oneid_b_id"))
    ids = {o for pair in pairs for o in pair}
    from subjects.models import Subject

    golden = dict(Subject.objects.filter(id__in=ids).values_list("id", "attributes"))
    new = []
    for (a, b), values_shared in sorted(pairs.items()):
        if (a, b) in known:
            continue
        score, evidence = score_pair(golden.get(a, {}), golden.get(b, {}))
        if score >= threshold:
            new.append(
                MatchSuggestion(oneid_a_id=a, oneid_b_id=b, score=score, evidence={**evidence, "shared": values_shared})
            )
    with transaction.atomic():
        MatchSuggestion.objects.bulk_create(new, ignore_conflicts=True)
        if new:
            domain_event_record(actor=actor, action="identity.suggestions_generated", row_count=len(new))
    return len(new)


def _open(suggestion_id: int) -> MatchSuggestion:
    suggestion = MatchSuggestion.objects.select_for_update().filter(id=suggestion_id).first()
    if suggestion is None:
        raise ServiceError.single("id", f"No suggestion {suggestion_id}.", "not_found")
    if suggestion.status != SuggestionStatus.OPEN:
        raise ConflictError(f"Suggestion {suggestion_id} is already {suggestion.status}.", code="decided")
    return suggestion


def suggestion_accept(*, actor, suggestion_id: int) -> int:
    """Merge the pair (a manual merge by the deciding operator); returns the surviving OneID."""
    with transaction.atomic():
        suggestion = _open(suggestion_id)
        survivor = oneid_merge(
            actor=actor, oneids=[suggestion.oneid_a_id, suggestion.oneid_b_id], reason=f"suggestion {suggestion.id}"
        )
        _decide(suggestion, actor, SuggestionStatus.ACCEPTED)
    return survivor


def suggestion_reject(*, actor, suggestion_id: int) -> None:
    with transaction.atomic():
        _decide(_open(suggestion_id), actor, SuggestionStatus.REJECTED)


def _decide(suggestion: MatchSuggestion, actor, status: str) -> None:
    suggestion.status = status
    suggestion.decided_by = actor if actor is not None and actor.is_authenticated else None
    suggestion.decided_at = timezone.now()
    suggestion.save(update_fields=["status", "decided_by", "decided_at"])
    domain_event_record(
        actor=actor,
        action=f"identity.suggestion_{status}",
        object_type="identity.matchsuggestion",
        row_count=1,
        summary={"id": suggestion.id, "oneids": [suggestion.oneid_a_id, suggestion.oneid_b_id]},
    )


__all__ = ["SourceRecord", "score_pair", "suggestion_accept", "suggestion_reject", "suggestions_generate"]
