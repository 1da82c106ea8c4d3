"""The permission matrix: every role × every API endpoint × in-scope / out-of-scope object × action.

Endpoints are discovered from the URL conf, and ``test_every_endpoint_has_an_expectation`` fails
when one has no row in ``ROWS``, so a new endpoint cannot escape the matrix. Each row says, per
role, the exact status for an object in the role's scope and one outside it; list rows also say
the exact ids listed. On every refusal nothing changed (a fingerprint of the scoped tables and
the audit tables is equal before and after); every successful write left an audit entry
(auditlog ``LogEntry`` or ``DomainEvent``). Each role's requests run in a savepoint rolled back
afterwards, so the roles of one row see the same world.

What each role holds is written out here by hand (``HOLDS``), not read from ``subjects.roles``:
the matrix tests the roles, it does not restate them. Rows of the identity and tags endpoints
(scoped by other helpers) assert what issue 6 requires of them — 401 anonymous, 403 without the
permission (auditors hold nothing there), out-of-scope objects absent or 404.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from auditlog.models import LogEntry
from django.db import transaction
from django.db.models import Max
from django.urls import get_resolver
from django.urls.resolvers import URLPattern, URLResolver

from audit.models import DomainEvent
from subjects.models import Relationship, RelationshipType, Subject, SubjectType

pytestmark = pytest.mark.django_db

ROLES = ("anon", "nobody", "auditor", "hq_admin", "hq_analyst", "brand_operator", "regional_manager", "integration")
UNRESTRICTED = {"hq_admin", "hq_analyst"}

# What each role may do, by hand: "<model>.<action>".
_ALL_SUBJECTS = {f"{m}.{a}" for m in ("subject", "relationship", "type") for a in ("view", "add", "change", "delete")}
HOLDS: dict[str, set[str]] = {
    "anon": set(),
    "nobody": set(),
    "auditor": set(),
    "hq_admin": _ALL_SUBJECTS | {"tagvalue.view"},
    "hq_analyst": {"subject.view", "relationship.view", "type.view", "tagvalue.view"},
    "brand_operator": {
        "type.view",
        "subject.view",
        "subject.add",
        "subject.change",
        "relationship.view",
        "relationship.add",
        "relationship.change",
        "tagvalue.view",
    },
    "regional_manager": {"type.view", "subject.view", "relationship.view", "tagvalue.view"},
    "integration": {"type.view", "subject.add", "subject.change", "relationship.add", "relationship.change"},
}


# Endpoint discovery ---------------------------------------------------------------------------


def _route(pattern: str) -> str:
    route = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)
    return route.replace("^", "").replace("$", "")


def _walk(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry


def discovered_endpoints() -> set[tuple[str, str]]:
    """``(route, METHOD)`` of every API endpoint (format-suffix twins and the API root left out)."""
    found = set()
    for pattern, entry in _walk(get_resolver().url_patterns):
        if not pattern.startswith("api/v1/") or "format" in pattern:
            continue
        route = _route(pattern)[len("api/v1/") :]
        if route == "":
            continue
        callback = entry.callback
        actions = getattr(callback, "actions", None)
        if actions:
            # DRF's viewset view adds "head" to its shared actions dict on its first request, so
            # whether HEAD shows depends on what ran before in the process: HEAD mirrors GET.
            methods = [m for m in actions if m != "head"]
        else:
            view = callback.view_class
            methods = [m for m in view.http_method_names if m not in ("options", "head") and hasattr(view, m)]
        found.update((route, method.upper()) for method in methods)
    return found


# Rows -------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One endpoint and method: how to call it and what each role must get."""

    url: Callable  # (gov, scope) -> path
    needs: set[str]  # capabilities a role must hold ("subject.view")
    ok: int = 200
    out: int | None = 404  # status for a restricted role on the out-of-scope object (None: not scoped)
    body: Callable | None = None  # (gov, scope) -> JSON body
    rows: Callable | None = None  # (gov, role, scope) -> the exact ids a list must hold
    writes: bool = False
    owner: str = "G1"
    no_perm: int = 403
    other: bool = False  # another app's endpoint: exact statuses only for roles holding nothing there

    def expected(self, role: str, scope: str) -> int:
        if role == "anon":
            return 401
        if self.other:
            return 403 if role in ("nobody", "auditor") else 0
        if not self.needs <= HOLDS[role]:
            return self.no_perm
        if scope == "out" and self.out is not None and role not in UNRESTRICTED:
            return self.out
        return self.ok


