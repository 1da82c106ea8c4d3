"""Re-apply the OneID rules to the records already stored.

An identifier is what extraction made of a raw value under the rules of the day
it arrived. Identifier types, composite keys, blocked values and a source's app
or open platform are data an operator edits, so when they change the stored
identifiers are re-derived from the stored raw fields (the ingest's own
:func:`identity.extract.extract`) and the partition is recomputed: a phone
blocked today stops linking the records it merged yesterday, a field added to a
type starts linking, a limit lowered splits the groups now over it.

Set-based per chunk: one read of the chunk's records and identifiers, Python
extraction (as at ingest), and for the records whose identifiers differ one
``DELETE`` and one ``COPY``. Records whose identifiers did not change are not
written, so a re-run, or a rule edit that changes nothing, writes nothing.

All or nothing: one transaction, holding the lock the batch resolver takes
(``SHARE ROW EXCLUSIVE`` on source records, PostgreSQL), so no ingest interleaves
with a snapshot of the rules it does not share. A stored value the current rules
reject (a type's normalizer made stricter) no longer yields an identifier; every
such value is counted and the first :data:`MAX_PROBLEMS` are returned and logged
with record and field, never dropped silently.

Runs (:class:`identity.models.ReapplyRun`) make it visible and cheap to ask for: a rule change
requests one once committed and the Celery task :func:`run_reapply` carries it out; a run
that finds, once it holds the lock, that a run started after its request has already finished
is skipped (that run loaded the rules with its change in them).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import orjson
from django.db import connection, transaction
from django.utils import timezone

from audit.services import bulk_write_record

from ..extract import Rules, SourceScope, extract, load_rules
from ..models import Identifier, ReapplyRun, RunStatus, SourceRecord, SourceSystem
from ..resolution.batch import BatchResult, resolve_all
from .records import write_identifier_rows

CHUNK = 5_000
MAX_PROBLEMS = 50
STORED = ("record_id", "identifier_type_id", "composite_key_id", "scope", "value", "key", "status")


@dataclass
class ReapplyResult:
    correlation_id: uuid.UUID
    records: int = 0  # records read
    changed: int = 0  # records whose identifiers were rewritten
    added: int = 0  # identifiers written
    removed: int = 0  # identifiers deleted
    problems: int = 0  # stored values the current rules reject
    problem_samples: list[dict] = field(default_factory=list)  # the first MAX_PROBLEMS: record, field, message
    resolution: BatchResult | None = None

    def summary(self) -> dict:
        resolution = self.resolution
        return {
            "records": self.records,
            "changed": self.changed,
            "added": self.added,
            "removed": self.removed,
            "problems": self.problems,
            "problem_samples": self.problem_samples,
            "resolution": None
            if resolution is None
            else {
                "moved": resolution.moved,
                "created": resolution.created,
                "merges": resolution.merges,
                "splits": resolution.splits,
            },
        }


def identity_rules_reapply(
    *, actor=None, chunk: int = CHUNK, refresh_golden: bool = False, correlation_id: uuid.UUID | None = None
) -> ReapplyResult:
    """Re-extract every record's identifiers under the current rules, then re-resolve everything.

    ``refresh_golden`` rebuilds every OneID's golden record too (survivorship rules or trust
    ranks changed). Idempotent: a second run writes nothing.
    """
    result = ReapplyResult(correlation_id=correlation_id or uuid.uuid4())
    rules = load_rules()
    with transaction.atomic():
        _lock()
        scopes = {
            s.id: SourceScope(s.code, s.subject_type_id, s.app_id, s.open_platform_id)
            for s in SourceSystem.objects.all()
        }
        changed_ids: list[int] = []
        last = 0
        while rows := _records_after(last, chunk):
            last = rows[-1][0]
            result.records += len(rows)
            changed_ids += _reapply_chunk(rows, scopes, rules, result)
        bulk_write_record(
            actor=actor,
            action="identity.identifiers_reextracted",
            object_type="identity.sourcerecord",
            counts={k: v for k, v in result.summary().items() if k not in ("resolution", "problem_samples")},
            ids=changed_ids,
            correlation_id=result.correlation_id,
            extra={"problem_samples": result.problem_samples},
        )
        result.resolution = resolve_all(
            actor=actor, rules=rules, refresh_golden=refresh_golden, correlation_id=result.correlation_id
        )
    return result


def reapply_request(*, actor=None, refresh_golden: bool = False) -> ReapplyRun:
    """A pending run, requested now (call it once the change that needs it is committed)."""
    requester = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    return ReapplyRun.objects.create(requested_by=requester, requested_at=timezone.now(), refresh_golden=refresh_golden)


def run_reapply(run_id: int, *, actor=None, chunk: int = CHUNK) -> ReapplyRun:
    """Carry out run ``run_id``: skipped when a later-started run has finished, else re-apply.

    The outcome is written in the same transaction as the work (so the next run, waiting on the
    lock, sees it); a failure rolls the work back and is recorded on the run, then re-raised.
    """
    run = ReapplyRun.objects.get(pk=run_id)
    if run.status in (RunStatus.DONE, RunStatus.SKIPPED):
        return run
    ReapplyRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, started_at=timezone.now(), error="")
    try:
        with transaction.atomic():
            _lock()
            covering = ReapplyRun.objects.filter(status=RunStatus.DONE, started_at__gte=run.requested_at)
            if run.refresh_golden:
                covering = covering.filter(refresh_golden=True)
            covering = covering.exclude(pk=run.pk).order_by("started_at").first()
            if covering is not None:
                ReapplyRun.objects.filter(pk=run.pk).update(
                    status=RunStatus.SKIPPED, covered_by=covering, finished_at=timezone.now()
                )
            else:
                result = identity_rules_reapply(
                    actor=actor, chunk=chunk, refresh_golden=run.refresh_golden, correlation_id=run.correlation_id
                )
                summary = result.summary()
                ReapplyRun.objects.filter(pk=run.pk).update(
                    status=RunStatus.DONE,
                    finished_at=timezone.now(),
                    **{k: summary[k] for k in ("records", "changed", "added", "removed", "problems")},
                    problem_samples=summary["problem_samples"],
                    resolution=summary["resolution"] or {},
                )
    except Exception as exc:
        ReapplyRun.objects.filter(pk=run.pk).update(
            status=RunStatus.FAILED, finished_at=timezone.now(), error=f"{type(exc).__name__}: {exc}"[:2000]
        )
        raise
    run.refresh_from_db()
    return run


def _lock() -> None:
    """The batch resolver's lock: no push, resolution or other run interleaves."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE identity_sourcerecord IN SHARE ROW EXCLUSIVE MODE")


