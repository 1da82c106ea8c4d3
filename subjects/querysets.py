"""Chainable, side-effect-free filters for subjects."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import models
from django.db.models import Q
from django.db.models.expressions import RawSQL


@dataclass(frozen=True)
class Scope:
    """One grant of scope: every dimension left ``None`` is unrestricted.

    A region covers its whole subtree (country → province → city).
    """

    business_line_id: int | None = None
    brand_id: int | None = None
    region_id: int | None = None


def region_subtree_sql(region_id: int) -> RawSQL:
    """Ids of a region and all regions below it, as a subquery (recursive CTE)."""
    return RawSQL(
        "WITH RECURSIVE region_tree(id) AS ("
        " SELECT CAST(%s AS BIGINT) UNION SELECT s.id FROM subjects_subject s JOIN region_tree t ON s.parent_id = t.id"
        ") SELECT id FROM region_tree",
        [region_id],
    )


def _scope_condition(scope: Scope, *, own_id: bool = True) -> Q:
    """The condition "inside ``scope``" on a row with ``business_line``/``brand``/``region`` columns.

    ``own_id`` adds "or is that scope subject itself" (on subjects, not on membership rows).
    """
    condition = Q()
    if scope.business_line_id is not None:
        line = Q(business_line_id=scope.business_line_id)
        condition &= line | Q(id=scope.business_line_id) if own_id else line
    if scope.brand_id is not None:
        brand = Q(brand_id=scope.brand_id)
        condition &= brand | Q(id=scope.brand_id) if own_id else brand
    if scope.region_id is not None:
        subtree = region_subtree_sql(scope.region_id)
        region = Q(region_id__in=subtree)
        condition &= region | Q(id__in=subtree) if own_id else region
    return condition


class SubjectQuerySet(models.QuerySet):
    def of_type(self, code: str) -> SubjectQuerySet:
        return self.filter(subject_type__code=code)

    def in_scopes(self, scopes: Iterable[Scope]) -> SubjectQuerySet:
        """Subjects inside any of ``scopes``, as one query.

        A scope subject (a brand, a region) counts as inside its own scope, and a subject with
        further scopes (``SubjectScope`` rows: a OneID spanning two brands) is inside each of
        them. No scopes at all means nothing is visible.
        """
        from .models import SubjectScope

        scopes = list(scopes)
        if not scopes:
            return self.none()
        own = Q(pk__in=[])
        extra = Q(pk__in=[])
        for scope in scopes:
            own |= _scope_condition(scope)
            extra |= _scope_condition(scope, own_id=False)
        memberships = SubjectScope.objects.filter(extra).values("subject_id")
        return self.filter(own | Q(pk__in=memberships))
