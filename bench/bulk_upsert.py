"""Bulk upsert of subjects and relationships through the service layer vs PostgreSQL COPY.

Full profile: 1,000,000 subjects (brands, a region tree, clinics, projects and
members whose attributes follow a JSON Schema) and 3,000,000 relationships
(member visited clinic, member purchased project). *Ours* is
``subject_bulk_upsert`` / ``relationship_bulk_upsert`` over the whole set in
chunks, from empty tables; the *reference* streams the same column values with
``COPY … FROM STDIN`` into tables built ``LIKE`` the product's (same indexes,
unique and check constraints; with and without the same foreign keys).

Only the writes are timed: generating the items (and the COPY tuples) happens
outside the stopwatch, so ours is measured from API-shaped items and the
reference from ready-made rows.
"""

from __future__ import annotations

import contextlib
import cProfile
import datetime as dt
import functools
import io
import itertools
import pstats
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from django.db import connection, transaction
from django.utils import timezone

from subjects.models import RelationshipType, SubjectType
from subjects.services import relationship_bulk_upsert, subject_bulk_upsert

from .harness import IDENTITY_UNCONSTRAINED, REPO_DIR, Bench, Stopwatch, bench_environ, database_url, table_write_counts

API_CHUNK = 1000
PRODUCT_TABLES = ["subjects_subject", "subjects_relationship"]
MASK = (1 << 64) - 1

SKIN_TYPES = ["dry", "oily", "combination", "normal", "sensitive"]
CHANNELS = ["walk_in", "booking", "referral"]
SURNAMES = ["Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Xu", "Sun"]
GIVEN = ["Fang", "Min", "Jing", "Li", "Wei", "Yan", "Xin", "Lei", "Hui", "Ying", "Tao", "Jun", "Mei"]

MEMBER_SCHEMA = {
    "type": "object",
    "properties": {
        "birth_date": {"type": "string", "format": "date"},
        "skin_type": {"enum": SKIN_TYPES},
        "spend": {"type": "number", "minimum": 0},
        "name": {"type": "string", "maxLength": 100},
        "phone": {"type": "string", "pattern": "^\\+[0-9]{8,15}$"},
    },
    "required": ["name"],
    "additionalProperties": False,
}
VISITED_SCHEMA = {
    "type": "object",
    "properties": {"channel": {"enum": CHANNELS}, "visits": {"type": "integer", "minimum": 1}},
    "additionalProperties": False,
}
PURCHASED_SCHEMA = {
    "type": "object",
    "properties": {"amount": {"type": "number", "minimum": 0}, "order_no": {"type": "string"}},
    "additionalProperties": False,
}
SUBJECT_TYPES = [  # created in this order, so type ids ascend with the generation order
    {"code": "brand", "name": "Brand", "category": "organization", "scope_role": "brand"},
    {"code": "region", "name": "Region", "category": "organization", "scope_role": "region"},
    {"code": "clinic", "name": "Clinic", "category": "organization"},
    {"code": "project", "name": "Project", "category": "content"},
    {"code": "member", "name": "Member", "category": "customer", "attribute_schema": MEMBER_SCHEMA},
]
RELATIONSHIP_TYPES = [
    {"code": "visited", "name": "Visited", "from": "member", "to": "clinic", "attribute_schema": VISITED_SCHEMA},
    {"code": "purchased", "name": "Purchased", "from": "member", "to": "project", "attribute_schema": PURCHASED_SCHEMA},
]

SUBJECT_COLUMNS = (
    "id",
    "subject_type_id",
    "source",
    "external_id",
    "display_name",
    "attributes",
    "business_line_id",
    "brand_id",
    "region_id",
    "parent_id",
    "created_at",
    "updated_at",
)
RELATIONSHIP_COLUMNS = (
    "relationship_type_id",
    "source",
    "external_id",
    "from_subject_id",
    "to_subject_id",
    "weight",
    "valid_from",
    "valid_to",
    "attributes",
    "subject_id",
    "from_slot",
    "to_slot",
    "created_at",
    "updated_at",
)
COMPARED_SUBJECT = SUBJECT_COLUMNS[:-2]
COMPARED_RELATIONSHIP = RELATIONSHIP_COLUMNS[:-2]


