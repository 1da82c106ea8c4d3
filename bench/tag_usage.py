"""What recording tag usage costs a read: the tag values list with and without ``record_tag_use``.

Data: ``members`` members (full profile 100,000; ci 10,000) with ``TAGS`` tags each. Two
requests are timed in-process through the API (token auth, DRF, orjson), each ``--requests``
times per run, alternating recording off and on inside every run so both see the same load:

- ``page``: the first page of 100 values of one tag (``?tag=``): one tag recorded;
- ``subject``: one subject's values (``?subject=``): ``TAGS`` tags recorded in the same statement.

"ours" is with recording, the "reference" without; the ratio is the overhead. The upsert
touches one row per tag and day, so it does not grow with the data.
"""

from __future__ import annotations

import statistics
import time

from .harness import Bench, Sample

TAGS = 20
FULL_MEMBERS = 100_000


def add_arguments(parser) -> None:
    parser.add_argument("--requests", type=int, default=200, help="requests per mode per run (default 200)")


def load(members: int) -> tuple[list[int], list[int], object]:
    """Members, tags and values (set-based writes through the one writer); returns tag ids, subject ids, user."""
    from django.contrib.auth import get_user_model

    from audit.models import TagUsage
    from subjects.models import Subject, SubjectType
    from tags.models import TagDefinition, TagGroup, TagValue
    from tags.services.store import write_values

    TagUsage.objects.all().delete()
    TagValue.objects.filter(tag__code__startswith="usage_bench_").delete()
    member_type, _ = SubjectType.objects.get_or_create(
        code="usage_bench_member", defaults={"name": "Usage bench member", "category": "customer"}
    )
    have = Subject.objects.filter(subject_type=member_type).count()
    Subject.objects.bulk_create(
        Subject(subject_type=member_type, source="bench", external_id=f"M{i}", display_name=f"M{i}")
        for i in range(have, members)
    )
    ids = list(Subject.objects.filter(subject_type=member_type).order_by("id").values_list("id", flat=True)[:members])
    group, _ = TagGroup.objects.get_or_create(subject_type=member_type, code="usage_bench", defaults={"name": "Bench"})
    tags = []
    for n in range(TAGS):
        tag, _ = TagDefinition.objects.get_or_create(
            subject_type=member_type,
            code=f"usage_bench_{n}",
            defaults={"group": group, "name": f"Bench {n}", "value_type": "number", "status": "active"},
        )
        write_values(tag, [(i, n) for i in ids], source="imported", actor=None)
        tags.append(tag.pk)
    user, _ = get_user_model().objects.get_or_create(username="usage_bench", defaults={"is_superuser": True})
    return tags, ids, user


def time_requests(client, url: str, params: dict, count: int, *, record: bool) -> float:
    """Seconds per request for ``count`` GETs, recording on or off (the throttle's cache is cleared first)."""
    from django.core.cache import cache
    from django.test.utils import override_settings

    cache.clear()
    with override_settings(TAGWEAVE_TAG_USAGE=record):
        started = time.perf_counter()
        for _ in range(count):
            response = client.get(url, params)
            assert response.status_code == 200, response.content[:200]
        return (time.perf_counter() - started) / count


def run(bench: Bench, options) -> None:
    import os

    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from audit.models import TagUsage

    members = bench.profile.n(FULL_MEMBERS, minimum=200)
    started = time.perf_counter()
    tags, ids, user = load(members)
    print(f"  data: {members:,} members × {TAGS} tags in {time.perf_counter() - started:.1f}s", flush=True)
    token, _ = Token.objects.get_or_create(user=user)
    client = APIClient(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Token {token.key}")
    cases = {
        "page": ({"tag": tags[0], "page_size": 100}, 1),
        "subject": ({"subject": ids[len(ids) // 2]}, TAGS),
    }
    url = "/api/v1/tag-values/"
    for params, _ in cases.values():
        time_requests(client, url, params, 20, record=True)  # warm caches and plans
    for run_index in range(bench.runs):
        for case, (params, tag_count) in cases.items():
            # Alternate the order per run so neither mode always runs first.
            for record in (False, True) if run_index % 2 == 0 else (True, False):
                per_request = time_requests(client, url, params, options.requests, record=record)
                name = f"{case} {'with' if record else 'without'} usage"
                description = f"GET tag values ({tag_count} tag{'s' * (tag_count > 1)}) per request"
                bench.add_sample(name, Sample(seconds=per_request, items=1), description)
                print(f"    {name}: {per_request * 1000:.2f} ms/request", flush=True)
    for case in cases:
        bench.compare(f"{case}: with / without usage", f"{case} with usage", f"{case} without usage")
        with_ms = statistics.median(s.seconds for s in bench.steps[f"{case} with usage"].samples) * 1000
        without_ms = statistics.median(s.seconds for s in bench.steps[f"{case} without usage"].samples) * 1000
        bench.note(f"{case}: {with_ms - without_ms:+.2f} ms/request for recording ({without_ms:.2f} → {with_ms:.2f})")
    rows = TagUsage.objects.count()
    bench.note(f"usage rows after {bench.runs * options.requests * 4:,} requests: {rows} (one per tag, day, kind)")
    bench.note(f"load average at the end: {os.getloadavg()}")
