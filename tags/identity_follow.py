"""Behaviour events and tag values follow OneID merges and splits (receivers of ``identity.signals``).

Connected in ``TagsConfig.ready`` when the identity app is installed (tags works without
it). Both receivers run inside the resolution's transaction, after the records moved, so
what they write commits or rolls back with the merge or split itself.

**Merge** — for each OneID *absorbed* into the survivor (all its records went there):
its events move to the survivor (one UPDATE); its manual and imported values move where
the survivor has no value of the tag, and where both have one the survivor's is kept and
the absorbed one's removed; its computed (rule, propagated) values are removed. Every
explicit value of the merged person — the survivor's own included, and the removed ones —
gets a ``MergedValue`` row naming the OneID it was set on and the records that OneID
held, which is what lets a split give it back. The survivor's computed tags are refreshed
by the real-time engine after the commit (and whatever reads them downstream).

**Split** — the records of ``source`` now belong to ``parts``; the *keeper* is ``source``
when it is one of them, else the part holding most of its records (the heir of a retired
OneID). An event goes to the part holding the record it was attributed through
(``Event.source_record_id``); without one, to the one part holding records of the event's
``source`` system when exactly one does; otherwise it stays with the keeper. A value with
a ``MergedValue`` row goes to the part holding most of that row's records; a value without
one, or changed since the merge (set on the merged person), stays with the keeper; a value
set aside at a merge comes back to its part where that part has no value of the tag.
Computed tags are refreshed on every part; a retired source loses its computed values.

Values are written by the one guarded writer (history rows with the resolution's
correlation id), with one domain event per tag (``tags.values_followed``) and one per
follow (``tags.merge_followed`` / ``tags.split_followed``).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson
from django.db import connection
from django.utils import timezone

from audit.services import bulk_write_record, operation_record
from subjects.models import Subject
from tags.models import Computation, MergedValue, TagDefinition, TagValue, ValueSource
from tags.services.store import recordset_sql
from tags.services.writer import apply_computed

EXPLICIT = frozenset({ValueSource.MANUAL, ValueSource.IMPORTED})


@dataclass(frozen=True)
class _Value:
    tag: int
    subject: int
    value: object
    source: str


@dataclass
class Followed:
    """What one merge or split moved: ``events`` per (new subject, type), changed subjects per tag."""

    events: Counter = field(default_factory=Counter)
    values: dict[int, list[int]] = field(default_factory=dict)
    set_aside: int = 0

    @property
    def count(self) -> int:
        return sum(self.events.values()) + sum(len(ids) for ids in self.values.values())


class _Writes:
    """The final state of each (tag, subject) a follow changes: ``(value or None, source)``."""

    def __init__(self) -> None:
        self.final: dict[int, dict[int, tuple[object | None, str]]] = {}

    def set(self, tag: int, subject: int, value: object | None, source: str) -> None:
        self.final.setdefault(tag, {})[subject] = (value, source)


# ---- receivers -----------------------------------------------------------------------------------


def on_oneid_merged(sender, *, survivor, merged, event, origins=None, absorbed=None, **kwargs) -> None:
    follow_merge(
        survivor=survivor,
        absorbed=list(absorbed or ()),
        origins=origins or {},
        actor=event.actor,
        correlation_id=event.correlation_id,
        merge_event=event.pk,
    )


def on_oneid_split(sender, *, source, parts, event, **kwargs) -> None:
    follow_split(
        source=source, parts=parts, actor=event.actor, correlation_id=event.correlation_id, split_event=event.pk
    )


def connect() -> None:
    """Subscribe to identity's signals (called from ``TagsConfig.ready`` when identity is installed)."""
    from identity import signals

    signals.oneid_merged.connect(on_oneid_merged, dispatch_uid="tagweave.tags.follow_merge")
    signals.oneid_split.connect(on_oneid_split, dispatch_uid="tagweave.tags.follow_split")


# ---- merge ---------------------------------------------------------------------------------------