# Data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """How many of each; positions in generation order are also the canonical ids − 1."""

    subjects: int
    relationships: int
    brands: int = 5
    provinces: int = 30
    clinics: int = 5000
    projects: int = 500
    seed: int = 20260101

    @classmethod
    def for_profile(cls, profile) -> Shape:
        return cls(
            subjects=profile.n(1_000_000),
            relationships=profile.n(3_000_000),
            provinces=profile.n(30, 3),
            clinics=profile.n(5000, 2),
            projects=profile.n(500, 2),
        )

    @classmethod
    def toy(cls) -> Shape:
        return cls(subjects=60, relationships=150, brands=2, provinces=3, clinics=5, projects=3)

    @property
    def country(self) -> int:
        return self.brands

    @property
    def first_province(self) -> int:
        return self.brands + 1

    @property
    def first_clinic(self) -> int:
        return self.first_province + self.provinces

    @property
    def first_project(self) -> int:
        return self.first_clinic + self.clinics

    @property
    def first_member(self) -> int:
        return self.first_project + self.projects

    @property
    def members(self) -> int:
        return self.subjects - self.first_member

    @property
    def extra_purchases(self) -> int:
        """Members ``0 … extra-1`` get a second purchase, so the total is exact."""
        extra = self.relationships - 3 * self.members
        if not 0 <= extra <= self.members:
            raise ValueError(f"{self.relationships} relationships do not fit 3–4 per member of {self.members}")
        return extra

    def as_dict(self) -> dict:
        return {**self.__dict__, "members": self.members}


def _mix(value: int, salt: int) -> int:
    """SplitMix64: a cheap deterministic hash, so any position regenerates alone."""
    x = (value * 0x9E3779B97F4A7C15 + salt) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


@functools.lru_cache(maxsize=65536)
def _moment(day: int, hour: int) -> str:
    return (dt.datetime(2022, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=day, hours=hour)).isoformat()


def subject_item(shape: Shape, pos: int, ids: Sequence[int]) -> dict:
    """The API-shaped item at ``pos``; references use ``ids[position]``."""
    if pos >= shape.first_member:
        j = pos - shape.first_member
        h = _mix(j, shape.seed)
        name = f"{SURNAMES[h % 12]} {GIVEN[(h >> 4) % 13]}"
        return {
            "type": "member",
            "source": "crm",
            "external_id": f"M{j:09d}",
            "display_name": name,
            "attributes": {
                "birth_date": f"{1950 + (h >> 8) % 55}-{1 + (h >> 16) % 12:02d}-{1 + (h >> 20) % 28:02d}",
                "skin_type": SKIN_TYPES[(h >> 25) % 5],
                "spend": ((h >> 28) % 5_000_000) / 100,
                "name": name,
                "phone": f"+86138{(h >> 40) % 100_000_000:08d}",
            },
            "brand": ids[(h >> 50) % shape.brands],
            "region": ids[shape.first_province + (h >> 54) % shape.provinces],
        }
    if pos >= shape.first_project:
        k = pos - shape.first_project
        return {
            "type": "project",
            "source": "hq",
            "external_id": f"P{k:05d}",
            "display_name": f"Project {k}",
            "brand": ids[k % shape.brands],
        }
    if pos >= shape.first_clinic:
        k = pos - shape.first_clinic
        return {
            "type": "clinic",
            "source": "hq",
            "external_id": f"C{k:06d}",
            "display_name": f"Clinic {k}",
            "brand": ids[k % shape.brands],
            "region": ids[shape.first_province + k % shape.provinces],
        }
    if pos >= shape.first_province:
        k = pos - shape.first_province
        return {
            "type": "region",
            "source": "hq",
            "external_id": f"R{k:03d}",
            "display_name": f"Province {k}",
            "parent": ids[shape.country],
        }
    if pos == shape.country:
        return {"type": "region", "source": "hq", "external_id": "CN", "display_name": "China"}
    return {"type": "brand", "source": "hq", "external_id": f"B{pos:02d}", "display_name": f"Brand {pos}"}