def _subject(gov, scope):
    return gov.member_in if scope == "in" else gov.member_out


def _rel(gov, scope):
    return gov.rel_in if scope == "in" else gov.rel_out


def _new_member(gov, scope, ext="NEW"):
    w = gov.world
    inside = scope == "in"
    return {
        "type": "member",
        "source": "matrix",
        "external_id": f"{ext}-{scope}",
        "brand": (w.brand_a if inside else w.brand_b).pk,
        "region": (w.shanghai if inside else w.beijing).pk,
        "business_line": w.line.pk,
    }


def _new_rel(gov, scope, ext="NEW"):
    w = gov.world
    ends = (gov.member_in, w.clinic_a_sh) if scope == "in" else (gov.member_out, w.clinic_b_bj)
    return {
        "type": "visited",
        "source": "matrix",
        "external_id": f"{ext}-{scope}",
        "from": ends[0].pk,
        "to": ends[1].pk,
    }


def _spare_type(gov, scope):
    return SubjectType.objects.create(code=f"spare_{scope}", name="Spare", category="content")


def _spare_rtype(gov, scope):
    w = gov.world
    return RelationshipType.objects.create(
        code=f"spare_{scope}", name="Spare", from_type=w.member_type, to_type=w.member_type, cardinality="n:m"
    )


def _list_subjects(gov, role, scope="in"):
    return gov.visible_ids(role)


def _list_relationships(gov, role, scope="in"):
    if role in UNRESTRICTED:
        return {gov.rel_in.pk, gov.rel_out.pk, gov.rel_cross.pk}
    return {gov.rel_in.pk}  # brand A and Shanghai both see member_in → clinic A Shanghai only


def _subject_relationships(gov, role, scope):
    """member_in: rel_in and rel_cross (whose far end, clinic B, restricted roles cannot see);
    member_out (HQ only): rel_out."""
    if scope == "out":
        return {gov.rel_out.pk}
    return {gov.rel_in.pk, gov.rel_cross.pk} if role in UNRESTRICTED else {gov.rel_in.pk}


