"""Rule tags at scale: ours (compiled rule → chunked guarded writes) vs one hand-written statement.

Data (generated set-based with ``generate_series``): ``members`` subjects with a
birth date and a spend, ``events`` purchase/visit events over the last year.

Steps, each against a hand-written reference doing the same work in the same run:
- ``age``: an attribute rule (age band from ``attributes.birth_date``) over all members;
- ``freq``: an event-aggregate rule (purchases in the last 90 days → frequency band);
each first from an empty tag (every value inserted, with history) and then again with
nothing to change (0 rows written). The reference is one ``INSERT … SELECT … ON
CONFLICT DO UPDATE … WHERE value IS DISTINCT FROM …`` over all members, with the
old-values CTE, the DELETE of values that became null and the history INSERT — the
same writes into the same tables (``tags_tagvalue`` / ``tags_tagvaluechange``, same
indexes and FKs) under a second tag id; both start from an empty table.
- ``incremental``: ``recompute_subjects`` of 100 random members, ≥ 200 samples, p50/p95;
- peak RSS of this process (which runs exactly the worker's code) during a full recompute.
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import time

from .harness import IDENTITY_UNCONSTRAINED, Bench, Sample, Stopwatch, table_write_counts

FULL_MEMBERS = 1_000_000
FULL_EVENTS = 5_000_000
TYPE_CODE = "bench_member"
TABLES = ["tags_tagvalue", "tags_tagvaluechange"]

AGE_BAND = {
    "cases": [
        {"when": {"<": [{"years_since": {"var": "attributes.birth_date"}}, 25]}, "then": "under_25"},
        {"when": {"<": [{"years_since": {"var": "attributes.birth_date"}}, 40]}, "then": "25_39"},
        {"when": {"<": [{"years_since": {"var": "attributes.birth_date"}}, 60]}, "then": "40_59"},
        {"when": {">=": [{"years_since": {"var": "attributes.birth_date"}}, 60]}, "then": "60_plus"},
    ],
    "default": None,
}
AGE_OPTIONS = ["under_25", "25_39", "40_59", "60_plus"]
PURCHASES_90 = {"event_agg": {"type": "purchase", "fn": "count", "days": 90}}
FREQUENCY = {
    "cases": [
        {"when": {">=": [PURCHASES_90, 3]}, "then": "frequent"},
        {"when": {">=": [PURCHASES_90, 1]}, "then": "occasional"},
    ],
    "default": "lapsed",
}
FREQ_OPTIONS = ["frequent", "occasional", "lapsed"]


def add_arguments(parser) -> None:
    group = parser.add_argument_group("tag_rules")
    group.add_argument("--chunk-size", type=int, default=50_000, help="subjects per recompute chunk (ours)")
    group.add_argument("--samples", type=int, default=250, help="samples of the 100-subject recompute")
    group.add_argument("--keep-data", action="store_true", help="reuse generated members/events if present")
    group.add_argument("--incremental-only", action="store_true", help="only the 100-subject recompute samples")


# Data ---------------------------------------------------------------------------------------


def ensure_type():
    from subjects.models import SubjectType

    schema = {
        "type": "object",
        "properties": {"birth_date": {"type": "string", "format": "date"}, "spend": {"type": "number"}},
    }
    subject_type, _ = SubjectType.objects.get_or_create(
        code=TYPE_CODE, defaults={"name": "Bench member", "category": "customer", "attribute_schema": schema}
    )
    return subject_type


def generate(subject_type_id: int, members: int, events: int, now: dt.datetime) -> None:
    """Members and events, set-based; FK triggers off while loading (this is the bench's own database)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE subjects_subject, {IDENTITY_UNCONSTRAINED} RESTART IDENTITY CASCADE")
        cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute("SELECT setseed(0.42)")
            cursor.execute(
                "INSERT INTO subjects_subject (subject_type_id, display_name, attributes, source, external_id,"
                " created_at, updated_at)"
                " SELECT %s, 'Member ' || g,"
                " CASE WHEN random() < 0.05 THEN jsonb_build_object('spend', 0) ELSE jsonb_build_object("
                "   'birth_date', to_char(date '1940-01-01' + (random() * 30000)::int, 'YYYY-MM-DD'),"
                "   'spend', round((random() * 20000)::numeric, 2)) END,"
                " 'bench', 'm' || g, %s, %s FROM generate_series(1, %s) g",
                [subject_type_id, now, now, members],
            )
            cursor.execute("SELECT min(id) FROM subjects_subject")
            first = cursor.fetchone()[0]
            cursor.execute(
                "INSERT INTO tags_event (subject_id, type, occurred_at, properties, source, event_id, received_at)"
                " SELECT %s + floor(random() * %s)::bigint,"
                " CASE WHEN random() < 0.8 THEN 'purchase' ELSE 'visit' END,"
                " %s - random() * interval '365 days',"
                " jsonb_build_object('amount', (random() * 1000)::int), 'bench', 'e' || g, %s"
                " FROM generate_series(1, %s) g",
                [first, members, now, now, events],
            )
        finally:
            cursor.execute("SET session_replication_role = DEFAULT")
        # What autovacuum does to a loaded table (visibility map, statistics); both sides profit alike.
        command = "ANALYZE" if connection.in_atomic_block else "VACUUM ANALYZE"  # tests run inside a transaction
        cursor.execute(f"{command} subjects_subject")
        cursor.execute(f"{command} tags_event")


def data_present(subject_type_id: int, members: int, events: int) -> bool:
    from subjects.models import Subject
    from tags.models import Event

    return (
        Subject.objects.filter(subject_type_id=subject_type_id).count() == members and Event.objects.count() == events
    )


def ensure_tags(subject_type):
    """The two rule tags and their reference twins (same definitions, written by the hand SQL)."""
    from tags.models import TagDefinition, TagGroup
    from tags.services import definitions

    group, _ = TagGroup.objects.get_or_create(subject_type=subject_type, code="bench", defaults={"name": "Bench"})
    tags = {}
    for code, options, document in (
        ("age_band", AGE_OPTIONS, AGE_BAND),
        ("frequency", FREQ_OPTIONS, FREQUENCY),
        ("age_band_ref", AGE_OPTIONS, None),
        ("frequency_ref", FREQ_OPTIONS, None),
    ):
        tag = TagDefinition.objects.filter(subject_type=subject_type, code=code).first()
        if tag is None:
            tag = definitions.tag_save(
                actor=None,
                data={"group": group, "code": code, "name": code, "value_type": "enum", "computation": "rule"},
                options=[(o, o) for o in options],
            )
        if document is not None and tag.rule_id is None:
            saved = definitions.rule_save(actor=None, tag=tag, document=document)
            definitions.activate_rule(actor=None, tag=tag, version=saved.version, recompute=False)
            tag.refresh_from_db()
        tags[code] = tag
    return tags


def analyze_values() -> None:
    """Fresh statistics of the tag values before a no-change run, as autovacuum would have by then.

    Untimed and the same for both sides. The reference's plan depends on them (its old-value
    and delete joins over a 1M-row table planned as empty ran for more than 10 minutes); the
    product's writer probes by index and does not.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tags_tagvalue")


def clear_values() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE tags_tagvalue, tags_tagvaluechange")
        cursor.execute("ANALYZE tags_tagvalue")


def checksum(tag_id: int) -> tuple[int, int]:
    """(rows, order-independent hash of (subject, value)) of a tag's values."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), coalesce(sum(hashtext(subject_id::text || ':' || value::text)::bigint), 0)"
            " FROM tags_tagvalue WHERE tag_id = %s",
            [tag_id],
        )
        rows, digest = cursor.fetchone()
        return int(rows), int(digest)