def follow_merge(
    *,
    survivor: int,
    absorbed: list[int],
    origins: Mapping[int, list[int]],
    actor,
    correlation_id: uuid.UUID,
    merge_event: int | None = None,
) -> Followed:
    """Move what the ``absorbed`` OneIDs carry to ``survivor``; ``origins``: former OneID → its records."""
    absorbed = sorted(set(absorbed) - {survivor})
    followed = Followed()
    if absorbed:
        followed.events = _move_events_to(survivor, absorbed)
    values = _values([survivor, *absorbed])
    rows = list(MergedValue.objects.filter(subject_id__in=[survivor, *absorbed]).order_by("id"))
    held = _valid(rows, values)
    writes, keep = _Writes(), []
    drop = [r.id for r in rows if r.subject_id != survivor or (r.held and (r.tag_id, r.subject_id) not in held)]
    taken: set[int] = set()
    for v in values:
        if v.subject != survivor or v.source not in EXPLICIT:
            continue
        taken.add(v.tag)
        if (v.tag, survivor) not in held:  # no origin yet, or set on the merged person since
            keep.append(_row(v, survivor, survivor, origins.get(survivor, []), True, correlation_id))
    for v in values:
        if v.subject == survivor:
            continue
        writes.set(v.tag, v.subject, None, v.source)
        if v.source not in EXPLICIT:
            continue
        row = held.get((v.tag, v.subject))
        origin, records = (row.origin_id, row.records) if row else (v.subject, origins.get(v.subject, []))
        moves = v.tag not in taken
        if moves:
            writes.set(v.tag, survivor, v.value, v.source)
            taken.add(v.tag)
        else:
            followed.set_aside += 1
        keep.append(_row(v, survivor, origin, records, moves, correlation_id))
    for r in rows:
        if r.subject_id != survivor and not r.held:  # set aside by an earlier merge: stays so
            keep.append(_copy(r, survivor, held=False))
    _store_rows(drop, keep)
    followed.values = _write(writes, actor=actor, correlation_id=correlation_id, extra={"merge_event": merge_event})
    if followed.count:
        _refresh([survivor], followed, correlation_id, gone=set(absorbed))
        operation_record(
            actor=actor,
            action="tags.merge_followed",
            object_type="tags.event",
            row_count=followed.count,
            correlation_id=correlation_id,
            summary={
                "merge_event": merge_event,
                "survivor": survivor,
                "absorbed": absorbed,
                "ids": [survivor, *absorbed],
                **_summary(followed),
            },
        )
    return followed


def _move_events_to(survivor: int, absorbed: list[int]) -> Counter:
    """All events of ``absorbed`` now the survivor's: one UPDATE; ``{(survivor, type): n}``."""
    if connection.vendor == "postgresql":
        sql = (
            "WITH moved AS (UPDATE tags_event SET subject_id = %s WHERE subject_id = ANY(%s::bigint[]) RETURNING type)"
            " SELECT type, count(*) FROM moved GROUP BY type"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [survivor, absorbed])
            return Counter({(survivor, t): n for t, n in cursor.fetchall()})
    sql = "UPDATE tags_event SET subject_id = %s WHERE subject_id IN (SELECT value FROM json_each(%s)) RETURNING type"
    with connection.cursor() as cursor:
        cursor.execute(sql, [survivor, orjson.dumps(absorbed).decode()])
        return Counter((survivor, t) for (t,) in cursor.fetchall())


# ---- split ---------------------------------------------------------------------------------------


def follow_split(
    *,
    source: int,
    parts: Mapping[int, Iterable[int]],
    actor,
    correlation_id: uuid.UUID,
    split_event: int | None = None,
) -> Followed:
    """Give each part of ``source`` back what its records brought; ``parts``: OneID → its records."""
    parts = {int(p): sorted(int(r) for r in rs) for p, rs in parts.items()}
    keeper = source if source in parts else min(parts, key=lambda p: (-len(parts[p]), p))
    part_of = {r: p for p, rs in parts.items() for r in rs}
    followed = Followed()
    followed.events = _route_events(source, part_of, keeper)
    values = _values({source, *parts})
    rows = list(MergedValue.objects.filter(subject_id__in={source, *parts}).order_by("id"))
    valid = _valid(rows, values)
    held = {tag: r for (tag, subject), r in valid.items() if subject == source}
    drop = [r.id for r in rows if r.subject_id == source or (r.held and (r.tag_id, r.subject_id) not in valid)]
    rows = [r for r in rows if r.subject_id == source]
    present = {(v.tag, v.subject) for v in values if v.subject != source}
    stays: set[int] = set()
    writes, keep = _Writes(), []

    def route(records: Iterable[int]) -> int:
        counts = Counter(part_of[r] for r in records if r in part_of)
        return max(counts, key=lambda p: (counts[p], p == keeper, -p)) if counts else keeper

    for v in values:
        if v.subject != source:
            continue
        if v.source not in EXPLICIT:
            if source not in parts:  # retired: its computed values go (the parts' are refreshed)
                writes.set(v.tag, source, None, v.source)
            continue
        row = held.get(v.tag)  # none, or changed since the merge: the merged person's own
        target = route(row.records) if row is not None else keeper
        if target == source:
            stays.add(v.tag)
            keep.extend([_copy(row, source, held=True)] if row is not None else [])
            continue
        writes.set(v.tag, source, None, v.source)
        moves = (v.tag, target) not in present
        if moves:
            writes.set(v.tag, target, v.value, v.source)
            present.add((v.tag, target))
        else:
            followed.set_aside += 1
        keep.append(
            _copy(row, target, held=moves)
            if row is not None
            else _row(v, target, source, sorted(part_of), moves, correlation_id)
        )
    for r in rows:
        if r.held:
            continue
        target = route(r.records)
        free = r.tag_id not in stays if target == source else (r.tag_id, target) not in present
        if free:
            writes.set(r.tag_id, target, r.value, r.source)
            (stays.add(r.tag_id) if target == source else present.add((r.tag_id, target)))
        keep.append(_copy(r, target, held=free))
    _store_rows(drop, keep)
    followed.values = _write(writes, actor=actor, correlation_id=correlation_id, extra={"merge_event": split_event})
    if followed.count:
        _refresh(sorted(parts), followed, correlation_id, gone={source} - set(parts))
        operation_record(
            actor=actor,
            action="tags.split_followed",
            object_type="tags.event",
            row_count=followed.count,
            correlation_id=correlation_id,
            summary={
                "merge_event": split_event,
                "source": source,
                "keeper": keeper,
                "parts": sorted(parts),
                "ids": sorted({source, *parts}),
                **_summary(followed),
            },
        )
    return followed


