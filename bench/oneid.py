"""OneID: ingest of source records, batch resolution vs COPY + scipy, incremental latency.

Full profile: 1,000,000 source records from six source systems (two brand CRMs
with name + phone + member id, WeCom with external_userid + name, a WeChat
official account and a mini-program of one open platform with openid + unionid,
an e-commerce shop with name + phone + address + order id) for ≈ 600k people,
≈ 3.4M identifiers; 2 % of people share a phone with another family member and
0.5 % of records carry the junk phone 13800138000. Generated deterministically
from the record's position (SplitMix64).

Steps:

- ``ingest``: ``source_record_bulk_upsert(resolve=False)`` — the service the API's
  bulk endpoint calls, with parsing, normalization and identifier extraction — in
  ``--ingest-chunk`` item calls, from empty tables. Item generation is outside the stopwatch.
- ``ingest_concurrent``: the same load again (from empty tables) from ``--ingest-workers``
  processes at once, each calling the service with its own chunks, as API workers would:
  one process leaves a core idle while PostgreSQL writes a batch and vice versa.
- ``batch_first``: ``resolve_all()`` on the freshly loaded records: components,
  then a OneID subject with its golden record for every group (``subject_bulk_upsert``).
- ``batch_rerun``: ``resolve_all()`` again: the full recompute when nothing changed
  (writes nothing).
- ``reference``: binary ``COPY`` of the linking identifiers out of PostgreSQL into
  numpy, the same over-limit filter, scipy ``connected_components`` on the same
  sparse bipartite graph, ``COPY`` of (record, label) into a table.
- ``incremental``: with everything loaded, ``--incremental`` single-record service
  calls (``resolve=True``: write, extract, lock, resolve, golden record); half link
  to an existing person (same unionid), half are new people. p50/p95 in the JSON.
- ``reapply_nochange``: ``identity_rules_reapply()`` with the rules unchanged: every
  record's identifiers re-derived from its raw fields and compared (writes nothing),
  then ``resolve_all()``. ``reapply_blocked``: the same after blocking the phone a
  family shares (its records' identifiers rewritten). ``reextract_reference``: the
  floor of that work: one ``COPY`` of every record's raw fields and the same
  ``extract()`` per record, nothing compared, written or resolved.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from django.db import connection
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from identity.defaults import install_defaults
from identity.extract import SourceScope, extract, load_rules
from identity.models import BlockedValue, SourceSystem
from identity.resolution.batch import resolve_all, shared_limit_mask
from identity.services import source_record_bulk_upsert
from identity.services.reapply import identity_rules_reapply
from subjects.models import SubjectType

from .harness import Bench, Sample, Stopwatch

MASK = (1 << 64) - 1
SURNAMES = "王李张刘陈杨黄赵吴周徐孙"
GIVEN = "伟芳娜秀敏静丽强磊军洋艳勇"
CITIES = ("上海市南京西路", "北京市建国路", "广州市天河路", "杭州市文三路", "成都市春熙路")
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
SOURCES = [
    # code, kind, app id, open platform id, trust
    ("crm_glow", "crm", "", "", 90),
    ("crm_lumi", "crm", "", "", 85),
    ("wecom", "wecom", "", "", 70),
    ("oa_glow", "wechat_oa", "wxglow", "open_group", 40),
    ("mp_lumi", "wechat_mp", "wxlumi", "open_group", 40),
    ("shop", "ecommerce", "", "", 30),
]
PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 100},
        "phone": {"type": "string"},
        "address": {"type": "string"},
        "member_id": {"type": "string"},
    },
    "additionalProperties": False,
}
TABLES = "identity_identifier, identity_manuallink, identity_donotlinkside, identity_donotlink, identity_mergeevent"


def splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def phone_of(p: int) -> str:
    if p % 50 == 1:
        p -= 1  # a family: shares the phone of the previous person, not the name
    return f"1{3 + p % 7}{p % 1_000_000_000:09d}"


def spelled(phone: str, i: int) -> str:
    style = i % 5
    if style == 1:
        return f"{phone[:3]} {phone[3:7]} {phone[7:]}"
    if style == 2:
        return f"+86-{phone[:3]}-{phone[3:7]}-{phone[7:]}"
    if style == 3:
        return "0086" + phone
    if style == 4 and i % 50 == 4:
        return phone.translate(FULL_WIDTH)
    return phone


def item(i: int, people: int) -> dict:
    h = splitmix(i)
    p = h % people
    bucket = i % 20
    name = SURNAMES[p % 12] + GIVEN[(p // 12) % 13] + GIVEN[(p // 156) % 13]
    phone = "13800138000" if (h >> 40) % 200 == 0 else phone_of(p)
    if bucket < 8:
        source = "crm_glow" if bucket < 4 else "crm_lumi"
        raw = {"name": name, "phone": spelled(phone, i), "member_id": f"M{p}"}
    elif bucket < 12:
        source, raw = "wecom", {"external_userid": f"wm{p:x}", "name": name}
    elif bucket < 15:
        source, raw = "oa_glow", {"openid": f"oG{p:x}", "unionid": f"u{p:x}"}
    elif bucket < 17:
        source, raw = "mp_lumi", {"openid": f"oL{p:x}", "unionid": f"u{p:x}"}
    else:
        address = f"{CITIES[p % 5]}{p % 999 + 1}号 {p}室"
        source = "shop"
        raw = {"name": name, "phone": spelled(phone, i), "address": address, "order_id": f"O{i}"}
    return {"source": source, "external_id": f"R{i}", "raw": raw}


def setup() -> None:
    install_defaults()
    person, _ = SubjectType.objects.get_or_create(
        code="bench_person", defaults={"name": "Person", "category": "customer", "attribute_schema": PERSON_SCHEMA}
    )
    for code, kind, app, platform, trust in SOURCES:
        SourceSystem.objects.update_or_create(
            code=code,
            defaults={
                "name": code,
                "kind": kind,
                "app_id": app,
                "open_platform_id": platform,
                "trust_rank": trust,
                "subject_type": person,
            },
        )


def truncate() -> None:
    """Empty the OneID tables. In a database holding nothing but this benchmark's subjects, the
    subjects table is truncated too: deleting 750k OneID subjects row by row (a foreign-key check
    per row in every table that references subjects) took longer than the whole benchmark."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"TRUNCATE {TABLES}, identity_recordassignment, identity_sourcerecord, identity_oneid RESTART IDENTITY CASCADE"
        )
        cursor.execute("SELECT EXISTS (SELECT 1 FROM subjects_subject WHERE source <> 'oneid')")
        if not cursor.fetchone()[0]:
            cursor.execute("TRUNCATE subjects_subject CASCADE")
            cursor.execute("DELETE FROM audit_domainevent WHERE action LIKE 'identity.%%'")
            setup()  # the source systems went with the cascade
            return
        cursor.execute(
            "DELETE FROM subjects_subject WHERE source = 'oneid'"
            " AND subject_type_id = (SELECT id FROM subjects_subjecttype WHERE code = 'bench_person')"
        )
        cursor.execute(
            "DELETE FROM audit_domainevent WHERE action LIKE 'identity.%%' OR action = 'identity.oneids_upserted'"
        )
        cursor.execute("VACUUM ANALYZE subjects_subject")