# The hand-written reference -------------------------------------------------------------------

_WRITE = """
, old AS (SELECT v.subject_id, v.value FROM tags_tagvalue v WHERE v.tag_id = %(tag)s),
up AS (
    INSERT INTO tags_tagvalue AS t (tag_id, subject_id, value, source, rule_version, updated_at)
    SELECT %(tag)s, c.subject_id, c.value, 'rule', 1, %(now)s
    FROM computed c LEFT JOIN old o ON o.subject_id = c.subject_id
    WHERE c.value IS NOT NULL AND c.value IS DISTINCT FROM o.value
    ORDER BY c.subject_id
    ON CONFLICT (tag_id, subject_id) DO UPDATE
       SET value = EXCLUDED.value, source = EXCLUDED.source, rule_version = EXCLUDED.rule_version,
           updated_at = EXCLUDED.updated_at
     WHERE t.value IS DISTINCT FROM EXCLUDED.value
    RETURNING t.subject_id, t.value
),
gone AS (
    DELETE FROM tags_tagvalue v USING computed c
    WHERE v.tag_id = %(tag)s AND v.subject_id = c.subject_id AND c.value IS NULL
    RETURNING v.subject_id, v.value
),
hist AS (
    INSERT INTO tags_tagvaluechange (subject_id, tag_id, old_value, new_value, source, rule_version, changed_at,
                                     correlation_id)
    SELECT up.subject_id, %(tag)s, o.value, up.value, 'rule', 1, %(now)s, %(cid)s
      FROM up LEFT JOIN old o ON o.subject_id = up.subject_id
    UNION ALL
    SELECT gone.subject_id, %(tag)s, gone.value, NULL, 'rule', 1, %(now)s, %(cid)s FROM gone
    RETURNING 1
)
SELECT count(*) FROM hist
"""

