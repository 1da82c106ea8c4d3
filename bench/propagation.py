"""Propagation at scale and the real-time engine's latency, each against hand-written SQL.

Data (set-based, ``generate_series``): ``members`` members with a skin type (an assigned
enum tag), ``clinics`` clinics with a promotion type, ``regions`` regions (clinic
→in_region→ region), ~3 ``visited`` relationships per member (valid from some day in
the last year), and ``events`` purchases over the last year.

Steps (ours = the product's full recompute: compiled SELECT → chunked guarded write
with history; reference = one hand-written statement doing the same work — the same
values, the same guarded write and history rows into the same tables under a twin tag):
- ``rollup``: share per value of the members' skin type per clinic (distinct members);
- ``twohop``: share of "dry" members per region, member →visited→ clinic →in_region→ region;
- ``pushdown``: each member copies the promotion of their most recently visited clinic;
each from an empty tag, then again with nothing to change (0 rows written).
- ``latency``: a real ``celery worker`` on Redis (``--broker``) against this database;
  events go in through ``ingest_events`` in batches at ``--rate`` events/s; each
  purchase changes the member's ``spend_90d`` (a rule tag), the average over its
  clinics (``clinic_spend``) and its regions (``region_spend``, two hops). Latency =
  the domain event of the region write minus the domain event of the batch's
  acceptance (both stamped just before their commits), p50/p95 per batch.
- ``in_process``: the same with no broker (Celery eager): the engine runs right
  after the ingestion commit, in the request's process.
- ``ingest``: batch ingestion through the API view stack (``django.test.Client``,
  1,000 events a request, the real-time enqueue included); count in = count stored.
  ``ingest_api``: year-old visits no tag reads (ingestion alone); ``ingest_api_refreshed``:
  today's purchases, each request also running (eager) the refresh of the members' spend,
  their clinics and regions before it answers.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid

from .harness import IDENTITY_UNCONSTRAINED, REPO_DIR, Bench, Stopwatch, bench_environ, database_url, table_write_counts

FULL_MEMBERS, FULL_CLINICS, FULL_REGIONS, FULL_EVENTS = 1_000_000, 5_000, 50, 5_000_000
VISITS_PER_MEMBER = 3
TABLES = ["tags_tagvalue", "tags_tagvaluechange"]
SKIN = ["dry", "oily", "combination", "normal", "sensitive"]
PROMO = ["discount", "gift", "vip_day"]
SPEND_90D = {"formula": {"event_agg": {"type": "purchase", "fn": "sum", "property": "amount", "days": 90}}}


def add_arguments(parser) -> None:
    group = parser.add_argument_group("propagation")
    group.add_argument("--keep-data", action="store_true", help="reuse generated data if present")
    group.add_argument("--rate", type=int, default=1000, help="events/s for the latency step")
    group.add_argument("--batch", type=int, default=50, help="events per ingestion batch in the latency step")
    group.add_argument("--seconds", type=float, default=20.0, help="duration of the latency step")
    group.add_argument("--broker", default=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/14"))
    group.add_argument("--worker-concurrency", type=int, default=2)
    group.add_argument("--skip-latency", action="store_true")
    group.add_argument("--latency-only", action="store_true", help="skip the full recomputes and ingestion")
    group.add_argument(
        "--cases", default="rollup,twohop,pushdown", help="full-recompute cases to run (comma-separated)"
    )
    group.add_argument(
        "--reuse-primed",
        action="store_true",
        help="latency: skip the priming recomputes when a previous run's are there",
    )
    group.add_argument("--ingest-events", type=int, default=50_000, help="events for the ingestion step")


# ---- data ------------------------------------------------------------------------------------


def ensure_types():
    from subjects.models import RelationshipType, SubjectType

    def subject_type(code, category):
        return SubjectType.objects.get_or_create(code=code, defaults={"name": code, "category": category})[0]

    member, clinic, region = (
        subject_type("pb_member", "customer"),
        subject_type("pb_clinic", "organization"),
        subject_type("pb_region", "organization"),
    )
    visited = RelationshipType.objects.get_or_create(
        code="pb_visited", defaults={"name": "visited", "from_type": member, "to_type": clinic}
    )[0]
    in_region = RelationshipType.objects.get_or_create(
        code="pb_in_region",
        defaults={"name": "in region", "from_type": clinic, "to_type": region, "cardinality": "n:1"},
    )[0]
    return member, clinic, region, visited, in_region


def generate(types, sizes: dict, now: dt.datetime) -> None:
    from django.db import connection

    member, clinic, region, visited, in_region = types
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE subjects_subject, {IDENTITY_UNCONSTRAINED} RESTART IDENTITY CASCADE")
        cursor.execute("TRUNCATE tags_tagvalue, tags_tagvaluechange, tags_event, audit_domainevent")
        cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute("SELECT setseed(0.17)")
            insert = (
                "INSERT INTO subjects_subject (subject_type_id, display_name, attributes, source, external_id, created_at, updated_at)"
                " SELECT %s, %s || g, '{}'::jsonb, 'bench', %s || g, %s, %s FROM generate_series(1, %s) g"
            )
            cursor.execute(insert, [region.pk, "Region ", "r", now, now, sizes["regions"]])
            cursor.execute(insert, [clinic.pk, "Clinic ", "c", now, now, sizes["clinics"]])
            cursor.execute(insert, [member.pk, "Member ", "m", now, now, sizes["members"]])
            regions, clinics = sizes["regions"], sizes["clinics"]
            cursor.execute(
                "INSERT INTO subjects_relationship (relationship_type_id, from_subject_id, to_subject_id, weight, attributes,"
                " source, external_id, created_at, updated_at, valid_from)"
                " SELECT %s, %s + g, 1 + (g %% %s), 1, '{}'::jsonb, 'bench', 'ir' || g, %s, %s, NULL FROM generate_series(1, %s) g",
                [in_region.pk, regions, regions, now, now, clinics],
            )
            cursor.execute(
                "INSERT INTO subjects_relationship (relationship_type_id, from_subject_id, to_subject_id, weight, attributes,"
                " source, external_id, created_at, updated_at, valid_from)"
                " SELECT %s, 1 + %s + %s + floor(random() * %s)::bigint, 1 + %s + floor(random() * %s)::bigint, 1, '{}'::jsonb,"
                " 'bench', 'v' || g, %s, %s, %s - random() * interval '365 days' FROM generate_series(1, %s) g",
                [visited.pk, regions, clinics, sizes["members"], regions, clinics, now, now, now, sizes["visits"]],
            )
            cursor.execute(
                "INSERT INTO tags_event (subject_id, type, occurred_at, properties, source, event_id, received_at)"
                " SELECT 1 + %s + %s + floor(random() * %s)::bigint, 'purchase', %s - random() * interval '365 days',"
                " jsonb_build_object('amount', (random() * 1000)::int), 'bench', 'e' || g, %s FROM generate_series(1, %s) g",
                [regions, clinics, sizes["members"], now, now, sizes["events"]],
            )
        finally:
            cursor.execute("SET session_replication_role = DEFAULT")
        for table in ("subjects_subject", "subjects_relationship", "tags_event"):
            cursor.execute(f"ANALYZE {table}")


def seed_assigned(tags: dict, types, now: dt.datetime) -> None:
    """Skin types on members and promotions on clinics (the sources), written set-based."""
    from django.db import connection

    member, clinic = types[0], types[1]
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM tags_tagvalue WHERE tag_id IN (%s, %s)", [tags["skin"].pk, tags["promo"].pk])
        for tag, type_, options in ((tags["skin"], member, SKIN), (tags["promo"], clinic, PROMO)):
            cursor.execute(
                "INSERT INTO tags_tagvalue (tag_id, subject_id, value, source, rule_version, updated_at)"
                " SELECT %s, id, to_jsonb((%s::text[])[1 + (hashtext(id::text) & 2147483647) %% %s]), 'imported', NULL, %s"
                " FROM subjects_subject WHERE subject_type_id = %s",
                [tag.pk, options, len(options), now, type_.pk],
            )
        cursor.execute("ANALYZE tags_tagvalue")


def ensure_tags(types) -> dict:
    from tags.models import TagDefinition, TagGroup
    from tags.propagation.definitions import activate_propagation, propagation_save
    from tags.services import definitions

    member, clinic, region = types[0], types[1], types[2]
    groups = {
        t.pk: TagGroup.objects.get_or_create(subject_type=t, code="bench", defaults={"name": "Bench"})[0]
        for t in (member, clinic, region)
    }

    def tag(type_, code, value_type, computation, options=None):
        found = TagDefinition.objects.filter(subject_type=type_, code=code).first()
        if found is None:
            found = definitions.tag_save(
                actor=None,
                data={
                    "group": groups[type_.pk],
                    "code": code,
                    "name": code,
                    "value_type": value_type,
                    "computation": computation,
                    "status": "active" if computation == "assigned" else "draft",
                },
                options=[(o, o) for o in options] if options else None,
            )
        return found

    def propagated(type_, code, value_type, body, options=None):
        found = tag(type_, code, value_type, "propagated", options)
        if found.rule_id is None:
            saved = propagation_save(actor=None, tag=found, document={"propagate": body})
            activate_propagation(actor=None, tag=found, version=saved.version, recompute=False)
            found.refresh_from_db()
        return found

    tags = {
        "skin": tag(member, "skin", "enum", "assigned", SKIN),
        "promo": tag(clinic, "promo", "enum", "assigned", PROMO),
        "mix_ref": tag(clinic, "skin_mix_ref", "text", "assigned"),
        "dry_ref": tag(region, "dry_share_ref", "number", "assigned"),
        "promo_ref": tag(member, "promo_pref_ref", "enum", "assigned", PROMO),
    }
    tags["mix"] = propagated(
        clinic,
        "skin_mix",
        "text",
        {"from": {"tag": "skin"}, "path": [{"relationship": "pb_visited"}], "aggregate": "share"},
    )
    tags["dry"] = propagated(
        region,
        "dry_share",
        "number",
        {
            "from": {"tag": "skin"},
            "path": [{"relationship": "pb_visited"}, {"relationship": "pb_in_region"}],
            "aggregate": "share",
            "value": "dry",
        },
    )
    tags["promo_pref"] = propagated(
        member,
        "promo_pref",
        "enum",
        {"from": {"tag": "promo"}, "path": [{"relationship": "pb_visited", "direction": "in"}], "aggregate": "copy"},
        PROMO,
    )
    spend = tag(member, "spend_90d", "number", "rule")
    if spend.rule_id is None:
        saved = definitions.rule_save(actor=None, tag=spend, document=SPEND_90D)
        definitions.activate_rule(actor=None, tag=spend, version=saved.version, recompute=False)
        spend.refresh_from_db()
    tags["spend"] = spend
    tags["clinic_spend"] = propagated(
        clinic,
        "clinic_spend",
        "number",
        {"from": {"tag": "spend_90d"}, "path": [{"relationship": "pb_visited"}], "aggregate": "avg"},
    )
    tags["region_spend"] = propagated(
        region,
        "region_spend",
        "number",
        {
            "from": {"tag": "spend_90d"},
            "path": [{"relationship": "pb_visited"}, {"relationship": "pb_in_region"}],
            "aggregate": "avg",
        },
    )
    return tags


# ---- the hand-written references --------------------------------------------------------------

VALID = "(r.valid_from IS NULL OR r.valid_from <= %(now)s) AND (r.valid_to IS NULL OR r.valid_to > %(now)s)"
WRITE = """
, old AS (SELECT v.subject_id, v.value FROM tags_tagvalue v WHERE v.tag_id = %(tag)s),
up AS (
    INSERT INTO tags_tagvalue AS t (tag_id, subject_id, value, source, rule_version, updated_at)
    SELECT %(tag)s, c.subject_id, c.value, 'propagated', 1, %(now)s
    FROM computed c LEFT JOIN old o ON o.subject_id = c.subject_id
    WHERE c.value IS NOT NULL AND c.value IS DISTINCT FROM o.value ORDER BY c.subject_id
    ON CONFLICT (tag_id, subject_id) DO UPDATE SET value = EXCLUDED.value, source = EXCLUDED.source,
        rule_version = EXCLUDED.rule_version, updated_at = EXCLUDED.updated_at
     WHERE t.value IS DISTINCT FROM EXCLUDED.value
    RETURNING t.subject_id, t.value
),
gone AS (
    DELETE FROM tags_tagvalue v USING computed c
    WHERE v.tag_id = %(tag)s AND v.subject_id = c.subject_id AND c.value IS NULL RETURNING v.subject_id, v.value
),
hist AS (
    INSERT INTO tags_tagvaluechange (subject_id, tag_id, old_value, new_value, source, rule_version, changed_at, correlation_id)
    SELECT up.subject_id, %(tag)s, o.value, up.value, 'propagated', 1, %(now)s, %(cid)s FROM up LEFT JOIN old o ON o.subject_id = up.subject_id
    UNION ALL
    SELECT gone.subject_id, %(tag)s, gone.value, NULL, 'propagated', 1, %(now)s, %(cid)s FROM gone
    RETURNING 1
)
SELECT count(*) FROM hist
"""

ROLLUP_REFERENCE = (
    f"""