def ingest(n: int, people: int, chunk: int) -> tuple[float, int]:
    watch = Stopwatch()
    rules = load_rules()
    for start in range(0, n, chunk):
        items = [item(i, people) for i in range(start, min(start + chunk, n))]
        with watch:
            source_record_bulk_upsert(actor=None, items=items, resolve=False, rules=rules)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE identity_sourcerecord")
        cursor.execute("ANALYZE identity_identifier")
        cursor.execute("SELECT count(*) FROM identity_identifier")
        identifiers = cursor.fetchone()[0]
    return watch.seconds, identifiers


def _ingest_part(part: int, workers: int, n: int, people: int, chunk: int, barrier, done) -> None:
    """One client of the concurrent ingest: its share of the chunks, generated before the start line."""
    connection.close()  # never share the parent's socket
    rules = load_rules()
    batches = [
        [item(i, people) for i in range(start, min(start + chunk, n))]
        for number, start in enumerate(range(0, n, chunk))
        if number % workers == part
    ]
    barrier.wait()
    for items in batches:
        source_record_bulk_upsert(actor=None, items=items, resolve=False, rules=rules)
    connection.close()
    done.put(part)


def ingest_concurrent(n: int, people: int, chunk: int, workers: int) -> tuple[float, int]:
    """The same load from ``workers`` processes at once (as API workers would), each its own chunks.

    Items are generated by each process before a common start; the clock runs from the start
    to the last process's end. Disjoint keys, so no batch waits on another's rows.
    """
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier, done = context.Barrier(workers + 1), context.Queue()
    connection.close()
    processes = [
        context.Process(target=_ingest_part, args=(part, workers, n, people, chunk, barrier, done))
        for part in range(workers)
    ]
    for process in processes:
        process.start()
    barrier.wait()
    started = time.perf_counter()
    finished = [done.get() for _ in processes]
    seconds = time.perf_counter() - started
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"ingest worker exited with {process.exitcode}")
    assert sorted(finished) == list(range(workers))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE identity_sourcerecord")
        cursor.execute("ANALYZE identity_identifier")
        cursor.execute("SELECT count(*), (SELECT count(*) FROM identity_sourcerecord) FROM identity_identifier")
        identifiers, records = cursor.fetchone()
    if records != n:
        raise RuntimeError(f"concurrent ingest stored {records:,} records of {n:,}")
    return seconds, identifiers