AGE_REFERENCE = (
    """
WITH computed AS (
    SELECT id AS subject_id,
           CASE WHEN age < 25 THEN '"under_25"'::jsonb WHEN age < 40 THEN '"25_39"'::jsonb
                WHEN age < 60 THEN '"40_59"'::jsonb WHEN age >= 60 THEN '"60_plus"'::jsonb END AS value
    FROM (SELECT id, (%(ymd)s - replace(attributes ->> 'birth_date', '-', '')::int) / 10000 AS age
          FROM subjects_subject WHERE subject_type_id = %(type)s) s
)
"""
    + _WRITE
)

FREQ_REFERENCE = (
    """
WITH purchases AS (
    SELECT subject_id, count(*) AS n FROM tags_event
    WHERE type = 'purchase' AND occurred_at > %(start)s AND occurred_at <= %(now)s GROUP BY subject_id
),
computed AS (
    SELECT s.id AS subject_id,
           CASE WHEN coalesce(p.n, 0) >= 3 THEN '"frequent"'::jsonb WHEN coalesce(p.n, 0) >= 1 THEN '"occasional"'::jsonb
                ELSE '"lapsed"'::jsonb END AS value
    FROM subjects_subject s LEFT JOIN purchases p ON p.subject_id = s.id
    WHERE s.subject_type_id = %(type)s
)
"""
    + _WRITE
)