def _records_after(last: int, chunk: int) -> list[tuple[int, int, str]]:
    """The next ``chunk`` records by id: ``(id, source_id, raw as JSON text)`` (orjson decodes it
    several times faster than the ORM's ``json.loads``)."""
    raw = "raw::text" if connection.vendor == "postgresql" else "raw"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, source_id, {raw} FROM {SourceRecord._meta.db_table} WHERE id > %s ORDER BY id LIMIT %s",
            [last, chunk],
        )
        return cursor.fetchall()


def _stored_identifiers(first: int, last: int) -> dict[int, set[tuple]]:
    """The identifiers of the records with ids in ``[first, last]`` (a chunk is a contiguous id range)."""
    stored: dict[int, set[tuple]] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(STORED)} FROM {Identifier._meta.db_table} WHERE record_id BETWEEN %s AND %s",
            [first, last],
        )
        for record_id, *rest in cursor.fetchall():
            stored.setdefault(record_id, set()).add(tuple(rest))
    return stored


def _reapply_chunk(rows: list[tuple], scopes: dict[int, SourceScope], rules: Rules, result: ReapplyResult) -> list[int]:
    """Rewrite the identifiers of the records of ``rows`` that extraction now gives differently."""
    stored = _stored_identifiers(rows[0][0], rows[-1][0])
    changed: list[int] = []
    fresh_rows: list[tuple] = []
    for record_id, source_id, text in rows:
        raw = orjson.loads(text) if text else {}
        extracted, problems = extract(raw if isinstance(raw, dict) else {}, scopes[source_id], rules)
        for where, message in problems:
            result.problems += 1
            if len(result.problem_samples) < MAX_PROBLEMS:
                result.problem_samples.append({"record": record_id, "field": where, "message": message})
        fresh = {(e.type_id, e.composite_id, e.scope, e.value, e.key, e.status) for e in extracted}
        old = stored.get(record_id, set())
        if fresh == old:
            continue
        changed.append(record_id)
        result.added += len(fresh)
        result.removed += len(old)
        fresh_rows += [(record_id, *e) for e in fresh]
    if changed:
        Identifier.objects.filter(record_id__in=changed).delete()
        write_identifier_rows(fresh_rows)
        result.changed += len(changed)
    return changed
