"""Writes cannot escape the actor's scope: the checks every subject and relationship write runs.

They live in the services, so the API, the admin, CSV imports and anything else that writes are
checked identically. Each is set-based: a batch of 1,000 items costs the same few queries as one
item (the region ancestors of all targets, the stored rows of all keys, the visibility of all
referenced subjects), and an unrestricted actor (HQ, ``subjects.all_scopes``) costs none.

``actor=None`` is the system (demo loader, benchmarks, identity resolution running as a task with
no user): trusted callers that write derived data, never a request. Every request path passes its
user, and an anonymous or grant-less user may write nowhere.

Two kinds of refusal, both per item and all-or-nothing:

- the *target* scope (business line, brand, region of the subject written) is not covered by a
  grant: ``out_of_scope`` on the field at fault, status 403;
- a *reference* (parent, a relationship's ends) points at a subject the actor cannot see: the
  same ``not_found`` a missing id gets, so a write does not reveal what a read hides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from django.db import connection

from common.errors import ItemError, ServiceError

from ..access import Access, Target, _covers, access_for, region_ancestors, uncovered_targets, visible_subjects
from ..models import Subject
from ..querysets import Scope
from .recordset import recordset_param, recordset_sql

SCOPE_FIELDS = ("business_line", "brand", "region")


class ScopeError(ServiceError):
    """A write into a scope the actor does not hold; nothing was written."""

    status_code = 403

    def __init__(self, errors: list[ItemError]) -> None:
        items = len({e.index for e in errors})
        super().__init__(
            f"{items} item{'s' if items != 1 else ''} would write outside your scopes; nothing was written.",
            errors,
            code="out_of_scope",
        )


def restricted(actor) -> Access | None:
    """The actor's access when writes must be checked; ``None`` for the system and HQ."""
    if actor is None:
        return None
    access = access_for(actor)
    return None if access.unrestricted else access


def uncovered_target_errors(actor, targets: Sequence[tuple[int | None, Target]]) -> list[ItemError]:
    """``out_of_scope`` errors for the ``(index, target)`` pairs no grant of ``actor`` covers."""
    if not targets or restricted(actor) is None:
        return []
    bad = uncovered_targets(actor, [target for _, target in targets])
    if not bad:
        return []
    access = access_for(actor)
    ancestors = region_ancestors({targets[i][1][2] for i in bad if targets[i][1][2] is not None})
    errors = []
    for position in bad:
        index, target = targets[position]
        for name in fields_at_fault(access.scopes, target, ancestors):
            errors.append(ItemError(index, name, _message(name, target), "out_of_scope"))
    return errors


def fields_at_fault(scopes: Iterable[Scope], target: Target, ancestors: dict) -> list[str]:
    """The scope fields to name for a target no grant covers.

    A dimension no grant accepts is at fault; when each dimension is accepted by some grant but
    no single grant accepts them all (brand A in Shanghai, granted brand A in Beijing and brand
    B in Shanghai), the dimensions the closest grant rejects are named.
    """
    scopes = list(scopes)
    if not scopes:
        return list(SCOPE_FIELDS)
    rejected = [[not _dimension_ok(scope, d, target, ancestors) for d in range(3)] for scope in scopes]
    at_fault = [SCOPE_FIELDS[d] for d in range(3) if all(row[d] for row in rejected)]
    if at_fault:
        return at_fault
    closest = min(rejected, key=sum)
    return [SCOPE_FIELDS[d] for d in range(3) if closest[d]]


def _dimension_ok(scope: Scope, dimension: int, target: Target, ancestors: dict) -> bool:
    only = Scope(*(value if d == dimension else None for d, value in enumerate(_as_tuple(scope))))
    return _covers(only, target, ancestors)


def _as_tuple(scope: Scope) -> tuple[int | None, int | None, int | None]:
    return (scope.business_line_id, scope.brand_id, scope.region_id)


def _message(name: str, target: Target) -> str:
    value = target[SCOPE_FIELDS.index(name)]
    label = name.replace("_", " ")
    if value is None:
        return f"You may only write subjects with a {label} you hold; this one has none."
    return f"{label.capitalize()} {value} is outside your scopes."


def invisible_ids(actor, ids: Iterable[int]) -> set[int]:
    """Which of ``ids`` the actor cannot see (one query; none for the system and HQ)."""
    ids = set(ids)
    if not ids or restricted(actor) is None:
        return set()
    seen = visible_subjects(actor, Subject.objects.filter(pk__in=sorted(ids))).values_list("pk", flat=True)
    return ids - set(seen)


class StoredEnds(NamedTuple):
    """A stored relationship's ends and own subject (``None`` unless its type is taggable)."""

    from_id: int
    to_id: int
    subject_id: int | None


def stored_relationship_ends(keys: Iterable[tuple[int, str, str]]) -> dict[tuple[int, str, str], StoredEnds]:
    """The stored ends of the relationships with these keys (one statement): what a scope check
    compares with the actor's scopes, and what a write that moves them reports as their old ends."""
    rows = [{"t": t, "s": s, "e": e} for t, s, e in set(keys)]
    if not rows:
        return {}
    source = recordset_sql(connection, [("t", "bigint"), ("s", "text"), ("e", "text")])
    sql = (
        f"SELECT r.t, r.s, r.e, x.from_subject_id, x.to_subject_id, x.subject_id FROM {source}"
        " JOIN subjects_relationship x ON x.relationship_type_id = r.t AND x.source = r.s AND x.external_id = r.e"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [recordset_param(rows)])
        return {(t, s, e): StoredEnds(*ends) for t, s, e, *ends in cursor.fetchall()}


def not_found(index: int | None, field: str, subject_id: int) -> ItemError:
    return ItemError(index, field, f"No subject with id {subject_id}.", "not_found")


def stored_out_of_scope(index: int | None, kind: str) -> ItemError:
    return ItemError(
        index,
        "external_id",
        f"A {kind} with this key exists outside your scopes; you cannot update it.",
        "out_of_scope",
    )


def refuse(errors: list[ItemError]) -> None:
    """Raise the batch's scope refusal: 403 when every error is ``out_of_scope``, else 400."""
    if not errors:
        return
    if all(e.code == "out_of_scope" for e in errors):
        raise ScopeError(errors)
    raise ServiceError(f"{len({e.index for e in errors})} items are invalid.", errors)


class NotVisible(ServiceError):
    """The object written is out of the actor's scope: the same 404 a read answers."""

    status_code = 404


def require_visible(actor, subject_ids: Iterable[int], what: str) -> None:
    """Deletes: every subject the write touches must be visible."""
    if invisible_ids(actor, subject_ids):
        raise NotVisible(f"No such {what}.", [ItemError(None, "", f"No such {what}.", "not_found")], code="not_found")