def _source_parts(part_of: Mapping[int, int]) -> dict[str, int]:
    """Source system code → the one part holding records of it (codes held by several parts left out)."""
    try:
        from identity.selectors import record_source_codes
    except ImportError:
        return {}
    holders: dict[str, set[int]] = {}
    for record, code in record_source_codes(list(part_of)).items():
        holders.setdefault(code, set()).add(part_of[record])
    return {code: next(iter(ps)) for code, ps in holders.items() if len(ps) == 1}


def _route_events(source: int, part_of: Mapping[int, int], keeper: int) -> Counter:
    """Move the events of ``source`` to their parts in one UPDATE; ``{(new subject, type): n}``."""
    by_code = _source_parts(part_of)
    records, record_parts = list(part_of), [part_of[r] for r in part_of]
    codes, code_parts = list(by_code), [by_code[c] for c in by_code]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                """
                WITH rec AS (SELECT * FROM unnest(%s::bigint[], %s::bigint[]) AS r(record_id, part)),
                     src AS (SELECT * FROM unnest(%s::text[], %s::bigint[]) AS c(code, part)),
                     target AS (
                         SELECT e.id, COALESCE(rec.part, src.part, %s::bigint) AS part
                           FROM tags_event e
                           LEFT JOIN rec ON rec.record_id = e.source_record_id
                           LEFT JOIN src ON src.code = e.source
                          WHERE e.subject_id = %s),
                     moved AS (
                         UPDATE tags_event e SET subject_id = t.part FROM target t
                          WHERE e.id = t.id AND t.part <> %s
                         RETURNING e.subject_id, e.type)
                SELECT subject_id, type, count(*) FROM moved GROUP BY subject_id, type
                """,
                [records, record_parts, codes, code_parts, keeper, source, source],
            )
            return Counter({(s, t): n for s, t, n in cursor.fetchall()})
        cursor.execute(
            """
            UPDATE tags_event SET subject_id = t.part FROM (
                SELECT e.id AS id, COALESCE(
                    (SELECT json_extract(r.value, '$[1]') FROM json_each(%s) r
                      WHERE json_extract(r.value, '$[0]') = e.source_record_id),
                    (SELECT json_extract(c.value, '$[1]') FROM json_each(%s) c
                      WHERE json_extract(c.value, '$[0]') = e.source),
                    %s) AS part
                  FROM tags_event e WHERE e.subject_id = %s) AS t
            WHERE tags_event.id = t.id AND t.part <> %s
            RETURNING subject_id, type
            """,
            [
                orjson.dumps(list(zip(records, record_parts, strict=True))).decode(),
                orjson.dumps(list(zip(codes, code_parts, strict=True))).decode(),
                keeper,
                source,
                source,
            ],
        )
        return Counter((s, t) for s, t in cursor.fetchall())


# ---- shared --------------------------------------------------------------------------------------


def _values(subject_ids: Iterable[int]) -> list[_Value]:
    """Every tag value of the subjects (a person's: bounded by the number of tags), in one query."""
    rows = (
        TagValue.objects.filter(subject_id__in=sorted(set(subject_ids)))
        .order_by("subject_id", "tag_id")
        .values_list("tag_id", "subject_id", "value", "source")
    )
    return [_Value(*row) for row in rows]


