"""Brand scopes of OneIDs: a person known to two brands is visible to both.

A OneID subject carries at most one brand of its own (usually none: it belongs to the group).
Every brand that holds one of its source records must still see the person, so for each such
brand the OneID gets a ``subjects.SubjectScope(origin="identity")`` row (with the brand's
business line, so that a line + brand grant matches it). ``subjects.access.visible_subjects``
reads those rows in the same query as the subject's own columns: no per-user grants, one
filter whatever the number of people.

The rows are derived data, rewritten set-based after every change of who holds which record
(batch and incremental resolution — hence manual merges and splits, which resolve their records
— and ingest of a record whose brand changed). What a brand then sees *of* the person (only its
records, identifiers and a golden record recomputed from them) is decided by the readers in
``identity.selectors``.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet

from subjects.access import access_for, visible_subject_filter
from subjects.models import Subject, SubjectScope

from .models import RecordAssignment, SourceRecord

ORIGIN = "identity"


def _implied_sql(id_filter: str) -> str:
    """The scope rows the records imply: one per (OneID, brand of one of its records)."""
    return (
        "SELECT DISTINCT a.oneid_id AS subject_id, b.business_line_id AS business_line_id, r.brand_id AS brand_id"
        f" FROM {SourceRecord._meta.db_table} r JOIN {RecordAssignment._meta.db_table} a ON a.record_id = r.id"
        f" JOIN {Subject._meta.db_table} s ON s.id = a.oneid_id"
        f" JOIN {Subject._meta.db_table} b ON b.id = r.brand_id"
        f" WHERE r.brand_id IS NOT NULL AND (s.brand_id IS NULL OR s.brand_id <> r.brand_id){id_filter}"
    )


def _id_filter(column: str, oneid_ids: list[int] | None) -> tuple[str, list]:
    if oneid_ids is None:
        return "", []
    if connection.vendor == "postgresql":
        return f" AND {column} = ANY(%s::bigint[])", [oneid_ids]
    return f" AND {column} IN ({', '.join(['%s'] * len(oneid_ids))})", list(oneid_ids)


def sync_oneid_scopes(oneid_ids: Iterable[int] | None = None) -> tuple[int, int]:
    """Make the identity scope rows of ``oneid_ids`` (every OneID when ``None``) match their records.

    One DELETE of the rows no record implies any more, one INSERT … SELECT of the missing ones:
    rows that stay true are not rewritten, so a batch run that changed nothing writes nothing.
    Every OneID (batch): set against set, hash anti-joins on hashable keys. A few OneIDs
    (incremental): the DELETE probes each row's records by the ``oneid`` index, so its plan does not
    depend on statistics a batch run left stale.
    Call it inside the transaction that moved the records (it is then exact under the same locks).
    Returns ``(deleted, inserted)``. Retired OneIDs lose their rows (no records).
    """
    ids = None if oneid_ids is None else sorted({int(i) for i in oneid_ids if i is not None})
    if ids == []:
        return 0, 0
    table = SubjectScope._meta.db_table
    implied_filter, implied_params = _id_filter("a.oneid_id", ids)
    rows_filter, rows_params = _id_filter(f"{table}.subject_id", ids)
    records, subjects = SourceRecord._meta.db_table, Subject._meta.db_table
    assignments = RecordAssignment._meta.db_table
    if ids is None:  # every OneID: set against set (hash anti-joins; COALESCE keeps the keys hashable)
        delete = (
            f"DELETE FROM {table} WHERE id IN (SELECT t.id FROM {table} t LEFT JOIN ({_implied_sql('')}) d"
            " ON d.subject_id = t.subject_id AND d.brand_id = t.brand_id"
            " AND COALESCE(d.business_line_id, 0) = COALESCE(t.business_line_id, 0)"
            " WHERE t.origin = %s AND (d.subject_id IS NULL OR t.region_id IS NOT NULL))"
        )
    else:  # a few OneIDs: probe each row's records by the oneid index
        delete = (
            f"DELETE FROM {table} WHERE {table}.origin = %s{rows_filter} AND NOT EXISTS (SELECT 1 FROM {assignments} a"
            f" JOIN {records} r ON r.id = a.record_id"
            f" JOIN {subjects} s ON s.id = a.oneid_id JOIN {subjects} b ON b.id = r.brand_id"
            f" WHERE a.oneid_id = {table}.subject_id AND r.brand_id = {table}.brand_id"
            f" AND (s.brand_id IS NULL OR s.brand_id <> r.brand_id) AND {table}.region_id IS NULL"
            f" AND b.business_line_id IS NOT DISTINCT FROM {table}.business_line_id)"
        )
    insert = (
        f"INSERT INTO {table} (subject_id, business_line_id, brand_id, region_id, origin)"
        f" SELECT d.subject_id, d.business_line_id, d.brand_id, NULL, %s FROM ({_implied_sql(implied_filter)}) d"
        f" LEFT JOIN {table} t ON t.origin = %s AND t.subject_id = d.subject_id AND t.brand_id = d.brand_id"
        " AND COALESCE(t.business_line_id, 0) = COALESCE(d.business_line_id, 0) AND t.region_id IS NULL"
        " WHERE t.id IS NULL"
    )
    if connection.vendor == "postgresql":
        insert += " ON CONFLICT DO NOTHING"  # a concurrent writer of the same row: the row is right either way
    insert_params = [ORIGIN, *implied_params, ORIGIN]
    delete_params = [*rows_params, ORIGIN] if ids is None else [ORIGIN, *rows_params]
    with connection.cursor() as cursor:
        cursor.execute(delete, delete_params)
        deleted = cursor.rowcount
        cursor.execute(insert, insert_params)
        inserted = cursor.rowcount
    return deleted, inserted


# What a viewer sees of identity data ---------------------------------------------------------
#
# A source record is visible when its brand is one the viewer holds (a grant that leaves the brand
# open counts as every brand) *and* its OneID is visible (``subjects.access``). Group-level records
# (``brand`` null: a group CRM, WeCom, the shop) mix every brand's customers: only HQ (the
# ``all_scopes`` permission, superusers) sees them. Unresolved records (no OneID) likewise.


def sees_everything(user) -> bool:
    """HQ: no filter at all on identity data (and the queries stay as they were)."""
    return access_for(user).unrestricted


def _brand_condition(user, prefix: str = "") -> Q:
    brands = access_for(user).brand_ids
    if brands is None:
        return Q(**{f"{prefix}brand__isnull": False})
    return Q(**{f"{prefix}brand_id__in": sorted(brands)})


def record_brand_allowed(user, brand_id: int | None) -> bool:
    """The brand half of record visibility, for rows already read (a visible OneID's records)."""
    access = access_for(user)
    if access.unrestricted:
        return True
    brands = access.brand_ids
    return brand_id is not None and (brands is None or brand_id in brands)


def record_brand_filter(user) -> Q:
    """The brand half of record visibility as a ``Q`` (the OneID half is
    ``oneid_filter(user, "assignment__oneid")``)."""
    access = access_for(user)
    if access.unrestricted:
        return Q()
    if access.sees_nothing:
        return Q(pk__in=[])
    return _brand_condition(user)


def record_filter(user, prefix: str = "") -> Q:
    """``Q`` on ``SourceRecord`` (or, with ``prefix`` "record__", on a model pointing at one)."""
    access = access_for(user)
    if access.unrestricted:
        return Q()
    if access.sees_nothing:
        return Q(pk__in=[])
    return _brand_condition(user, prefix) & visible_subject_filter(user, f"{prefix}assignment__oneid")


def visible_records(user, queryset: QuerySet | None = None) -> QuerySet:
    queryset = SourceRecord.objects.all() if queryset is None else queryset
    if sees_everything(user):
        return queryset
    return queryset.filter(record_filter(user))


def oneid_filter(user, field: str) -> Q:
    """``Q``: the OneID subject in column ``field`` is visible (its detail may be opened)."""
    return visible_subject_filter(user, field)


def fully_visible_filter(user, field: str) -> Q:
    """``Q``: the OneID in ``field`` is visible *and* so is every one of its records.

    Decisions about a whole person (split, merge, accepting a suggestion) and views of whole
    events (merge history, suggestion evidence) need this: a brand-A operator must not split off
    or merge records of brand B, nor read evidence drawn from them. ``field`` names the column
    holding the OneID subject id ("subject_id" on ``OneId``, "oneid_a_id", "pk" on ``Subject``).
    """
    access = access_for(user)
    if access.unrestricted:
        return Q()
    hidden = SourceRecord.objects.filter(assignment__oneid=OuterRef(field)).exclude(_brand_condition(user))
    column = "pk" if field == "pk" else field.removesuffix("_id")
    return oneid_filter(user, column) & ~Exists(hidden)


# Who may push records from which source system ----------------------------------------------

PUSH_PERMISSION = "identity.push_records"


def pushable_sources(user) -> QuerySet:
    """Source systems ``user`` may push records from.

    A scoped user (an integration, a brand operator) needs the ``identity.push_records`` object
    permission on the source system itself (django-guardian, granted to the user or a group), and
    the source's brand among the brands they hold: a group-level source (no brand) only with an
    open brand dimension. The model-wide permission is deliberately *not* enough for them — one
    stray group permission would otherwise open every source (guardian's ``get_objects_for_user``
    returns the whole table for a global permission). HQ (all scopes) with the model-wide
    permission, and superusers, push everywhere.
    """
    from guardian.shortcuts import get_objects_for_user

    from .models import SourceSystem

    access = access_for(user)
    if access.sees_nothing:
        return SourceSystem.objects.none()
    if user.is_superuser or (access.unrestricted and user.has_perm(PUSH_PERMISSION)):
        return SourceSystem.objects.all()
    granted = get_objects_for_user(user, PUSH_PERMISSION, klass=SourceSystem, with_superuser=False)
    if access.unrestricted:
        return granted
    brands = access.brand_ids
    return granted if brands is None else granted.filter(brand_id__in=sorted(brands))