TYPE = {"type.view"}
SUBJECT_ROWS: dict[tuple[str, str], Row] = {
    ("subject-types/", "GET"): Row(lambda g, s: "/api/v1/subject-types/", TYPE, out=None),
    ("subject-types/", "POST"): Row(
        lambda g, s: "/api/v1/subject-types/",
        {"type.add"},
        ok=201,
        out=None,
        body=lambda g, s: {"code": f"new_{s}", "name": "New", "category": "content"},
        writes=True,
    ),
    ("subject-types/{pk}/", "GET"): Row(
        lambda g, s: f"/api/v1/subject-types/{g.world.member_type.pk}/", TYPE, out=None
    ),
    ("subject-types/{pk}/", "PUT"): Row(
        lambda g, s: f"/api/v1/subject-types/{g.world.member_type.pk}/",
        {"type.change"},
        out=None,
        body=lambda g, s: {"code": "member", "name": f"Members {s}", "category": "customer"},
        writes=True,
    ),
    ("subject-types/{pk}/", "PATCH"): Row(
        lambda g, s: f"/api/v1/subject-types/{g.world.member_type.pk}/",
        {"type.change"},
        out=None,
        body=lambda g, s: {"name": f"Members {s}"},
        writes=True,
    ),
    ("subject-types/{pk}/", "DELETE"): Row(
        lambda g, s: f"/api/v1/subject-types/{_spare_type(g, s).pk}/", {"type.delete"}, ok=204, out=None, writes=True
    ),
    ("relationship-types/", "GET"): Row(lambda g, s: "/api/v1/relationship-types/", TYPE, out=None),
    ("relationship-types/", "POST"): Row(
        lambda g, s: "/api/v1/relationship-types/",
        {"type.add"},
        ok=201,
        out=None,
        body=lambda g, s: {
            "code": f"knows_{s}",
            "name": "Knows",
            "from_type": "member",
            "to_type": "member",
            "cardinality": "n:m",
        },
        writes=True,
    ),
    ("relationship-types/{pk}/", "GET"): Row(
        lambda g, s: f"/api/v1/relationship-types/{g.world.visited.pk}/", TYPE, out=None
    ),
    ("relationship-types/{pk}/", "PUT"): Row(
        lambda g, s: f"/api/v1/relationship-types/{g.world.visited.pk}/",
        {"type.change"},
        out=None,
        body=lambda g, s: {
            "code": "visited",
            "name": f"Visited {s}",
            "from_type": "member",
            "to_type": "clinic",
            "cardinality": "n:m",
        },
        writes=True,
    ),
    ("relationship-types/{pk}/", "PATCH"): Row(
        lambda g, s: f"/api/v1/relationship-types/{g.world.visited.pk}/",
        {"type.change"},
        out=None,
        body=lambda g, s: {"name": f"Visited {s}"},
        writes=True,
    ),
    ("relationship-types/{pk}/", "DELETE"): Row(
        lambda g, s: f"/api/v1/relationship-types/{_spare_rtype(g, s).pk}/",
        {"type.delete"},
        ok=204,
        out=None,
        writes=True,
    ),
    ("subjects/", "GET"): Row(
        lambda g, s: "/api/v1/subjects/?page_size=1000", {"subject.view"}, out=None, rows=_list_subjects
    ),
    ("subjects/", "POST"): Row(
        lambda g, s: "/api/v1/subjects/", {"subject.add"}, ok=201, out=403, body=_new_member, writes=True
    ),
    ("subjects/bulk/", "POST"): Row(
        lambda g, s: "/api/v1/subjects/bulk/",
        {"subject.add", "subject.change"},
        out=403,
        body=lambda g, s: {"items": [_new_member(g, s, "B1"), _new_member(g, s, "B2")]},
        writes=True,
    ),
    ("subjects/{pk}/", "GET"): Row(lambda g, s: f"/api/v1/subjects/{_subject(g, s).pk}/", {"subject.view"}),
    ("subjects/{pk}/", "PUT"): Row(
        lambda g, s: f"/api/v1/subjects/{_subject(g, s).pk}/",
        {"subject.change"},
        body=lambda g, s: {"display_name": "Renamed", "attributes": {}},
        writes=True,
    ),
    ("subjects/{pk}/", "PATCH"): Row(
        lambda g, s: f"/api/v1/subjects/{_subject(g, s).pk}/",
        {"subject.change"},
        body=lambda g, s: {"display_name": "Renamed"},
        writes=True,
    ),
    ("subjects/{pk}/", "DELETE"): Row(
        lambda g, s: f"/api/v1/subjects/{_subject(g, s).pk}/", {"subject.delete"}, ok=204, writes=True
    ),
    ("subjects/{pk}/relationships/", "GET"): Row(
        lambda g, s: f"/api/v1/subjects/{_subject(g, s).pk}/relationships/",
        {"subject.view", "relationship.view"},
        rows=_subject_relationships,
    ),
    ("subjects/{pk}/tags/", "GET"): Row(
        lambda g, s: f"/api/v1/subjects/{_subject(g, s).pk}/tags/", {"subject.view", "tagvalue.view"}
    ),
    ("relationships/", "GET"): Row(
        lambda g, s: "/api/v1/relationships/?page_size=1000", {"relationship.view"}, out=None, rows=_list_relationships
    ),
    ("relationships/", "POST"): Row(
        lambda g, s: "/api/v1/relationships/", {"relationship.add"}, ok=201, out=400, body=_new_rel, writes=True
    ),
    ("relationships/bulk/", "POST"): Row(
        lambda g, s: "/api/v1/relationships/bulk/",
        {"relationship.add", "relationship.change"},
        out=400,
        body=lambda g, s: {"items": [_new_rel(g, s, "B1")]},
        writes=True,
    ),
    ("relationships/{pk}/", "GET"): Row(lambda g, s: f"/api/v1/relationships/{_rel(g, s).pk}/", {"relationship.view"}),
    ("relationships/{pk}/", "PUT"): Row(
        lambda g, s: f"/api/v1/relationships/{_rel(g, s).pk}/",
        {"relationship.change"},
        body=lambda g, s: {"weight": 2.0},
        writes=True,
    ),
    ("relationships/{pk}/", "PATCH"): Row(
        lambda g, s: f"/api/v1/relationships/{_rel(g, s).pk}/",
        {"relationship.change"},
        body=lambda g, s: {"weight": 3.0},
        writes=True,
    ),
    ("relationships/{pk}/", "DELETE"): Row(
        lambda g, s: f"/api/v1/relationships/{_rel(g, s).pk}/", {"relationship.delete"}, ok=204, writes=True
    ),
}


# Other helpers' endpoints: what issue 6 requires whatever their design ------------------------------

MISSING = 999_999_999