def _valid(rows: list[MergedValue], values: list[_Value]) -> dict[tuple[int, int], MergedValue]:
    """Held rows still describing the subject's value: ``(tag, subject) → row``. A value changed
    or removed since its merge is the merged person's own; its row is stale."""
    current = {(v.tag, v.subject): v.value for v in values if v.source in EXPLICIT}
    missing = object()
    return {
        (r.tag_id, r.subject_id): r
        for r in rows
        if r.held and current.get((r.tag_id, r.subject_id), missing) == r.value
    }


def _row(v: _Value, subject: int, origin: int, records, held: bool, correlation_id) -> MergedValue:
    return MergedValue(
        tag_id=v.tag,
        subject_id=subject,
        origin_id=origin,
        records=sorted(records),
        value=v.value,
        source=v.source,
        held=held,
        correlation_id=correlation_id,
    )


def _copy(row: MergedValue, subject: int, *, held: bool) -> MergedValue:
    return MergedValue(
        tag_id=row.tag_id,
        subject_id=subject,
        origin_id=row.origin_id,
        records=row.records,
        value=row.value,
        source=row.source,
        held=held,
        correlation_id=row.correlation_id,
    )


def _store_rows(drop: list[int], keep: list[MergedValue]) -> None:
    """Replace the follow's ``MergedValue`` rows: one DELETE, one INSERT."""
    if drop:
        MergedValue.objects.filter(id__in=drop).delete()
    if keep:
        MergedValue.objects.bulk_create(keep)


def _write(writes: _Writes, *, actor, correlation_id: uuid.UUID, extra: dict) -> dict[int, list[int]]:
    """Apply the final states through the guarded writer, per tag (and source); tag → changed subjects.

    Following a merge is not an edit: archived tags move too and values are not validated
    again (they are stored canonical). Computed tags are locked in dependency order, as the
    engine locks them.
    """
    if not writes.final:
        return {}
    from tags.propagation.state import lock_tag
    from tags.realtime import index as tag_index

    tags = {t.pk: t for t in TagDefinition.objects.filter(pk__in=list(writes.final))}
    position = tag_index.current().position
    now, changed = timezone.now(), {}
    for tag_id in sorted(writes.final, key=lambda t: (position.get(t, -1), t)):
        tag = tags[tag_id]
        computed = tag.computation != Computation.ASSIGNED
        if computed:
            lock_tag(tag_id)
        by_source: dict[str, list[dict]] = {}
        for subject, (value, source) in sorted(writes.final[tag_id].items()):
            encoded = None if value is None else orjson.dumps(value).decode()
            by_source.setdefault(source, []).append({"subject_id": subject, "value": encoded})
        counts = Counter()
        ids: list[int] = []
        for source, rows in sorted(by_source.items()):
            applied = apply_computed(
                tag_id=tag_id,
                computed_sql=recordset_sql(),
                params=[orjson.dumps(rows).decode()],
                source=source,
                rule_version=tag.version if computed else None,
                correlation_id=correlation_id,
                now=now,
            )
            counts.update(created=len(applied.created), updated=len(applied.updated), removed=len(applied.removed))
            ids.extend(applied.changed_ids)
        bulk_write_record(
            actor=actor,
            action="tags.values_followed",
            object_type=f"tag:{tag.code}",
            counts={"created": counts["created"], "updated": counts["updated"], "removed": counts["removed"]}
            | {"tag_id": tag_id},
            ids=sorted(ids),
            correlation_id=correlation_id,
            extra=extra,
        )
        if ids:
            changed[tag_id] = sorted(ids)
    return changed


def _refresh(subject_ids: list[int], followed: Followed, correlation_id: uuid.UUID, gone=frozenset()) -> None:
    """After the commit, the engine recomputes every computed tag of the subjects and carries the
    explicit values that changed on them downstream. ``gone``: retired subjects, left alone (a
    recompute would give a retired OneID its rules' defaults again)."""
    from tags.realtime import index as tag_index
    from tags.realtime.enqueue import enqueue_after_commit
    from tags.realtime.planner import Plan

    index = tag_index.current()
    types = dict(Subject.objects.filter(id__in=subject_ids).values_list("id", "subject_type_id"))
    plan = Plan()
    for tag_id, tag in index.tags.items():
        plan.recompute(tag_id, [s for s in subject_ids if types.get(s) == tag.subject_type_id])
    for tag_id, ids in followed.values.items():
        plan.changed(tag_id, [s for s in ids if s not in gone])
    enqueue_after_commit(plan, correlation_id=correlation_id)


def _summary(followed: Followed) -> dict:
    moved: dict[str, int] = {}
    for (_, event_type), n in followed.events.items():
        moved[event_type] = moved.get(event_type, 0) + n
    return {
        "events_moved": sum(followed.events.values()),
        "event_types": moved,
        "values_changed": {str(t): len(ids) for t, ids in followed.values.items()},
        "set_aside": followed.set_aside,
    }