def run_reference(sql: str, *, tag_id: int, type_id: int, now: dt.datetime) -> int:
    import uuid

    from django.db import connection, transaction

    params = {
        "tag": tag_id,
        "type": type_id,
        "now": now,
        "start": now - dt.timedelta(days=90),
        "ymd": now.year * 10000 + now.month * 100 + now.day,
        "cid": uuid.uuid4(),
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


# Ours ------------------------------------------------------------------------------------------


def run_ours(tag, *, now: dt.datetime, chunk_size: int) -> int:
    """The worker's path: a RecomputeJob and recompute_all with per-chunk progress."""
    from tags.models import RecomputeJob
    from tags.services.recompute import recompute_all

    job = RecomputeJob.objects.create(tag=tag, status="running")
    changed = recompute_all(tag, chunk_size=chunk_size, job=job, now=now, cascade=False)
    RecomputeJob.objects.filter(pk=job.pk).update(status="done")
    return changed


def timed(bench: Bench, name: str, description: str, items: int, fn) -> int:
    before = table_write_counts(TABLES)
    with bench.sample(name, description) as sample:
        watch = Stopwatch()
        with watch:
            changed = fn()
        sample.seconds, sample.items = watch.seconds, items
    sample.rows_written = table_write_counts(TABLES) - before
    sample.extra["rows_changed"] = changed
    print(
        f"    {name}: {sample.seconds:.2f}s, rows changed {changed:,}, rows written {sample.rows_written:,}", flush=True
    )
    return changed


def run(bench: Bench, options) -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        raise SystemExit("tag_rules needs PostgreSQL (BENCH_DATABASE_URL)")
    members, events = bench.profile.n(FULL_MEMBERS), bench.profile.n(FULL_EVENTS)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    subject_type = ensure_type()
    bench.params.update({"members": members, "events": events, "chunk_size": options.chunk_size})
    if options.keep_data and data_present(subject_type.pk, members, events):
        print(f"  reusing {members:,} members, {events:,} events", flush=True)
    else:
        print(f"  generating {members:,} members, {events:,} events", flush=True)
        started = time.monotonic()
        generate(subject_type.pk, members, events, now)
        print(f"    generated in {time.monotonic() - started:.0f}s", flush=True)
    tags = ensure_tags(subject_type)
    cases = (
        ("age", tags["age_band"], tags["age_band_ref"], AGE_REFERENCE, "attribute rule (age band)"),
        ("freq", tags["frequency"], tags["frequency_ref"], FREQ_REFERENCE, "event rule (purchases in 90 days)"),
    )
    for run_no in range(1, 0 if options.incremental_only else bench.runs + 1):
        print(f"  run {run_no}/{bench.runs}", flush=True)
        for key, ours, ref, sql, what in cases:
            clear_values()
            timed(
                bench,
                f"ours_{key}_first",
                f"ours: {what}, empty → all",
                members,
                lambda t=ours: run_ours(t, now=now, chunk_size=options.chunk_size),
            )
            analyze_values()
            timed(
                bench,
                f"ours_{key}_nochange",
                f"ours: {what}, nothing to change",
                members,
                lambda t=ours: run_ours(t, now=now, chunk_size=options.chunk_size),
            )
            ours_sum = checksum(ours.pk)
            clear_values()
            run_ref = lambda s=sql, t=ref: run_reference(s, tag_id=t.pk, type_id=subject_type.pk, now=now)  # noqa: E731
            timed(bench, f"ref_{key}_first", f"reference: one hand-written statement, {what}", members, run_ref)
            analyze_values()
            timed(bench, f"ref_{key}_nochange", "reference: the same, nothing to change", members, run_ref)
            ref_sum = checksum(ref.pk)
            if run_no == 1:
                same = ours_sum == ref_sum
                bench.sections[f"{key}_same_values"] = {"ours": ours_sum, "reference": ref_sum, "same": same}
                bench.note(
                    f"{key}: ours and the reference {'hold the same' if same else 'DIFFER in'} values {ours_sum}"
                )
    for key in ("age", "freq") if not options.incremental_only else ():
        bench.compare(f"{key} full recompute (empty → all)", f"ours_{key}_first", f"ref_{key}_first")
        bench.compare(f"{key} full recompute (no change)", f"ours_{key}_nochange", f"ref_{key}_nochange")
    from tags.services import recompute

    incremental(bench, tags["frequency"], members, now, options.samples)
    incremental(bench, tags["age_band"], members, now, options.samples)
    recompute.ASYNCHRONOUS_COMMIT = False
    try:
        incremental(bench, tags["frequency"], members, now, options.samples, suffix="_sync_commit")
    finally:
        recompute.ASYNCHRONOUS_COMMIT = True


def incremental(bench: Bench, tag, members: int, now: dt.datetime, samples: int, suffix: str = "") -> None:
    """p50/p95 of recompute_subjects for 100 random members (values present; a tenth differ, so writes happen)."""
    from django.db import connection

    from subjects.models import Subject
    from tags.services.recompute import recompute_subjects

    clear_values()
    run_ours(tag, now=now, chunk_size=50_000)
    low = Subject.objects.filter(subject_type__code=TYPE_CODE).order_by("id").values_list("id", flat=True).first()
    rng = random.Random(7)
    with connection.cursor() as cursor:  # a share of the sampled values differ, so writes happen too
        cursor.execute(
            "UPDATE tags_tagvalue SET value = '\"lapsed\"'::jsonb WHERE tag_id = %s AND subject_id %% 10 = 0", [tag.pk]
        )
    times, changed = [], 0
    for _ in range(samples):
        ids = [low + rng.randrange(members) for _ in range(100)]
        start = time.perf_counter()
        changed += recompute_subjects(tag, ids, now=now)  # as the real-time engine calls it
        times.append(time.perf_counter() - start)
    times.sort()
    p50, p95 = statistics.median(times), times[int(len(times) * 0.95) - 1]
    name = f"ours_incremental_100_{tag.code}{suffix}"
    for seconds in times:
        bench.add_sample(name, Sample(seconds=seconds, items=100), f"recompute_subjects({tag.code}, 100 ids)")
    bench.sections[name] = {"p50_ms": p50 * 1000, "p95_ms": p95 * 1000, "samples": samples, "rows_changed": changed}
    bench.note(
        f"{name}: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms over {samples} samples, {changed} rows changed"
    )