WITH pairs AS (
    SELECT DISTINCT r.to_subject_id AS clinic, r.from_subject_id AS member FROM subjects_relationship r
    WHERE r.relationship_type_id = %(visited)s AND {VALID}
),
counted AS (
    SELECT p.clinic, v.value #>> '{{}}' AS skin, count(*) AS n
    FROM pairs p JOIN tags_tagvalue v ON v.tag_id = %(source)s AND v.subject_id = p.member GROUP BY 1, 2
),
shares AS (SELECT clinic, skin, round(n::numeric / sum(n) OVER (PARTITION BY clinic), 6)::float8 AS share FROM counted),
mix AS (SELECT clinic, jsonb_object_agg(skin, share) AS value FROM shares GROUP BY clinic),
computed AS (
    SELECT s.id AS subject_id, m.value FROM subjects_subject s LEFT JOIN mix m ON m.clinic = s.id
    WHERE s.subject_type_id = %(type)s
)
"""
    + WRITE
)

TWOHOP_REFERENCE = (
    f"""
WITH pairs AS (
    SELECT DISTINCT r2.to_subject_id AS region, r.from_subject_id AS member
    FROM subjects_relationship r JOIN subjects_relationship r2 ON r2.from_subject_id = r.to_subject_id
     AND r2.relationship_type_id = %(in_region)s
     AND (r2.valid_from IS NULL OR r2.valid_from <= %(now)s) AND (r2.valid_to IS NULL OR r2.valid_to > %(now)s)
    WHERE r.relationship_type_id = %(visited)s AND {VALID}
),
share AS (
    SELECT p.region, to_jsonb(round(avg(CASE WHEN v.value = '"dry"'::jsonb THEN 1 ELSE 0 END)::numeric, 6)::float8) AS value
    FROM pairs p JOIN tags_tagvalue v ON v.tag_id = %(source)s AND v.subject_id = p.member GROUP BY p.region
),
computed AS (
    SELECT s.id AS subject_id, x.value FROM subjects_subject s LEFT JOIN share x ON x.region = s.id
    WHERE s.subject_type_id = %(type)s
)
"""
    + WRITE
)

PUSHDOWN_REFERENCE = (
    f"""