def relationship_items(shape: Shape, ids: Sequence[int]) -> Iterator[dict]:
    """Per member: visited two clinics, purchased one project (two for the first few)."""
    extra = shape.extra_purchases
    for j in range(shape.members):
        member = ids[shape.first_member + j]
        h = _mix(j, shape.seed ^ 0x5EED)
        c1 = h % shape.clinics
        c2 = (c1 + 1 + (h >> 16) % (shape.clinics - 1)) % shape.clinics
        for k, clinic in enumerate((c1, c2)):
            visits = 1 + (h >> (24 + 4 * k)) % 12
            yield {
                "type": "visited",
                "source": "crm",
                "external_id": f"V{j:09d}-{k}",
                "from": member,
                "to": ids[shape.first_clinic + clinic],
                "weight": float(visits),
                "valid_from": _moment((h >> (32 + 4 * k)) % 1000, (h >> 44) % 24),
                "attributes": {"channel": CHANNELS[(h >> (48 + k)) % 3], "visits": visits},
            }
        for k in range(2 if j < extra else 1):
            amount = ((h >> (20 + 4 * k)) % 2_000_000) / 100
            yield {
                "type": "purchased",
                "source": "crm",
                "external_id": f"O{j:09d}-{k}",
                "from": member,
                "to": ids[shape.first_project + (h >> (50 + 6 * k)) % shape.projects],
                "weight": amount,
                "valid_from": _moment((h >> (36 + 4 * k)) % 1000, (h >> 58) % 24),
                "attributes": {"amount": amount, "order_no": f"SO{j:09d}{k}"},
            }


def subject_batches(shape: Shape, chunk: int) -> Iterator[tuple[int, int]]:
    """Position ranges: the scopes first (a child needs its parent's id), then chunks."""
    yield 0, shape.first_province
    yield shape.first_province, shape.first_clinic
    for start in range(shape.first_clinic, shape.subjects, chunk):
        yield start, min(start + chunk, shape.subjects)


def chunks(iterable, size: int) -> Iterator[list]:
    iterator = iter(iterable)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


# Set-up ----------------------------------------------------------------------------------


@dataclass
class Types:
    subject: dict[str, int]
    relationship: dict[str, int]


def ensure_types() -> Types:
    """Create the bench's subject and relationship types through the services (once)."""
    from subjects.services import relationship_type_save, subject_type_save

    subject = {}
    for spec in SUBJECT_TYPES:
        found = SubjectType.objects.filter(code=spec["code"]).first()
        if found is None or found.attribute_schema != spec.get("attribute_schema", {}):
            found = subject_type_save(actor=None, data=spec, instance=found)
        subject[found.code] = found.id
    relationship = {}
    for spec in RELATIONSHIP_TYPES:
        found = RelationshipType.objects.filter(code=spec["code"]).first()
        data = {
            **{k: v for k, v in spec.items() if k not in ("from", "to")},
            "from_type": SubjectType.objects.get(code=spec["from"]),
            "to_type": SubjectType.objects.get(code=spec["to"]),
            "cardinality": "n:m",
        }
        if found is None or found.attribute_schema != spec["attribute_schema"]:
            found = relationship_type_save(actor=None, data=data, instance=found)
        relationship[found.code] = found.id
    return Types(subject, relationship)


def truncate_product() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"TRUNCATE subjects_relationship, subjects_subject, audit_domainevent, {IDENTITY_UNCONSTRAINED}"
            " RESTART IDENTITY CASCADE"
        )


@dataclass(frozen=True)
class RefTables:
    subject: str
    relationship: str
    with_fks: bool


REF_FK = RefTables("bench_ref_subject", "bench_ref_relationship", True)
REF_NOFK = RefTables("bench_ref_nofk_subject", "bench_ref_nofk_relationship", False)


