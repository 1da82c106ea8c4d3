"""Relationships follow the records they came from when OneIDs merge or split.

Attribution convention (documented in docs/IDENTITY.md): a relationship of a
OneID subject belongs to the source record whose source system code equals the
relationship's ``source`` and whose external id equals the relationship's
``external_id`` or prefixes it followed by ``-`` (``M0001`` owns ``M0001-V1``; the
longest such record wins). Relationships that no record owns stay with the OneID
that keeps the subject, and move to the heir of a retired one. The move is a
``relationship_bulk_upsert`` of the same keys with the new end, so cardinality
and audit are the subjects services' own.
"""

from __future__ import annotations

from collections.abc import Mapping

from subjects.models import Relationship
from subjects.services import relationship_bulk_upsert

from .models import SourceRecord


def _owner(source: str, external_id: str, owners: Mapping[tuple[str, str], int]) -> int | None:
    best = owners.get((source, external_id))
    if best is not None:
        return best
    cut = external_id.rfind("-")
    while cut > 0:
        best = owners.get((source, external_id[:cut]))
        if best is not None:
            return best
        cut = external_id.rfind("-", 0, cut)
    return None


def _target(end: int, owner: int | None, olds: set[int], new_of: Mapping[int, int], heirs: Mapping[int, int]) -> int:
    if end not in olds:
        return end
    if owner is not None and owner in new_of:
        return new_of[owner]
    return heirs.get(end, end)


def follow_records(
    *, moves: Mapping[int, tuple[int | None, int]], heirs: Mapping[int, int], actor, correlation_id
) -> int:
    """``moves``: record -> (old OneID, new OneID); ``heirs``: retired OneID -> heir. Returns relationships moved."""
    olds = {old for old, _ in moves.values() if old is not None} | set(heirs)
    if not olds:
        return 0
    rows = list(
        Relationship.objects.filter(from_subject_id__in=olds).values_list(
            "id",
            "relationship_type__code",
            "source",
            "external_id",
            "from_subject_id",
            "to_subject_id",
            "weight",
            "valid_from",
            "valid_to",
            "attributes",
        )
    ) + list(
        Relationship.objects.filter(to_subject_id__in=olds)
        .exclude(from_subject_id__in=olds)
        .values_list(
            "id",
            "relationship_type__code",
            "source",
            "external_id",
            "from_subject_id",
            "to_subject_id",
            "weight",
            "valid_from",
            "valid_to",
            "attributes",
        )
    )
    if not rows:
        return 0
    new_of = {record: new for record, (_, new) in moves.items()}
    owners = {
        (code, ext): id_
        for id_, code, ext in SourceRecord.objects.filter(
            assignment__oneid__in=olds | set(new_of.values())
        ).values_list("id", "source__code", "external_id")
    }
    items = []
    for _, code, source, ext, from_, to, weight, valid_from, valid_to, attributes in rows:
        owner = _owner(source, ext, owners)
        new_from, new_to = (_target(end, owner, olds, new_of, heirs) for end in (from_, to))
        if (new_from, new_to) != (from_, to):
            items.append(
                {
                    "type": code,
                    "source": source,
                    "external_id": ext,
                    "from": new_from,
                    "to": new_to,
                    "weight": weight,
                    "valid_from": valid_from.isoformat() if valid_from else None,
                    "valid_to": valid_to.isoformat() if valid_to else None,
                    "attributes": attributes,
                }
            )
    if items:
        relationship_bulk_upsert(
            actor=actor, items=items, correlation_id=correlation_id, action="identity.relationships_followed"
        )
    return len(items)