def _other(route: str, method: str, needs: set[str], owner: str, body=None) -> Row:
    """401 anonymous, 403 for the roles that hold nothing in the app (no role, the auditor).

    The object is a missing id and the body empty: the other roles get 403, 404 or a validation
    error depending on the endpoint's own permissions, never a 5xx or a 401. Out-of-scope objects
    of these apps are checked below with real rows (``test_*_out_of_scope``).
    """
    url = "/api/v1/" + route.replace("{pk}", str(MISSING)).replace("{id}", str(MISSING))
    return Row(lambda g, s: url, needs, ok=0, out=None, body=body, owner=owner, other=True)


IDENTITY: set[str] = set()
TAGS: set[str] = set()
OTHER_ROWS: dict[tuple[str, str], Row] = {}
for _route_name, _methods in {
    "source-systems/": ("GET", "POST"),
    "source-systems/{pk}/": ("GET", "PUT", "PATCH", "DELETE"),
    "identifier-types/": ("GET", "POST"),
    "identifier-types/{pk}/": ("GET", "PUT", "PATCH", "DELETE"),
    "composite-keys/": ("GET", "POST"),
    "composite-keys/{pk}/": ("GET", "PUT", "PATCH", "DELETE"),
    "blocked-values/": ("GET", "POST"),
    "blocked-values/{pk}/": ("GET", "PUT", "PATCH", "DELETE"),
    "source-records/": ("GET", "POST"),
    "source-records/bulk/": ("POST",),
    "source-records/{pk}/": ("GET",),
    "oneids/": ("GET",),
    "oneids/merge/": ("POST",),
    "oneids/resolve/": ("GET",),
    "oneids/{id}/": ("GET",),
    "oneids/{id}/split/": ("POST",),
    "match-suggestions/": ("GET",),
    "match-suggestions/{pk}/accept/": ("POST",),
    "match-suggestions/{pk}/reject/": ("POST",),
    "reapply-runs/": ("GET",),
    "reapply-runs/{pk}/": ("GET",),
}.items():
    for _method in _methods:
        OTHER_ROWS[(_route_name, _method)] = _other(_route_name, _method, IDENTITY, "G2", body=lambda g, s: {})
for _route_name, _methods in {
    "tag-groups/": ("GET", "POST"),
    "tag-groups/{pk}/": ("GET", "PUT", "PATCH", "DELETE"),
    "tag-definitions/": ("GET", "POST"),
    "tag-definitions/{pk}/": ("GET", "PUT", "PATCH", "DELETE"),
    "tag-definitions/{pk}/activate/": ("POST",),
    "tag-definitions/{pk}/archive/": ("POST",),
    "tag-definitions/{pk}/preview/": ("POST",),
    "tag-definitions/{pk}/recompute/": ("POST",),
    "tag-definitions/{pk}/rules/": ("GET", "POST"),
    "recompute-jobs/": ("GET",),
    "recompute-jobs/{pk}/": ("GET",),
    "tag-values/": ("GET",),
    "tag-values/bulk/": ("POST",),
    "tag-values/subjects-at/": ("GET",),
    "tag-values/at/": ("GET",),
    "tag-explain/": ("GET",),
    "events/": ("POST",),
    "events/batch/": ("POST",),
}.items():
    for _method in _methods:
        OTHER_ROWS[(_route_name, _method)] = _other(_route_name, _method, TAGS, "G3", body=lambda g, s: {})

ROWS = {**SUBJECT_ROWS, **OTHER_ROWS}


# Harness ----------------------------------------------------------------------------------------


def fingerprint() -> tuple:
    """What a refused request must leave as it was: scoped tables and both audit layers."""
    from identity.models import SourceRecord
    from tags.models import TagValue

    parts = []
    for model in (Subject, Relationship, SubjectType, RelationshipType):
        agg = model.objects.aggregate(n=Max("id"), t=Max("updated_at"))
        parts.append((model.objects.count(), agg["n"], agg["t"]))
    parts.append(TagValue.objects.count())
    parts.append(SourceRecord.objects.count())
    parts.append((LogEntry.objects.count(), DomainEvent.objects.count()))
    return tuple(parts)


def audit_entries() -> tuple[int, int]:
    return LogEntry.objects.count(), DomainEvent.objects.count()


@dataclass
class Outcome:
    failures: list[str] = field(default_factory=list)

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            self.failures.append(message)


def call(gov, role: str, method: str, url: str, body) -> object:
    client = gov.client(None if role == "anon" else role)
    kwargs = {"format": "json"} if body is not None and method != "GET" else {}
    data = body if method != "GET" else None
    return (
        getattr(client, method.lower())(url, data, **kwargs)
        if data is not None
        else getattr(client, method.lower())(url)
    )