def create_reference_tables(tables: RefTables) -> None:
    """Tables ``LIKE`` the product's, including all indexes and constraints, and its FKs if asked."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {tables.relationship}, {tables.subject}")
        cursor.execute(f"CREATE TABLE {tables.subject} (LIKE subjects_subject INCLUDING ALL)")
        cursor.execute(f"CREATE TABLE {tables.relationship} (LIKE subjects_relationship INCLUDING ALL)")
        if not tables.with_fks:
            return
        for source, target in (("subjects_subject", tables.subject), ("subjects_relationship", tables.relationship)):
            cursor.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid = %s::regclass AND contype = 'f' ORDER BY conname",
                [source],
            )
            for name, definition in cursor.fetchall():
                definition = definition.replace("REFERENCES subjects_subject(", f"REFERENCES {tables.subject}(")
                cursor.execute(f"ALTER TABLE {target} ADD CONSTRAINT {('ref_' + name)[:63]} {definition}")


def truncate_reference(tables: RefTables) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {tables.relationship}, {tables.subject} RESTART IDENTITY")


# Ours ------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    subject_seconds: float = 0.0
    relationship_seconds: float = 0.0
    subjects: int = 0
    relationships: int = 0
    rows_written: int = 0  # created + updated, from the BulkResult counts
    counts: dict = field(default_factory=lambda: {"created": 0, "updated": 0, "unchanged": 0})
    ids: array | None = None

    @property
    def seconds(self) -> float:
        return self.subject_seconds + self.relationship_seconds

    def add(self, result) -> None:
        for status, n in result.counts.items():
            self.counts[status] += n
        self.rows_written += result.counts["created"] + result.counts["updated"]


def load_ours(shape: Shape, chunk: int, *, truncate: bool = True, observe=None) -> LoadResult:
    """Every subject, then every relationship, through the services in ``chunk``-item batches.

    ``observe`` (optional) wraps each service call, for the time breakdown.
    """
    if truncate:
        truncate_product()
    call = observe or (lambda fn, **kw: fn(**kw))
    out = LoadResult(ids=array("q", bytes(8 * shape.subjects)))
    ids = out.ids
    subjects_watch, relationships_watch = Stopwatch(), Stopwatch()
    for start, stop in subject_batches(shape, chunk):
        items = [subject_item(shape, pos, ids) for pos in range(start, stop)]
        with subjects_watch:
            result = call(subject_bulk_upsert, actor=None, items=items)
        for r in result.results:
            ids[start + r.index] = r.id
        out.add(result)
        out.subjects += len(items)
    for items in chunks(relationship_items(shape, ids), chunk):
        with relationships_watch:
            result = call(relationship_bulk_upsert, actor=None, items=items)
        out.add(result)
        out.relationships += len(items)
    out.subject_seconds, out.relationship_seconds = subjects_watch.seconds, relationships_watch.seconds
    return out


def ids_are_canonical(ids: array) -> bool:
    """Whether ours gave position p the id p + 1, the ids the reference COPYs explicitly."""
    return all(value == pos + 1 for pos, value in enumerate(ids))


# Reference -------------------------------------------------------------------------------


def subject_row(item: dict, types: Types, pos: int, now: str) -> tuple:
    return (
        pos + 1,
        types.subject[item["type"]],
        item["source"],
        item["external_id"],
        item.get("display_name", ""),
        orjson.dumps(item.get("attributes", {})).decode(),
        item.get("business_line"),
        item.get("brand"),
        item.get("region"),
        item.get("parent"),
        now,
        now,
    )


def relationship_row(item: dict, types: Types, now: str) -> tuple:
    return (
        types.relationship[item["type"]],
        item["source"],
        item["external_id"],
        item["from"],
        item["to"],
        item["weight"],
        item["valid_from"],
        None,
        orjson.dumps(item["attributes"]).decode(),
        None,
        None,
        None,
        now,
        now,
    )


def load_reference(shape: Shape, types: Types, tables: RefTables, block: int = 10_000) -> LoadResult:
    """One ``COPY … FROM STDIN`` per table, in its own transaction (FK checks at commit are timed)."""
    truncate_reference(tables)
    canonical = range(1, shape.subjects + 1)
    now = timezone.now().isoformat()
    out = LoadResult()

    def subject_blocks():
        for start in range(0, shape.subjects, block):
            stop = min(start + block, shape.subjects)
            yield [subject_row(subject_item(shape, p, canonical), types, p, now) for p in range(start, stop)]

    def relationship_blocks():
        for items in chunks(relationship_items(shape, canonical), block):
            yield [relationship_row(item, types, now) for item in items]

    out.subject_seconds, out.subjects = _copy(tables.subject, SUBJECT_COLUMNS, subject_blocks())
    out.relationship_seconds, out.relationships = _copy(
        tables.relationship, RELATIONSHIP_COLUMNS, relationship_blocks()
    )
    out.rows_written = out.subjects + out.relationships
    return out


def _copy(table: str, columns: Sequence[str], blocks: Iterator[list[tuple]]) -> tuple[float, int]:
    """Seconds spent in COPY and commit (block generation excluded) and rows copied."""
    generation = Stopwatch()
    rows = 0
    start = time.perf_counter()
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with transaction.atomic(), connection.connection.cursor() as cursor, cursor.copy(statement) as copy:
        while True:
            with generation:
                batch = next(blocks, None)
            if batch is None:
                break
            for row in batch:
                copy.write_row(row)
            rows += len(batch)
    return time.perf_counter() - start - generation.seconds, rows


def differing_rows(tables: RefTables) -> dict[str, int]:
    """Rows in the product's tables and not in the reference's, or the other way round (ids included)."""
    out = {}
    for label, product, reference, columns in (
        ("subjects", "subjects_subject", tables.subject, COMPARED_SUBJECT),
        ("relationships", "subjects_relationship", tables.relationship, COMPARED_RELATIONSHIP),
    ):
        cols = ", ".join(columns)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT (SELECT count(*) FROM (SELECT {cols} FROM {product} EXCEPT ALL SELECT {cols} FROM {reference}) a)"
                f" + (SELECT count(*) FROM (SELECT {cols} FROM {reference} EXCEPT ALL SELECT {cols} FROM {product}) b)"
            )
            out[label] = cursor.fetchone()[0]
    return out


def table_count(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        return cursor.fetchone()[0]


# HTTP ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api_token() -> str:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user, created = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_superuser": True, "is_staff": True}
    )
    if created:
        user.set_unusable_password()
        user.save()
    return Token.objects.get_or_create(user=user)[0].key


@contextlib.contextmanager
def dev_server(log_path: Path) -> Iterator[str]:
    """``manage.py runserver --noreload`` on a free port against the bench database."""
    port = _free_port()
    env = {**__import__("os").environ, **bench_environ(database_url())}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", "--skip-checks", f"127.0.0.1:{port}"],
            cwd=REPO_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(base + "/api/v1/", timeout=5).read()
                    break
                except urllib.error.HTTPError:
                    break  # any HTTP answer means it is serving
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"runserver did not start; see {log_path}") from None
                    time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def post_json(url: str, token: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Token {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        try:
            return exc.code, orjson.loads(payload)
        except orjson.JSONDecodeError:
            return exc.code, {"raw": payload[:300].decode(errors="replace")}


def load_http(shape: Shape, n_items: int, log_path: Path) -> tuple[LoadResult | None, str]:
    """POST members in 1,000-item requests to /api/v1/subjects/bulk/; (result, message)."""
    truncate_product()
    token = api_token()
    ids = array("q", bytes(8 * shape.subjects))
    for start, stop in itertools.islice(subject_batches(shape, API_CHUNK), 2):  # the scopes, untimed
        result = subject_bulk_upsert(actor=None, items=[subject_item(shape, p, ids) for p in range(start, stop)])
        for r in result.results:
            ids[start + r.index] = r.id
    out = LoadResult()
    watch = Stopwatch()
    stop = min(shape.first_member + n_items, shape.subjects)
    with dev_server(log_path) as base:
        url = base + "/api/v1/subjects/bulk/"
        for start in range(shape.first_member, stop, API_CHUNK):
            items = [subject_item(shape, p, ids) for p in range(start, min(start + API_CHUNK, stop))]
            body = orjson.dumps({"items": items})
            with watch:
                status, payload = post_json(url, token, body)
            if status == 404:
                return None, f"POST {url} answered 404: the bulk endpoint is not there yet; HTTP step skipped"
            if status != 200:
                return None, f"POST {url} answered {status}: {str(payload)[:300]}"
            for status_name in ("created", "updated", "unchanged"):
                out.counts[status_name] += payload[status_name]
            out.rows_written += payload["created"] + payload["updated"]
            out.subjects += len(items)
    out.subject_seconds = watch.seconds
    return out, "ok"


# Time breakdown --------------------------------------------------------------------------


def _sql_kind(sql: str) -> str:
    head = sql[:120]
    if "SELECT nextval(" in head:
        return "sql: all-new check + id reservation (savepoint)"
    if head.startswith(("SAVEPOINT tw_guarded_upsert; WITH batch", "ROLLBACK TO SAVEPOINT tw_guarded_upsert")):
        return "sql: guarded upsert (compare and write, savepoint)"
    if head.startswith(("RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")):
        return "sql: savepoint release"
    if head.startswith(("CREATE TEMP TABLE", "TRUNCATE tw_stage")):
        return "sql: staging table create/clear"
    if head.startswith("INSERT INTO subjects_subject"):
        return "sql: upsert subjects (INSERT … ON CONFLICT)"
    if head.startswith("INSERT INTO subjects_relationship"):
        return "sql: upsert relationships (INSERT … ON CONFLICT)"
    if head.startswith("SELECT x.id"):
        return "sql: ids of unchanged rows"
    if "audit_domainevent" in head:
        return "sql: domain event insert"
    if head.startswith("SELECT r.t, r.s, x.id"):
        return "sql: cardinality slot check"
    if head.startswith("SELECT r.t, r.s, r.e"):
        return "sql: references by key"
    if head.startswith("SELECT") and "IS DISTINCT FROM" in sql:
        return "sql: compare with stored rows (read before write)"
    if head.startswith("SELECT s.id, s.subject_type_id") or 'FROM "subjects_subject" ' in sql:
        return "sql: references by id (subjects_by_id)"
    if "subjecttype" in head or "relationshiptype" in head:
        return "sql: type lookups"
    return "sql: other"


class Breakdown:
    """One service's time: total, SQL per kind and commit; Python is the rest."""

    def __init__(self) -> None:
        self.total = 0.0
        self.parts: dict[str, float] = {}
        self.calls = 0
        self.statements = 0

    def add(self, kind: str, seconds: float) -> None:
        self.parts[kind] = self.parts.get(kind, 0.0) + seconds

    def as_dict(self) -> dict:
        measured = sum(self.parts.values())
        parts = {**self.parts, "python (validation, JSON, results, ORM)": self.total - measured}
        return {
            "total_s": self.total,
            "service_calls": self.calls,
            "statements": self.statements,
            "parts": {
                k: {"seconds": v, "share": v / self.total if self.total else 0}
                for k, v in sorted(parts.items(), key=lambda kv: -kv[1])
            },
        }


