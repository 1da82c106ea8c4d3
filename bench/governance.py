"""Scoped reads at scale: a regional manager's subject list and subject detail through the API.

Data (generate_series, untimed): ``members`` members (full 1,000,000; ci 100,000) spread over 10
brands × 10 provinces of one country, so a regional manager granted one province sees a tenth
of them (full: 100,000); five tags with values on the manager's members. Requests go through the
whole HTTP path in process (Django's test client: middleware, token authentication, DRF
permissions, the scope filter, throttling, serialization), ``--requests`` of each per run:

- ``list``: the first page of ``/api/v1/subjects/`` (100 rows, cursor pagination);
- ``list page 2``: the page after it (the cursor's ``id >`` condition);
- ``detail``: ``/api/v1/subjects/<id>/`` of random visible members, with their tags.

The reference is each page as one hand-written SQL statement (the same rows, the scope as a
recursive region subtree), timed in the same runs: the ratio is what the ORM, DRF and HTTP
layers add. Query counts are taken at 10,000 subjects and again at full size (they must be
equal), and EXPLAIN of the list statement shows which indexes the scope filter uses. The
throttle's user rate is lifted for the run (a benchmark is one user firing thousands of calls).
"""

from __future__ import annotations

import os
import random
import re
import statistics
import time

from .harness import Bench, Sample

FULL_MEMBERS = 1_000_000
SMALL = 10_000
BRANDS = 10
PROVINCES = 10
TAGS = 5
SOURCE = "govbench"


def add_arguments(parser) -> None:
    parser.add_argument("--requests", type=int, default=200, help="requests per kind per run (default 200)")


def scope_world() -> dict:
    """Types, one business line, brands and a country with provinces (get-or-create: re-runs reuse them)."""
    from subjects.models import Subject, SubjectType

    def stype(code, role="", category="organization"):
        return SubjectType.objects.get_or_create(
            code=code, defaults={"name": code, "category": category, "scope_role": role}
        )[0]

    brand_t, region_t, line_t = (
        stype("brand", "brand"),
        stype("region", "region"),
        stype("business_line", "business_line"),
    )
    member_t = stype("gov_member", category="customer")

    def scope(t, ext, parent=None):
        return Subject.objects.get_or_create(
            subject_type=t, source=SOURCE, external_id=ext, defaults={"display_name": ext, "parent": parent}
        )[0]

    line = scope(line_t, "LINE")
    country = scope(region_t, "CN")
    return {
        "member_type": member_t,
        "line": line,
        "brands": [scope(brand_t, f"B{i}") for i in range(BRANDS)],
        "country": country,
        "provinces": [scope(region_t, f"P{i}", country) for i in range(PROVINCES)],
    }


def grow(world: dict, members: int) -> int:
    """Members up to ``members`` (one INSERT … SELECT FROM generate_series), then ANALYZE."""
    from django.db import connection

    from subjects.models import Subject

    have = Subject.objects.filter(subject_type=world["member_type"]).count()
    if have < members:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO subjects_subject (subject_type_id, display_name, attributes, business_line_id,"
                " brand_id, region_id, source, external_id, created_at, updated_at)"
                " SELECT %s, 'Member ' || g, jsonb_build_object('spend', g %% 1000), %s,"
                " (%s::bigint[])[1 + g %% %s], (%s::bigint[])[1 + (g / %s) %% %s], %s, 'M' || g, now(), now()"
                " FROM generate_series(%s, %s) g",
                [
                    world["member_type"].pk,
                    world["line"].pk,
                    [b.pk for b in world["brands"]],
                    BRANDS,
                    [p.pk for p in world["provinces"]],
                    BRANDS,
                    PROVINCES,
                    SOURCE,
                    have,
                    members - 1,
                ],
            )
            cursor.execute("ANALYZE subjects_subject")
    return members


def tags_for(world: dict, manager_region: int) -> list[int]:
    """Five tags, valued for the manager's members (one INSERT … SELECT per tag, missing ones only)."""
    from django.db import connection

    from tags.models import TagDefinition, TagGroup

    group, _ = TagGroup.objects.get_or_create(
        subject_type=world["member_type"], code="gov_bench", defaults={"name": "Governance bench"}
    )
    ids = []
    for n in range(TAGS):
        tag, _ = TagDefinition.objects.get_or_create(
            subject_type=world["member_type"],
            code=f"gov_bench_{n}",
            defaults={"group": group, "name": f"Bench {n}", "value_type": "number", "status": "active"},
        )
        ids.append(tag.pk)
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO tags_tagvalue (subject_id, tag_id, value, source, updated_at)"
                " SELECT s.id, %s, to_jsonb(s.id %% 97), 'imported', now() FROM subjects_subject s"
                " WHERE s.subject_type_id = %s AND s.region_id = %s ON CONFLICT DO NOTHING",
                [tag.pk, world["member_type"].pk, manager_region],
            )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tags_tagvalue")
    return ids