def run_row(gov, key: tuple[str, str], row: Row) -> list[str]:
    route, method = key
    outcome = Outcome()
    for role in ROLES:
        for scope in ("in", "out"):
            label = f"{method} {route} as {role} ({scope} of scope)"
            with transaction.atomic():
                url = row.url(gov, scope)
                body = row.body(gov, scope) if row.body else None
                before, audits = fingerprint(), audit_entries()
                response = call(gov, role, method, url, body)
                status = response.status_code
                expected = row.expected(role, scope)
                if expected == 0:  # another app's endpoint, a role that may hold some of its permissions
                    outcome.check(status < 500 and status != 401, f"{label}: got {status}")
                else:
                    outcome.check(status == expected, f"{label}: expected {expected}, got {status}")
                if status >= 400:
                    outcome.check(fingerprint() == before, f"{label}: refused ({status}) but something changed")
                    if status != 405:
                        outcome.check("error" in response.json(), f"{label}: not in the error shape")
                elif row.writes:
                    after = audit_entries()
                    outcome.check(
                        after[0] > audits[0] or after[1] > audits[1], f"{label}: wrote without an audit entry"
                    )
                if row.rows is not None and status == 200:
                    listed = {item["id"] for item in response.json()["results"]}
                    wanted = row.rows(gov, role, scope)
                    outcome.check(listed == wanted, f"{label}: listed {sorted(listed)}, expected {sorted(wanted)}")
                transaction.set_rollback(True)
    return outcome.failures


def test_every_endpoint_has_an_expectation():
    found = discovered_endpoints()
    assert found - ROWS.keys() == set(), "endpoints without a row in the permission matrix"
    assert ROWS.keys() - found == set(), "matrix rows for endpoints that no longer exist"


@pytest.mark.parametrize("key", sorted(SUBJECT_ROWS), ids=lambda k: f"{k[1]} {k[0]}")
def test_subjects_endpoint(gov, key):
    failures = run_row(gov, key, SUBJECT_ROWS[key])
    assert failures == []


@pytest.mark.parametrize("key", sorted(OTHER_ROWS), ids=lambda k: f"{k[1]} {k[0]}")
def test_other_apps_endpoint(gov, key):
    failures = run_row(gov, key, OTHER_ROWS[key])
    assert failures == []


# Scoped objects of other apps: absent from lists, 404 in detail -------------------------------------


# Admin --------------------------------------------------------------------------------------------

ADMIN_VIEWERS = {"hq_admin", "hq_analyst", "brand_operator", "regional_manager"}


def _admin_status(role: str, scope: str, *, change_page: bool) -> int:
    if role == "anon":
        return 302  # to the login page
    if role not in ADMIN_VIEWERS:
        return 403
    if change_page and scope == "out" and role not in UNRESTRICTED:
        return 302  # "does not exist", back to the admin index
    return 200


@pytest.mark.parametrize("model", ["subject", "relationship"])
def test_admin_changelists_and_change_pages(gov, model):
    from django.test import Client

    outcome = Outcome()
    objects = {"subject": (gov.member_in, gov.member_out), "relationship": (gov.rel_in, gov.rel_out)}[model]
    wanted = {"subject": _list_subjects, "relationship": _list_relationships}[model]
    for role in ROLES:
        client = Client() if role == "anon" else gov.admin_client(role)
        before = fingerprint()
        response = client.get(f"/admin/subjects/{model}/")
        expected = _admin_status(role, "in", change_page=False)
        outcome.check(response.status_code == expected, f"{model} changelist as {role}: {response.status_code}")
        if response.status_code == 200:
            listed = {obj.pk for obj in response.context["cl"].result_list}
            outcome.check(listed == wanted(gov, role), f"{model} changelist as {role}: listed {sorted(listed)}")
        for scope, obj in zip(("in", "out"), objects, strict=True):
            response = client.get(f"/admin/subjects/{model}/{obj.pk}/change/")
            expected = _admin_status(role, scope, change_page=True)
            outcome.check(
                response.status_code == expected,
                f"{model} change page ({scope}) as {role}: expected {expected}, got {response.status_code}",
            )
            if response.status_code == 302 and role != "anon":
                outcome.check(response.url == "/admin/", f"{model} change page ({scope}) as {role}: {response.url}")
        outcome.check(fingerprint() == before, f"{model} admin pages as {role} changed something")
    assert outcome.failures == []