class Recorder:
    """Routes statement and commit timings to the service call that is running."""

    def __init__(self) -> None:
        self.subjects, self.relationships = Breakdown(), Breakdown()
        self.current = self.subjects

    def observe(self, fn, **kwargs):
        self.current = self.subjects if fn is subject_bulk_upsert else self.relationships
        start = time.perf_counter()
        try:
            return fn(**kwargs)
        finally:
            self.current.calls += 1
            self.current.total += time.perf_counter() - start

    def _execute(self, execute, sql, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.current.statements += 1
            self.current.add(_sql_kind(sql), time.perf_counter() - start)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Recorder]:
        original = connection._commit

        def timed_commit():
            start = time.perf_counter()
            try:
                return original()
            finally:
                self.current.add("commit (incl. deferred FK checks)", time.perf_counter() - start)

        connection._commit = timed_commit
        try:
            with connection.execute_wrapper(self._execute):
                yield self
        finally:
            del connection._commit


def breakdown_run(shape: Shape, chunk: int) -> dict:
    """One instrumented load from empty and one no-change re-run, at ``chunk``."""
    out = {}
    for label, truncate in (("load", True), ("no_change", False)):
        recorder = Recorder()
        with recorder.installed():
            load_ours(shape, chunk, truncate=truncate, observe=recorder.observe)
        out[label] = {"subjects": recorder.subjects.as_dict(), "relationships": recorder.relationships.as_dict()}
    return out