def manager(world: dict):
    """A regional manager (the role's group) granted the first province."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from subjects.models import ScopeGrant
    from subjects.roles import role_group

    user, _ = get_user_model().objects.get_or_create(username="gov_bench_manager", defaults={"is_staff": True})
    user.groups.add(role_group("regional_manager"))
    ScopeGrant.objects.get_or_create(user=user, region=world["provinces"][0])
    token, _ = Token.objects.get_or_create(user=user)
    return user, token


def request_queries(client, url: str) -> tuple[int, list[str]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
        assert response.status_code == 200, response.content[:300]
    return len(ctx.captured_queries), [q["sql"] for q in ctx.captured_queries]


def timed(fn, count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values)


LIST_SQL = (
    "WITH RECURSIVE tree(id) AS (SELECT CAST(%s AS BIGINT) UNION"
    " SELECT s.id FROM subjects_subject s JOIN tree t ON s.parent_id = t.id)"
    " SELECT s.id, t.code, s.display_name, s.attributes, s.business_line_id, s.brand_id, s.region_id,"
    " s.parent_id, s.source, s.external_id, s.created_at, s.updated_at"
    " FROM subjects_subject s JOIN subjects_subjecttype t ON t.id = s.subject_type_id"
    " WHERE (s.region_id IN (SELECT id FROM tree) OR s.id IN (SELECT id FROM tree)) AND s.id > %s"
    " ORDER BY s.id LIMIT 101"
)
DETAIL_SQL = (
    "WITH RECURSIVE tree(id) AS (SELECT CAST(%s AS BIGINT) UNION"
    " SELECT s.id FROM subjects_subject s JOIN tree t ON s.parent_id = t.id)"
    " SELECT s.id, t.code, s.display_name, s.attributes, s.brand_id, s.region_id, s.source, s.external_id,"
    " (SELECT jsonb_agg(jsonb_build_object('tag', d.code, 'value', v.value, 'group', g.code))"
    "  FROM tags_tagvalue v JOIN tags_tagdefinition d ON d.id = v.tag_id JOIN tags_taggroup g ON g.id = d.group_id"
    "  WHERE v.subject_id = s.id)"
    " FROM subjects_subject s JOIN subjects_subjecttype t ON t.id = s.subject_type_id"
    " WHERE s.id = %s AND (s.region_id IN (SELECT id FROM tree) OR s.id IN (SELECT id FROM tree))"
)


def run(bench: Bench, options) -> None:
    from django.conf import settings
    from django.core.cache import cache
    from django.db import connection
    from django.test.utils import override_settings
    from rest_framework.test import APIClient

    members = bench.profile.n(FULL_MEMBERS, minimum=SMALL)
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "user": "100000000/min"}
    overridden = override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates})
    overridden.enable()
    cache.clear()
    world = scope_world()
    province = world["provinces"][0].pk
    _user, token = manager(world)
    client = APIClient(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Token {token.key}")
    bench.params.update(members=members, brands=BRANDS, provinces=PROVINCES, tags=TAGS, requests=options.requests)

    # Query counts at 10,000 subjects, then at full size: they must not change.
    started = time.perf_counter()
    grow(world, SMALL)
    tags_for(world, province)
    counts_small = query_counts(client, world, province)
    grow(world, members)
    tags_for(world, province)
    print(f"  data: {members:,} members in {time.perf_counter() - started:.0f}s", flush=True)
    counts_full = query_counts(client, world, province)
    visible = count_visible(world, province)
    bench.note(f"the manager sees {visible:,} of {members:,} members")
    for kind in counts_small:
        bench.note(
            f"queries per {kind}: {counts_small[kind]} at {SMALL:,} subjects, {counts_full[kind]} at {members:,}"
        )
    bench.sections["query_counts"] = {
        "small": counts_small,
        "full": counts_full,
        "constant": counts_small == counts_full,
    }
    explain(bench, client)

    ids = visible_members_with_tags(world, province)
    first = client.get("/api/v1/subjects/").json()
    page2_url = first["next"].replace("http://localhost", "")
    after = first["results"][-1]["id"]
    rng = random.Random(6)
    with connection.cursor() as cursor:
        reference = {
            "list": lambda: _sql(cursor, LIST_SQL, [province, 0]),
            "list page 2": lambda: _sql(cursor, LIST_SQL, [province, after]),
            "detail": lambda: _sql(cursor, DETAIL_SQL, [province, rng.choice(ids)]),
        }
        ours = {
            "list": lambda: _get(client, "/api/v1/subjects/"),
            "list page 2": lambda: _get(client, page2_url),
            "detail": lambda: _get(client, f"/api/v1/subjects/{rng.choice(ids)}/"),
        }
        for fn in (*ours.values(), *reference.values()):
            timed(fn, 10)  # warm plans and caches
        latencies: dict[str, list[float]] = {}
        for run_index in range(bench.runs):
            for kind in ours:
                pair = (("api", ours[kind]), ("sql", reference[kind]))
                for side, fn in pair if run_index % 2 == 0 else pair[::-1]:
                    values = timed(fn, options.requests)
                    latencies.setdefault(f"{kind} {side}", []).extend(values)
                    bench.add_sample(
                        f"{kind} {side}",
                        Sample(seconds=statistics.median(values), items=1, extra={"p95_s": p95(values)}),
                        f"{kind}: median seconds per request ({'API' if side == 'api' else 'one SQL statement'})",
                    )
    for kind in ours:
        bench.compare(f"{kind}: API / SQL", f"{kind} api", f"{kind} sql")
        api_p95, sql_p95 = p95(latencies[f"{kind} api"]), p95(latencies[f"{kind} sql"])
        verdict = "ok" if api_p95 <= 0.100 else "OVER the 100 ms target"
        bench.note(
            f"{kind}: p95 {api_p95 * 1000:.1f} ms through the API ({verdict}), {sql_p95 * 1000:.2f} ms as one SQL"
            f" statement; p95 ratio {api_p95 / sql_p95:.1f}×"
        )
    bench.sections["p95_ms"] = {k: p95(v) * 1000 for k, v in latencies.items()}
    bench.note(f"load average at the end: {os.getloadavg()}")
    overridden.disable()


def _get(client, url: str) -> None:
    response = client.get(url)
    if response.status_code != 200:
        raise AssertionError(f"{url}: {response.status_code} {response.content[:200]!r}")


def _sql(cursor, sql: str, params: list) -> None:
    cursor.execute(sql, params)
    cursor.fetchall()


def query_counts(client, world: dict, province: int) -> dict[str, int]:
    detail_id = visible_members_with_tags(world, province)[0]
    return {
        "list page": request_queries(client, "/api/v1/subjects/")[0],
        "detail with tags": request_queries(client, f"/api/v1/subjects/{detail_id}/")[0],
    }


def count_visible(world: dict, province: int) -> int:
    from django.contrib.auth import get_user_model

    from subjects.access import visible_subjects
    from subjects.models import Subject

    user = get_user_model().objects.get(username="gov_bench_manager")
    return visible_subjects(user, Subject.objects.filter(subject_type=world["member_type"])).count()


def visible_members_with_tags(world: dict, province: int) -> list[int]:
    from subjects.models import Subject

    rows = Subject.objects.filter(subject_type=world["member_type"], region_id=province).order_by("id")
    return list(rows.values_list("id", flat=True)[:2000])


def explain(bench: Bench, client) -> None:
    """EXPLAIN ANALYZE of the list page's main statement: the scope filter must use indexes."""
    from django.db import connection

    _, statements = request_queries(client, "/api/v1/subjects/")
    main = next(sql for sql in statements if 'FROM "subjects_subject"' in sql and "LIMIT" in sql)
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + main)
        plan = [row[0] for row in cursor.fetchall()]
    print("  EXPLAIN of the list statement:")
    for line in plan:
        print("    " + line)
    uses = sorted({word for line in plan for word in line.split() if word.endswith("_idx") or word.endswith("_pkey")})
    bench.sections["list_plan"] = plan
    bench.note(f"list statement uses indexes: {', '.join(uses) or 'none'}")
    if any(re.search(r"Seq Scan on subjects_subject\b", line) for line in plan):
        bench.note("WARNING: the list statement scans subjects_subject sequentially")