def reference() -> tuple[float, int]:
    """Hand-written: COPY links out (binary → numpy), the shared-limit filter, scipy, COPY labels in."""
    rules = load_rules()
    started = time.perf_counter()
    with connection.cursor() as cursor:
        with cursor.cursor.copy(
            "COPY (SELECT record_id, key, coalesce(identifier_type_id, -composite_key_id)::bigint"
            " FROM identity_identifier WHERE status = 'link') TO STDOUT (FORMAT binary)"
        ) as copy:
            buffer = b"".join(bytes(c) for c in copy)
        dtype = np.dtype(
            [("n", ">i2"), ("l0", ">i4"), ("r", ">i8"), ("l1", ">i4"), ("k", ">i8"), ("l2", ">i4"), ("t", ">i8")]
        )
        rows = np.frombuffer(buffer, dtype=dtype, offset=19, count=(len(buffer) - 21) // dtype.itemsize)
        links = np.stack([rows["r"].astype(np.int64), rows["k"].astype(np.int64), rows["t"].astype(np.int64)], axis=1)
        with cursor.cursor.copy(
            "COPY (SELECT id FROM identity_sourcerecord ORDER BY id) TO STDOUT (FORMAT binary)"
        ) as copy:
            buffer = b"".join(bytes(c) for c in copy)
        dtype = np.dtype([("n", ">i2"), ("l0", ">i4"), ("r", ">i8")])
        records = np.frombuffer(buffer, dtype=dtype, offset=19, count=(len(buffer) - 21) // dtype.itemsize)["r"]
        records = records.astype(np.int64)
        mask, _ = shared_limit_mask(links, rules)
        links = links[mask]
        keys, key_index = np.unique(links[:, 1], return_inverse=True)
        n = len(records)
        rows_ = np.searchsorted(records, links[:, 0])
        graph = coo_matrix(
            (np.ones(len(links), np.int8), (rows_, n + key_index)), shape=(n + len(keys), n + len(keys))
        ).tocsr()
        count, labels = connected_components(graph, directed=False)
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_ref_assignment (id bigint, label bigint)")
        cursor.execute("TRUNCATE bench_ref_assignment")
        with cursor.cursor.copy("COPY bench_ref_assignment (id, label) FROM STDIN") as copy:
            copy.write(b"".join(b"%d\t%d\n" % p for p in zip(records.tolist(), labels[:n].tolist(), strict=True)))
    return time.perf_counter() - started, count


def reference_groups() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(DISTINCT label) FROM bench_ref_assignment")
        return cursor.fetchone()[0]


def same_partition() -> bool:
    """Ours and the reference put exactly the same records together (no constraint bites in this data)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT a.label, count(DISTINCT s.oneid_id) n FROM bench_ref_assignment a"
            " JOIN identity_recordassignment s ON s.record_id = a.id GROUP BY a.label) x WHERE n <> 1"
        )
        split = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*) FROM (SELECT s.oneid_id, count(DISTINCT a.label) n FROM bench_ref_assignment a"
            " JOIN identity_recordassignment s ON s.record_id = a.id GROUP BY s.oneid_id) x WHERE n <> 1"
        )
        return split == 0 and cursor.fetchone()[0] == 0


def incremental(n: int, people: int, calls: int) -> list[float]:
    rules = load_rules()
    latencies = []
    for j in range(calls):
        i = n + j
        p = splitmix(i) % people if j % 2 == 0 else people + j
        source = "oa_glow" if j % 4 < 2 else "mp_lumi"
        raw = {"openid": f"oN{i:x}", "unionid": f"u{p:x}"}
        started = time.perf_counter()
        source_record_bulk_upsert(
            actor=None, items=[{"source": source, "external_id": f"N{i}", "raw": raw}], rules=rules
        )
        latencies.append(time.perf_counter() - started)
    return latencies


def _incremental_step(bench: Bench, n: int, people: int, calls: int) -> None:
    latencies = incremental(n, people, calls)
    p50, p95 = statistics.median(latencies), float(np.percentile(latencies, 95))
    bench.add_sample(
        "incremental",
        Sample(sum(latencies), len(latencies), extra={"p50_ms": p50 * 1000, "p95_ms": p95 * 1000}),
        "one new record through the service, resolved incrementally",
    )
    bench.sections["incremental_ms"] = {"p50": p50 * 1000, "p95": p95 * 1000, "max": max(latencies) * 1000}
    print(f"    incremental: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms", flush=True)


def reextract_reference() -> tuple[float, int]:
    """The floor of a re-extraction: every raw field set out by one COPY, ``extract()`` on each."""
    import orjson

    rules = load_rules()
    scopes = {
        s.id: SourceScope(s.code, s.subject_type_id, s.app_id, s.open_platform_id) for s in SourceSystem.objects.all()
    }
    started = time.perf_counter()
    identifiers = 0
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy("COPY (SELECT source_id, raw FROM identity_sourcerecord) TO STDOUT") as copy,
    ):
        for row in copy.rows():
            found, _ = extract(orjson.loads(row[1]), scopes[int(row[0])], rules)
            identifiers += len(found)
    return time.perf_counter() - started, identifiers


def family_phone() -> str:
    """A phone several records hold (a shared family phone), as the data generator spells it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT value FROM identity_identifier WHERE identifier_type_id = (SELECT id FROM"
            " identity_identifiertype WHERE code = 'phone') AND status = 'part' GROUP BY value"
            " HAVING count(*) BETWEEN 3 AND 10 ORDER BY count(*) DESC, value LIMIT 1"
        )
        row = cursor.fetchone()
    return row[0] if row else phone_of(0)


def _reapply_step(bench: Bench, n: int) -> None:
    seconds, identifiers = reextract_reference()
    bench.add_sample(
        "reextract_reference",
        Sample(seconds, n, extra={"identifiers": identifiers}),
        "COPY raw out + extract() per record (the floor)",
    )
    print(f"    reextract_reference: {seconds:.1f}s, {n / seconds:,.0f} records/s", flush=True)
    started = time.perf_counter()
    result = identity_rules_reapply()
    seconds = time.perf_counter() - started
    bench.add_sample(
        "reapply_nochange",
        Sample(seconds, n, result.changed, extra={"resolution": result.summary()["resolution"]}),
        "identity_rules_reapply(), rules unchanged: re-derive, compare, resolve_all",
    )
    print(f"    reapply_nochange: {seconds:.1f}s, changed {result.changed}", flush=True)
    phone = family_phone()
    blocked = BlockedValue.objects.create(value=phone.removeprefix("+86"), reason="bench: a shared phone")
    try:
        started = time.perf_counter()
        result = identity_rules_reapply()
        seconds = time.perf_counter() - started
    finally:
        blocked.delete()
    bench.add_sample(
        "reapply_blocked",
        Sample(seconds, n, result.changed, extra={"resolution": result.summary()["resolution"]}),
        "identity_rules_reapply() after blocking one shared phone",
    )
    print(
        f"    reapply_blocked: {seconds:.1f}s, changed {result.changed}, {result.summary()['resolution']}", flush=True
    )


def add_arguments(parser) -> None:
    group = parser.add_argument_group("oneid")
    group.add_argument("--ingest-chunk", type=int, default=10_000, help="records per service call at ingest")
    group.add_argument("--incremental", type=int, default=300, help="single-record calls for the latency step")
    group.add_argument(
        "--ingest-workers",
        type=int,
        default=2,
        help="processes of the concurrent ingest step (after the one-process ingest; 0 or 1 skips it)",
    )
    group.add_argument("--skip-reapply", action="store_true", help="skip the rules re-application steps")
    group.add_argument(
        "--incremental-only",
        action="store_true",
        help="only the latency step, on the records a previous run of the same profile loaded and resolved",
    )


def run(bench: Bench, options) -> None:
    n = bench.profile.n(1_000_000, 1000)
    people = max(1, int(n * 0.6))
    bench.params.update({"records": n, "people": people, "chunk": options.ingest_chunk})
    print(f"  {n:,} records of ≈{people:,} people, chunk {options.ingest_chunk:,}", flush=True)
    setup()
    if options.incremental_only:
        _incremental_step(bench, n + 1_000_000 * int(time.time() % 1000), people, options.incremental)
        return
    for run_no in range(1, bench.runs + 1):
        print(f"  run {run_no}/{bench.runs}", flush=True)
        truncate()
        seconds, identifiers = ingest(n, people, options.ingest_chunk)
        bench.add_sample(
            "ingest", Sample(seconds, n), "source_record_bulk_upsert(resolve=False): parse, normalize, write"
        )
        print(f"    ingest: {seconds:.1f}s, {n / seconds:,.0f} records/s, {identifiers:,} identifiers", flush=True)
        if options.ingest_workers > 1:
            sequential = seconds
            truncate()
            seconds, identifiers = ingest_concurrent(n, people, options.ingest_chunk, options.ingest_workers)
            bench.add_sample(
                "ingest_concurrent",
                Sample(seconds, n, extra={"workers": options.ingest_workers}),
                f"the same ingest from {options.ingest_workers} processes at once (as API workers)",
            )
            print(
                f"    ingest, {options.ingest_workers} processes: {seconds:.1f}s, {n / seconds:,.0f} records/s"
                f" (one process: {n / sequential:,.0f}/s)",
                flush=True,
            )
        seconds, groups = reference()
        bench.add_sample("reference", Sample(seconds, n, extra={"groups": groups}), "COPY out + scipy + COPY in")
        print(f"    reference: {seconds:.2f}s, {groups:,} components (records + values)", flush=True)
        started = time.perf_counter()
        first = resolve_all()
        seconds = time.perf_counter() - started
        bench.add_sample(
            "batch_first",
            Sample(
                seconds,
                n,
                first.moved,
                extra={"timings": first.timings, "groups": first.groups, "created": first.created},
            ),
            "resolve_all() on fresh records: components + OneID subjects with golden records",
        )
        print(f"    batch_first: {seconds:.2f}s {first.timings} groups {first.groups:,}", flush=True)
        started = time.perf_counter()
        again = resolve_all()
        seconds = time.perf_counter() - started
        bench.add_sample(
            "batch_rerun",
            Sample(seconds, n, again.moved, extra={"timings": again.timings}),
            "resolve_all() again: full recompute, nothing changed",
        )
        print(f"    batch_rerun: {seconds:.2f}s {again.timings} moved {again.moved}", flush=True)
        if run_no == 1:
            same = same_partition()
            bench.sections["same_partition_as_reference"] = same
            bench.note(f"ours and the reference partition identically: {same}; identifiers {identifiers:,}")
        _incremental_step(bench, n, people, options.incremental)
        if not options.skip_reapply:
            _reapply_step(bench, n)
    bench.compare("batch first run vs reference", "batch_first", "reference")
    bench.compare("batch re-run vs reference", "batch_rerun", "reference")
    if not options.skip_reapply:
        bench.compare("re-apply rules, unchanged, vs re-extract floor", "reapply_nochange", "reextract_reference")