def cprofile_run(shape: Shape, chunk: int) -> tuple[list[dict], str]:
    """cProfile of one load from empty: the product functions that take the most time, and the report."""
    truncate_product()
    profiler = cProfile.Profile()
    profiler.enable()
    load_ours(shape, chunk, truncate=False)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(60)
    stats.sort_stats("tottime").print_stats(40)
    rows = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():
        if any(part in filename for part in ("/subjects/", "/audit/", "/common/", "fastjsonschema", "orjson")):
            rows.append(
                {
                    "function": f"{Path(filename).parent.name}/{Path(filename).name}:{line}:{func}",
                    "calls": ncalls,
                    "tottime_s": round(tottime, 3),
                    "cumtime_s": round(cumtime, 3),
                }
            )
    rows.sort(key=lambda r: -r["cumtime_s"])
    return rows[:30], text.getvalue()


# The benchmark ---------------------------------------------------------------------------


def add_arguments(parser) -> None:
    group = parser.add_argument_group("bulk_upsert")
    group.add_argument("--chunk", type=int, default=20_000, help="the larger chunk size (the API's is 1,000)")
    group.add_argument("--http-items", type=int, default=50_000, help="subjects sent through the HTTP endpoint")
    group.add_argument("--skip-http", action="store_true")
    group.add_argument("--skip-chunk-1000", action="store_true", help="only the larger chunk")
    group.add_argument("--breakdown", action="store_true", help="also time SQL/commit/Python and cProfile one run")
    group.add_argument("--breakdown-only", action="store_true", help="only the breakdown (no timed runs, no HTTP)")


