"""Who may see and write which subjects: the one scope function every read and write path uses.

A user's access is computed once per request (cached on the user object) from

- the ``subjects.all_scopes`` permission (HQ roles; superusers): every scope, no filter at all;
- otherwise their ``ScopeGrant`` rows and those of their groups (roles): business line × brand ×
  region, a region covering its subtree.

Reads filter the subject queryset with ``visible_subjects`` (one SQL filter, never per-row
grants, so it scales with millions of subjects × users); related models (relationships, tag
values, source records) filter on their subject column with ``visible_subject_filter``. Writes
check the target scope of every item with ``uncovered_targets`` (one query for the region
ancestors of a whole batch). Out-of-scope objects are simply absent from querysets, so detail
views answer 404 and nothing leaks their existence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db import connection
from django.db.models import Q, QuerySet

from .models import ScopeGrant, Subject
from .querysets import Scope, SubjectQuerySet

ALL_SCOPES_PERMISSION = "subjects.all_scopes"
PII_PERMISSION = "subjects.view_pii"

_CACHE_ATTRIBUTE = "_tagweave_access"


@dataclass(frozen=True)
class Access:
    """What one user may reach. ``unrestricted`` ignores ``scopes``."""

    unrestricted: bool
    scopes: tuple[Scope, ...] = ()

    @property
    def brand_ids(self) -> frozenset[int] | None:
        """Brands the user holds, or ``None`` when some grant leaves the brand open (or all scopes).

        Used where only the brand dimension exists (source systems, source records, brand-owned
        tag groups).
        """
        if self.unrestricted or any(scope.brand_id is None for scope in self.scopes):
            return None
        return frozenset(scope.brand_id for scope in self.scopes)

    @property
    def sees_nothing(self) -> bool:
        return not self.unrestricted and not self.scopes


NO_ACCESS = Access(unrestricted=False)
FULL_ACCESS = Access(unrestricted=True)


def access_for(user) -> Access:
    """The user's access, computed once per user object (one query for the grants).

    Anonymous and inactive users see nothing. The result is cached on the user instance, which
    lives for one request (DRF and the admin load the user per request), so a grant change takes
    effect on the next request.
    """
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return NO_ACCESS
    cached = getattr(user, _CACHE_ATTRIBUTE, None)
    if cached is not None:
        return cached
    if user.is_superuser or user.has_perm(ALL_SCOPES_PERMISSION):
        access = FULL_ACCESS
    else:
        rows = (
            ScopeGrant.objects.filter(Q(user_id=user.pk) | Q(group__user=user.pk))
            .values_list("business_line_id", "brand_id", "region_id")
            .distinct()
        )
        access = Access(unrestricted=False, scopes=tuple(sorted({Scope(*row) for row in rows}, key=_scope_key)))
    setattr(user, _CACHE_ATTRIBUTE, access)
    return access


def forget_access(user) -> None:
    """Drop the cached access (tests and code that change grants within one request)."""
    if hasattr(user, _CACHE_ATTRIBUTE):
        delattr(user, _CACHE_ATTRIBUTE)
    for cache in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
        if hasattr(user, cache):
            delattr(user, cache)


def visible_subjects(user, queryset: QuerySet | None = None) -> SubjectQuerySet:
    """``queryset`` (all subjects by default) restricted to what ``user`` may see."""
    queryset = Subject.objects.all() if queryset is None else queryset
    access = access_for(user)
    if access.unrestricted:
        return queryset
    if access.sees_nothing:
        return queryset.none()
    return queryset.filter(pk__in=Subject.objects.in_scopes(access.scopes).values("pk"))


def visible_subject_filter(user, field: str) -> Q:
    """A ``Q`` on another model's subject column ``field`` ("subject", "from_subject", …).

    ``Q()`` (no condition) for unrestricted users, so their queries stay as they were.
    """
    access = access_for(user)
    if access.unrestricted:
        return Q()
    if access.sees_nothing:
        return Q(pk__in=[])
    return Q(**{f"{field}__in": Subject.objects.in_scopes(access.scopes).values("pk")})


def can_see_pii(user) -> bool:
    """Whether ``user`` holds the PII permission (masking decisions; unmasking is logged)."""
    return bool(user and getattr(user, "is_authenticated", False) and user.has_perm(PII_PERMISSION))


Target = tuple[int | None, int | None, int | None]
"""A write's target scope: (business_line_id, brand_id, region_id) of the subject written."""


def uncovered_targets(user, targets: Sequence[Target]) -> list[int]:
    """Indexes of ``targets`` that no grant of ``user`` covers (empty: every write may proceed).

    A grant covers a target when each dimension the grant names equals the target's (a region
    grant also covers the target's region being below it). A target that leaves a granted
    dimension empty is *not* covered: a brand-A operator cannot create a brand-less subject.
    One query, for the ancestors of all the batch's regions.
    """
    access = access_for(user)
    if access.unrestricted:
        return []
    if access.sees_nothing:
        return list(range(len(targets)))
    needs_regions = any(scope.region_id is not None for scope in access.scopes)
    ancestors = region_ancestors({t[2] for t in targets if t[2] is not None}) if needs_regions else {}
    return [
        index
        for index, target in enumerate(targets)
        if not any(_covers(scope, target, ancestors) for scope in access.scopes)
    ]


def _covers(scope: Scope, target: Target, ancestors: dict[int, frozenset[int]]) -> bool:
    line, brand, region = target
    if scope.business_line_id is not None and scope.business_line_id != line:
        return False
    if scope.brand_id is not None and scope.brand_id != brand:
        return False
    if scope.region_id is not None:
        return region is not None and scope.region_id in ancestors.get(region, frozenset({region}))
    return True


def region_ancestors(region_ids: Iterable[int]) -> dict[int, frozenset[int]]:
    """For each region id, itself and every region above it (``parent`` chain), in one query."""
    region_ids = sorted(set(region_ids))
    if not region_ids:
        return {}
    table = Subject._meta.db_table
    placeholders = ", ".join(["(%s)"] * len(region_ids))
    sql = (
        f"WITH RECURSIVE start(id) AS (VALUES {placeholders}), "
        "up(start_id, id) AS ("
        " SELECT CAST(id AS BIGINT), CAST(id AS BIGINT) FROM start"
        f" UNION SELECT up.start_id, s.parent_id FROM up JOIN {table} s ON s.id = up.id"
        " WHERE s.parent_id IS NOT NULL"
        ") SELECT start_id, id FROM up"
    )
    result: dict[int, set[int]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, region_ids)
        for start_id, ancestor_id in cursor.fetchall():
            result.setdefault(start_id, set()).add(ancestor_id)
    return {region: frozenset(found) for region, found in result.items()}


def _scope_key(scope: Scope) -> tuple[int, int, int]:
    return (scope.business_line_id or 0, scope.brand_id or 0, scope.region_id or 0)