WITH picked AS (
    SELECT DISTINCT ON (r.from_subject_id) r.from_subject_id AS member, v.value
    FROM subjects_relationship r JOIN tags_tagvalue v ON v.tag_id = %(source)s AND v.subject_id = r.to_subject_id
    WHERE r.relationship_type_id = %(visited)s AND {VALID}
    ORDER BY r.from_subject_id, COALESCE(r.valid_from, r.created_at) DESC, r.id DESC
),
computed AS (
    SELECT s.id AS subject_id, p.value FROM subjects_subject s LEFT JOIN picked p ON p.member = s.id
    WHERE s.subject_type_id = %(type)s
)
"""
    + WRITE
)


def run_reference(sql: str, params: dict) -> int:
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, {**params, "cid": uuid.uuid4()})
        return cursor.fetchone()[0]


def run_reference_fresh(sql: str, params: dict) -> int:
    """The reference after an ANALYZE (its stale-statistics plans would not be a fair reference)."""
    analyze()
    return run_reference(sql, params)


def checksum(tag_id: int) -> tuple[int, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), coalesce(sum(hashtext(subject_id::text || ':' || value::text)::bigint), 0)"
            " FROM tags_tagvalue WHERE tag_id = %s",
            [tag_id],
        )
        rows, digest = cursor.fetchone()
        return int(rows), int(digest)


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tags_tagvalue")


def clear(*tags) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        ids = [t.pk for t in tags]
        cursor.execute("DELETE FROM tags_tagvalue WHERE tag_id = ANY(%s)", [ids])
        cursor.execute("DELETE FROM tags_tagvaluechange WHERE tag_id = ANY(%s)", [ids])


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


def full_cases(bench: Bench, tags: dict, types, sizes: dict, now: dt.datetime, only: set[str] | None = None) -> None:
    from tags.propagation.recompute import recompute_all

    member, clinic, region, visited, in_region = types
    common = {"now": now, "visited": visited.pk, "in_region": in_region.pk}
    cases = (
        (
            "rollup",
            tags["mix"],
            tags["mix_ref"],
            ROLLUP_REFERENCE,
            {"source": tags["skin"].pk, "type": clinic.pk},
            sizes["clinics"],
            "share per value, members → clinics",
        ),
        (
            "twohop",
            tags["dry"],
            tags["dry_ref"],
            TWOHOP_REFERENCE,
            {"source": tags["skin"].pk, "type": region.pk},
            sizes["regions"],
            "share of one value, members → clinics → regions",
        ),
        (
            "pushdown",
            tags["promo_pref"],
            tags["promo_ref"],
            PUSHDOWN_REFERENCE,
            {"source": tags["promo"].pk, "type": member.pk},
            sizes["members"],
            "copy most recent, clinics → members",
        ),
    )
    cases = tuple(c for c in cases if only is None or c[0] in only)
    for run_no in range(1, bench.runs + 1):
        print(f"  run {run_no}/{bench.runs}", flush=True)
        for key, ours, ref, sql, extra, items, what in cases:
            clear(ours, ref)
            timed(
                bench,
                f"ours_{key}_first",
                f"ours: {what}, empty → all",
                items,
                lambda t=ours: recompute_all(t, now=now),
            )
            timed(
                bench,
                f"ours_{key}_nochange",
                f"ours: {what}, nothing to change",
                items,
                lambda t=ours: recompute_all(t, now=now),
            )
            params = {**common, **extra, "tag": ref.pk}
            timed(
                bench,
                f"ref_{key}_first",
                f"reference: one statement, {what}",
                items,
                lambda s=sql, p=params: run_reference_fresh(s, p),
            )
            timed(
                bench,
                f"ref_{key}_nochange",
                "reference: the same, nothing to change",
                items,
                lambda s=sql, p=params: run_reference_fresh(s, p),
            )
            if run_no == 1:
                ours_sum, ref_sum = checksum(ours.pk), checksum(ref.pk)
                same = ours_sum[0] == ref_sum[0] and _same_values(ours.pk, ref.pk)
                bench.sections[f"{key}_same_values"] = {"ours": ours_sum, "reference": ref_sum, "same": same}
                bench.note(
                    f"{key}: ours and the reference {'hold the same' if same else 'DIFFER in'} values ({ours_sum[0]:,} rows)"
                )
    for key, *_ in cases:
        bench.compare(f"{key} full recompute (empty → all)", f"ours_{key}_first", f"ref_{key}_first")
        bench.compare(f"{key} full recompute (no change)", f"ours_{key}_nochange", f"ref_{key}_nochange")


def _same_values(a: int, b: int) -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM tags_tagvalue x FULL JOIN (SELECT * FROM tags_tagvalue WHERE tag_id = %s) y"
            " ON y.subject_id = x.subject_id WHERE x.tag_id = %s AND x.value IS DISTINCT FROM y.value"
            " OR (x.tag_id IS NULL)",
            [b, a],
        )
        return cursor.fetchone()[0] == 0


# ---- real time -----------------------------------------------------------------------------


def prime_realtime(tags: dict, now: dt.datetime) -> None:
    """Full recomputes so the chain holds its values before events arrive."""
    from tags.propagation.recompute import recompute_all as propagated_all
    from tags.realtime.receivers import on_values_changed
    from tags.services.recompute import recompute_all
    from tags.signals import values_changed

    started = time.monotonic()
    # Set-up, not measured: the propagated tags are recomputed in full next, so the engine need not
    # follow each of the rule's 20 chunks (each would rebuild every clinic's and region's state).
    values_changed.disconnect(dispatch_uid="tagweave.realtime.values_changed")
    try:
        recompute_all(tags["spend"], now=now, cascade=False)
    finally:
        values_changed.connect(on_values_changed, dispatch_uid="tagweave.realtime.values_changed")
    propagated_all(tags["clinic_spend"], now=now)
    propagated_all(tags["region_spend"], now=now)
    from tags.models import RefreshRequest

    RefreshRequest.objects.all().delete()  # left by an interrupted earlier run: not this run's work
    print(f"    primed spend_90d → clinic_spend → region_spend in {time.monotonic() - started:.1f}s", flush=True)


def primed(tags: dict) -> bool:
    """Do the chain's propagated tags hold a full recompute of their active version (a previous run's)?"""
    from tags.models import RefreshRequest
    from tags.propagation.state import state_built

    RefreshRequest.objects.all().delete()
    wanted = {tags["clinic_spend"].pk, tags["region_spend"].pk}
    return state_built(wanted) == wanted


def member_ids(type_id: int) -> tuple[int, int]:
    from subjects.models import Subject

    ids = Subject.objects.filter(subject_type_id=type_id).order_by("id").values_list("id", flat=True)
    return ids.first(), ids.last()


def send_load(bounds: tuple[int, int], rate: int, batch: int, seconds: float, tag: str) -> list[tuple[str, float]]:
    """Ingest ``rate`` events/s in batches for ``seconds``; returns (correlation id, send time) per batch."""
    import random

    from django.db import connection

    from audit.models import DomainEvent
    from tags.events import ingest_events

    rng, sent, n = random.Random(7), [], 0
    interval = batch / rate
    start = time.monotonic()
    next_at = start
    while time.monotonic() - start < seconds:
        now = dt.datetime.now(dt.UTC)
        items = [
            {
                "source": "bench",
                "event_id": f"{tag}-{n + i}",
                "type": "purchase",
                "occurred_at": now.isoformat(),
                "properties": {"amount": rng.randint(1, 900)},
                "subject": rng.randint(*bounds),
            }
            for i in range(batch)
        ]
        n += batch
        ingest_events(actor=None, items=items)
        last = (
            DomainEvent.objects.filter(action="tags.events_ingested")
            .order_by("-id")
            .values_list("correlation_id", flat=True)
            .first()
        )
        sent.append((str(last), time.monotonic()))
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    connection.close()
    return sent


def _leads(correlations: list[str]) -> dict[str, str]:
    """Batch correlation → the correlation its refresh ran under (several batches coalesced run as one)."""
    from audit.models import DomainEvent

    leads = {str(c): str(c) for c in correlations}
    for lead, summary in DomainEvent.objects.filter(
        action="tags.refresh_coalesced", correlation_id__in=correlations
    ).values_list("correlation_id", "summary"):
        for c in (summary or {}).get("correlations", []):
            if c in leads:
                leads[c] = str(lead)
    return leads


def _done(correlations: list[str], tag_code: str) -> dict[str, dt.datetime]:
    """Batch correlation → when its refresh first wrote ``tag_code`` (directly or coalesced)."""
    from django.db.models import Min

    from audit.models import DomainEvent

    leads = _leads(correlations)
    written = {
        str(c): t
        for c, t in DomainEvent.objects.filter(
            action="tags.propagated", object_type=f"tag:{tag_code}", correlation_id__in=set(leads.values())
        )
        .values("correlation_id")
        .annotate(t=Min("occurred_at"))
        .values_list("correlation_id", "t")
    }
    return {c: written[lead] for c, lead in leads.items() if lead in written}


def latencies(correlations: list[str], tag_code: str) -> tuple[list[float], int]:
    from audit.models import DomainEvent

    accepted = {
        str(c): t
        for c, t in DomainEvent.objects.filter(
            action="tags.events_ingested", correlation_id__in=correlations
        ).values_list("correlation_id", "occurred_at")
    }
    done = _done(correlations, tag_code)
    values = [(done[c] - accepted[c]).total_seconds() for c in accepted if c in done]
    return values, len(accepted) - len(values)


def wait_drained(correlations: list[str], tag_code: str, limit: float = 150.0, stall: float = 20.0) -> float:
    """Wait until every batch reached ``tag_code`` (or no progress for ``stall`` s); seconds waited."""
    started = last_change = time.monotonic()
    seen = -1
    while time.monotonic() - started < limit:
        done = len(_done(correlations, tag_code))
        if done >= len(correlations):
            break
        if done != seen:
            seen, last_change = done, time.monotonic()
        elif time.monotonic() - last_change > stall:
            break
        time.sleep(0.5)
    return round(time.monotonic() - started, 1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def record_latency(bench: Bench, name: str, description: str, values: list[float], missing: int, events: int) -> None:
    from .harness import Sample

    if not values:
        bench.note(f"{name}: no completed batches")
        return
    p50, p95 = percentile(values, 0.5), percentile(values, 0.95)
    bench.add_sample(
        name,
        Sample(
            seconds=p95,
            items=len(values),
            extra={"p50_s": p50, "p95_s": p95, "max_s": max(values), "missing": missing, "events": events},
        ),
        description,
    )
    bench.sections[name] = {
        "p50_ms": round(p50 * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
        "batches": len(values),
        "missing": missing,
        "events": events,
    }
    bench.note(
        f"{name}: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {max(values) * 1000:.0f} ms over {len(values)} batches ({missing} without a region change)"
    )


def in_process(bench: Bench, tags: dict, bounds, options) -> None:
    from tags.realtime import index as tag_index

    tag_index.forget()
    seconds = min(options.seconds, 10.0)
    sent = send_load(bounds, options.rate, options.batch, seconds, f"ip{uuid.uuid4().hex[:6]}")
    record_latency(
        bench,
        "latency_in_process_clinics",
        f"event batch of {options.batch} → member and its clinics; eager, in process",
        *latencies([c for c, _ in sent], tags["clinic_spend"].code),
        len(sent) * options.batch,
    )
    values, missing = latencies([c for c, _ in sent], tags["region_spend"].code)
    record_latency(
        bench,
        "latency_in_process",
        f"event batch of {options.batch} → member, clinics, regions; eager, in process",
        values,
        missing,
        len(sent) * options.batch,
    )
    bench.sections["in_process_rate"] = {
        "target_events_per_s": options.rate,
        "achieved_events_per_s": round(len(sent) * options.batch / seconds),
    }


def through_worker(bench: Bench, tags: dict, bounds, options) -> None:
    from config.celery import app

    env = {**os.environ, **bench_environ(database_url()), "CELERY_BROKER_URL": options.broker, "LOG_LEVEL": "WARNING"}
    queue = f"bench_{uuid.uuid4().hex[:6]}"
    log_path = REPO_DIR / "bench" / "results" / "propagation-worker.log"
    log_path.parent.mkdir(exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "-P",
        "prefork",
        "-c",
        str(options.worker_concurrency),
        "-Q",
        queue,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "INFO",
    ]
    with log_path.open("w") as log:
        worker = subprocess.Popen(command, cwd=REPO_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    from kombu import pools

    saved = {k: app.conf[k] for k in ("broker_url", "task_always_eager", "task_default_queue")}
    app.conf.update(broker_url=options.broker, task_always_eager=False, task_default_queue=queue)
    pools.reset()
    app._pool, app.amqp._producer_pool = None, None
    try:
        time.sleep(6)  # worker start-up (Django set-up, broker connection)
        sent = send_load(bounds, options.rate, options.batch, options.seconds, f"w{uuid.uuid4().hex[:6]}")
        events = len(sent) * options.batch
        drained = wait_drained([c for c, _ in sent], tags["region_spend"].code)
        bench.sections["worker_drain_s"] = drained
        record_latency(
            bench,
            "latency_worker_clinics",
            f"event batch of {options.batch} → member and its clinics; Redis + worker",
            *latencies([c for c, _ in sent], tags["clinic_spend"].code),
            events,
        )
        values, missing = latencies([c for c, _ in sent], tags["region_spend"].code)
        record_latency(
            bench,
            "latency_worker",
            f"event batch of {options.batch} → member, clinics, regions; Redis + worker",
            values,
            missing,
            events,
        )
        bench.sections["worker_rate"] = {
            "target_events_per_s": options.rate,
            "achieved_events_per_s": round(events / options.seconds),
            "batch": options.batch,
        }
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        app.conf.update(**saved)
        pools.reset()
        app._pool, app.amqp._producer_pool = None, None


def ingest_throughput(bench: Bench, bounds, total: int, *, read_by_tags: bool = False) -> None:
    """Batches of 1,000 through the API view stack (django.test.Client), real-time enqueue included (eager).

    Visits a year old (``read_by_tags`` false) are read by no tag: ingestion alone. Purchases of
    today are read by ``spend_90d`` and, through it, by the clinic and region roll-ups: with Celery
    eager the request also runs the whole downstream refresh of its 1,000 events before answering.
    """
    import random

    import orjson
    from django.contrib.auth import get_user_model
    from django.test import Client

    from tags.models import Event

    user, _ = get_user_model().objects.get_or_create(
        username="bench_ingest", defaults={"is_superuser": True, "is_staff": True}
    )
    if not user.is_superuser:
        user.is_superuser = True
        user.save()
    from tags.realtime import index as tag_index

    tag_index.forget()  # the tags this run created or activated
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    rng, tag = random.Random(3), uuid.uuid4().hex[:6]
    bodies = []
    if read_by_tags:
        kind, now, name = "purchase", dt.datetime.now(dt.UTC), "ingest_api_refreshed"
    else:  # a year old, outside every window, and a type no tag reads: ingestion cost only
        kind, now, name = "visit", dt.datetime.now(dt.UTC) - dt.timedelta(days=400), "ingest_api"
    for start in range(0, total, 1000):
        items = [
            {
                "source": "bench",
                "event_id": f"in{tag}-{start + i}",
                "type": kind,
                "occurred_at": now.isoformat(),
                "properties": {"amount": rng.randint(1, 900)} if read_by_tags else {"n": i},
                "subject": rng.randint(*bounds),
            }
            for i in range(1000)
        ]
        bodies.append(orjson.dumps({"items": items}))
    before = Event.objects.count()
    described = (
        "batch ingestion API, 1,000 purchases a request, each request refreshing spend, clinics and regions (eager)"
        if read_by_tags
        else "batch ingestion API, 1,000 events a request (in-process client)"
    )
    with bench.sample(name, described) as sample:
        watch = Stopwatch()
        with watch:
            for body in bodies:
                response = client.post("/api/v1/events/batch/", body, content_type="application/json")
                assert response.status_code == 200, response.content[:500]
        sample.seconds, sample.items = watch.seconds, total
    stored = Event.objects.count() - before
    bench.sections[name] = {"sent": total, "stored": stored, "events_per_s": round(total / watch.seconds)}
    bench.note(f"{name}: {total / watch.seconds:,.0f} events/s; sent {total:,}, stored {stored:,}")


def run(bench: Bench, options) -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        raise SystemExit("propagation needs PostgreSQL (BENCH_DATABASE_URL)")
    p = bench.profile
    sizes = {
        "members": p.n(FULL_MEMBERS),
        "clinics": p.n(FULL_CLINICS),
        "regions": max(5, p.n(FULL_REGIONS)),
        "visits": p.n(FULL_MEMBERS) * VISITS_PER_MEMBER,
        "events": p.n(FULL_EVENTS),
    }
    bench.params.update(sizes)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    types = ensure_types()
    from subjects.models import Subject

    present = Subject.objects.filter(subject_type=types[0]).count() == sizes["members"]
    if not (options.keep_data and present):
        print(f"  generating {sizes}", flush=True)
        started = time.monotonic()
        generate(types, sizes, now)
        print(f"    generated in {time.monotonic() - started:.0f}s", flush=True)
    tags = ensure_tags(types)
    seed_assigned(tags, types, now)
    bounds = member_ids(types[0].pk)
    if not options.latency_only:
        full_cases(bench, tags, types, sizes, now, set(options.cases.split(",")))
        ingest_throughput(bench, bounds, options.ingest_events)
        if not primed(tags):
            prime_realtime(tags, dt.datetime.now(dt.UTC))
        ingest_throughput(bench, bounds, min(options.ingest_events, 20_000), read_by_tags=True)
    if options.skip_latency:
        return
    if not (options.reuse_primed and primed(tags)):
        prime_realtime(tags, dt.datetime.now(dt.UTC))
    in_process(bench, tags, bounds, options)
    through_worker(bench, tags, bounds, options)