def _record(bench: Bench, prefix: str, result: LoadResult, description: str, rows_check: int | None = None) -> None:
    extra = {"counts": dict(result.counts)}
    if rows_check is not None:
        extra["pg_stat_rows_written"] = rows_check
    for suffix, seconds, items in (
        ("subjects", result.subject_seconds, result.subjects),
        ("relationships", result.relationship_seconds, result.relationships),
        ("total", result.seconds, result.subjects + result.relationships),
    ):
        if items:
            with bench.sample(f"{prefix}_{suffix}", description) as sample:
                sample.seconds, sample.items = seconds, items
                sample.rows_written = result.rows_written if suffix == "total" else None
                sample.extra.update(extra if suffix == "total" else {})


def run(bench: Bench, options) -> None:
    shape = Shape.for_profile(bench.profile)
    big = options.chunk
    bench.params.update({"shape": shape.as_dict(), "chunks": [API_CHUNK, big], "http_items": options.http_items})
    print(f"  shape: {shape.subjects:,} subjects ({shape.members:,} members), {shape.relationships:,} relationships")
    types = ensure_types()
    if options.breakdown_only:
        _run_breakdown(bench, shape, big)
        return
    for tables in (REF_FK, REF_NOFK):
        create_reference_tables(tables)
    chunk_sizes = [big] if options.skip_chunk_1000 else [API_CHUNK, big]
    for run_no in range(1, bench.runs + 1):
        print(f"  run {run_no}/{bench.runs}", flush=True)
        for tables, prefix, what in ((REF_FK, "copy_fk", "with FKs"), (REF_NOFK, "copy_nofk", "without FKs")):
            result = load_reference(shape, types, tables)
            _record(bench, prefix, result, f"reference: COPY FROM STDIN into LIKE tables, {what}")
            print(f"    {prefix}: {result.seconds:.2f}s", flush=True)
        for chunk in chunk_sizes:
            before = table_write_counts(PRODUCT_TABLES)
            result = load_ours(shape, chunk)
            written = table_write_counts(PRODUCT_TABLES) - before
            _record(bench, f"ours_c{chunk}", result, f"ours: bulk upsert services, {chunk:,} items a call", written)
            print(f"    ours_c{chunk}: {result.seconds:.2f}s", flush=True)
        if run_no == 1:
            canonical = ids_are_canonical(result.ids)
            diff = differing_rows(REF_FK)
            bench.sections["same_rows"] = {"ids_canonical": canonical, "differing_rows": diff}
            if not canonical or any(diff.values()):
                bench.note(f"ours and the reference differ: ids canonical={canonical}, differing rows={diff}")
            else:
                bench.note("ours and the COPY reference hold identical rows (ids and all columns but timestamps)")
        before = table_write_counts(PRODUCT_TABLES)
        result = load_ours(shape, big, truncate=False)
        written = table_write_counts(PRODUCT_TABLES) - before
        _record(bench, f"ours_c{big}_nochange", result, "ours: the same upsert again, nothing changed", written)
        print(f"    ours_c{big}_nochange: {result.seconds:.2f}s, rows written {result.rows_written}", flush=True)
    for chunk in chunk_sizes:
        for part in ("subjects", "relationships", "total"):
            bench.compare(f"c{chunk} {part} vs COPY+FK", f"ours_c{chunk}_{part}", f"copy_fk_{part}")
        bench.compare(f"c{chunk} total vs COPY no FK", f"ours_c{chunk}_total", "copy_nofk_total")
    bench.compare(f"c{big} no-change vs COPY+FK", f"ours_c{big}_nochange_total", "copy_fk_total")
    if not options.skip_http:
        _run_http(bench, shape, options)
    if options.breakdown:
        _run_breakdown(bench, shape, big)


