"""Small helpers for the OneID tests."""

from identity.models import SourceRecord
from identity.services import source_record_bulk_upsert


def push(*items, actor=None, **options):
    """Upsert ``items`` given as (source code, external id, raw) tuples."""
    return source_record_bulk_upsert(
        actor=actor, items=[{"source": s, "external_id": e, "raw": r} for s, e, r in items], **options
    )


def partition() -> set[frozenset[tuple[str, str]]]:
    """The current OneIDs as sets of (source code, external id): comparable across runs."""
    groups: dict[int, set] = {}
    for code, ext, oneid in SourceRecord.objects.values_list("source__code", "external_id", "assignment__oneid"):
        groups.setdefault(oneid, set()).add((code, ext))
    return {frozenset(g) for g in groups.values()}


def oneid_of(source: str, external_id: str) -> int:
    return SourceRecord.objects.get(source__code=source, external_id=external_id).assigned_oneid_id