def _run_http(bench: Bench, shape: Shape, options) -> None:
    log = Path(tempfile.gettempdir()) / "tagweave-bench-runserver.log"
    try:
        result, message = load_http(shape, options.http_items, log)
    except Exception as exc:  # the step is optional; say why it did not run
        result, message = None, f"HTTP step failed: {exc!r}"
    if result is None:
        bench.note(message)
        bench.sections["http"] = {"skipped": message}
        return
    with bench.sample(
        "http_c1000_subjects", "ours over HTTP: POST /api/v1/subjects/bulk/, 1,000 members a request"
    ) as s:
        s.seconds, s.items, s.rows_written = result.subject_seconds, result.subjects, result.rows_written
        s.extra["counts"] = dict(result.counts)
    bench.compare("HTTP c1000 vs service c1000 (per item)", "http_c1000_subjects", "ours_c1000_subjects")
    bench.compare("HTTP c1000 vs COPY+FK (per item)", "http_c1000_subjects", "copy_fk_subjects")


def _run_breakdown(bench: Bench, shape: Shape, big: int) -> None:
    print("  breakdown: instrumented runs and cProfile", flush=True)
    section = {}
    for chunk in (API_CHUNK, big):
        section[f"c{chunk}"] = breakdown_run(shape, chunk)
    section["cprofile_c1000_top"], section["cprofile_c1000_report"] = cprofile_run(shape, API_CHUNK)
    bench.sections["breakdown"] = section
    print(format_breakdown(section))


def format_breakdown(section: dict) -> str:
    lines = []
    for chunk_label, runs in section.items():
        if not chunk_label.startswith("c") or not isinstance(runs, dict) or "load" not in runs:
            continue
        for label, parts in runs.items():
            for entity, data in parts.items():
                lines.append(
                    f"  {chunk_label} {label} {entity}: {data['total_s']:.2f}s in {data['service_calls']} calls,"
                    f" {data['statements']} statements"
                )
                for kind, value in data["parts"].items():
                    lines.append(f"      {value['share'] * 100:5.1f}%  {value['seconds']:7.2f}s  {kind}")
    lines.append("  cProfile (chunk 1,000; cumulative, product code):")
    for row in section.get("cprofile_c1000_top", [])[:20]:
        lines.append(
            f"      {row['cumtime_s']:7.2f}s cum {row['tottime_s']:7.2f}s own {row['calls']:>9}  {row['function']}"
        )
    return "\n".join(lines)
