"""Batch golden records in SQL (PostgreSQL): the OneID subjects of a whole run in a few statements.

The batch's first run creates a subject for every group (750k at a million
records). Building each golden record in Python and writing it through
``subject_bulk_upsert`` cost ~90 µs a group (decoding ``raw``, survivorship,
schema checks twice, per-row COPY), two minutes at full size. Here the groups'
members are copied in (binary, from numpy), survivorship is one ``DISTINCT ON
(group, attribute)`` over ``jsonb_each`` ordered by the attribute's strategy
(groups of one record skip the sort), and subjects are written with
``INSERT … SELECT`` / ``UPDATE … FROM``. Python only runs the subject type's
schema over each golden record (fastjsonschema) and patches the few it rejects,
so the stored golden record is exactly :func:`identity.golden.golden_record`'s
(same order keys and tie-breaks; the test compares them). One domain event
records the subjects written, as the subjects service would.

Most-frequent compares values as ``jsonb`` (``1`` equals ``1.0``), the Python
path as sorted-key JSON text; they differ only for numbers spelled two ways.
"""

from __future__ import annotations

import uuid

import numpy as np
import orjson
from django.db import connection
from django.utils import timezone

from audit.services import bulk_write_record
from subjects.models import SubjectType
from subjects.schemas import validator_for

from ..extract import Rules
from ..golden import _valid, allowed_attributes
from .copy import copy_in

ONEID_SOURCE = "oneid"
EMPTY = "x.value NOT IN ('null'::jsonb, '\"\"'::jsonb, '[]'::jsonb, '{}'::jsonb)"
# Survivorship as four descending sort keys (float8; ids are exact below 2^53), mirroring golden._pick.
ORDER_KEYS = {
    "most_trusted": ("trust", "u", "id", "0"),
    "most_recent": ("u", "trust", "id", "0"),
    "first_non_empty": ("-c", "-id", "0", "0"),
    "most_frequent": ("n", "trust", "u", "-id"),
}
NEXT_ID = "nextval('subjects_subject_id_seq'::regclass)"  # Django's name for the identity column's sequence
# The new subject's key: its id in hex (unique, and ascending, so the unique index is appended to at its
# right edge; random uuids cost a random leaf page per row). The Python path keeps uuid4().hex (32 chars).
EXTERNAL_ID = "'b' || lpad(to_hex(g.subject_id), 15, '0')"
STAGES = {
    "tw_stage_identity_member": "record_id bigint, label bigint",
    "tw_stage_identity_single": "record_id bigint, label bigint",
    "tw_stage_identity_group": "label bigint, subject_id bigint",
    "tw_identity_golden": "label bigint, subject_id bigint, is_new boolean, type_id bigint,"
    " attributes jsonb, fallback text",
}


def _stages(cursor) -> None:
    for table, definition in STAGES.items():
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} ({definition}); TRUNCATE {table}")


def _order(strategies: dict[str, str]) -> str:
    """``k1 DESC, …`` choosing each attribute's keys by its strategy (most trusted by default)."""
    keys = []
    for position in range(4):
        default = ORDER_KEYS["most_trusted"][position]
        cases = [
            (name, ORDER_KEYS[strategy][position])
            for name, strategy in sorted(strategies.items())
            if strategy in ORDER_KEYS and ORDER_KEYS[strategy][position] != default
        ]
        if not cases and default == "0":
            continue
        whens = " ".join(f"WHEN {_literal(name)} THEN {expr}" for name, expr in cases)
        keys.append(f"(CASE x.key {whens} ELSE {default} END)::float8 DESC" if cases else f"{default} DESC")
    return ", ".join(keys)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _allowed_filter(rules: Rules, type_column: str) -> str:
    """SQL condition on ``x.key``: the attributes the group's subject type allows."""
    cases = []
    for type_id, (_, schema) in sorted(rules.subject_types.items()):
        allowed = allowed_attributes(schema)
        if allowed is not None:
            names = ", ".join(_literal(n) for n in sorted(allowed)) or "NULL"
            cases.append(f"WHEN {int(type_id)} THEN x.key IN ({names})")
    if not cases:
        return "true"
    return f"(CASE {type_column} {' '.join(cases)} ELSE true END)"


def _known_types(rules: Rules, cursor) -> None:
    cursor.execute(
        "SELECT DISTINCT s.subject_type_id FROM identity_sourcesystem s WHERE s.subject_type_id <> ALL(%s::bigint[])",
        [list(rules.subject_types)],
    )
    missing = [row[0] for row in cursor.fetchall()]
    for subject_type in SubjectType.objects.filter(id__in=missing):
        rules.subject_types[subject_type.id] = (subject_type.code, subject_type.attribute_schema)


EMPTY_VALUES = "('null'::jsonb, '\"\"'::jsonb, '[]'::jsonb, '{}'::jsonb)"


def _picked(names: list[str]) -> str:
    """SQL: ``r.raw`` cut to the keys ``names`` whose value is not empty, as one scalar expression.

    ``jsonb_build_object`` of the keys minus the empty ones: about a third of the time of
    ``jsonb_each`` and ``jsonb_object_agg`` (one aggregate per row) for the same object."""
    if not names:
        return "'{}'::jsonb"
    objects = " || ".join(  # a function takes at most 100 arguments: 40 pairs per jsonb_build_object
        "jsonb_build_object(" + ", ".join(f"{_literal(n)}, r.raw->{_literal(n)}" for n in names[i : i + 40]) + ")"
        for i in range(0, len(names), 40)
    )
    empty = ", ".join(
        f"CASE WHEN coalesce(r.raw->{_literal(n)}, 'null') IN {EMPTY_VALUES} THEN {_literal(n)} END" for n in names
    )
    return f"(({objects}) - array_remove(ARRAY[{empty}]::text[], NULL))"


def _single_attributes(rules: Rules) -> str:
    """SQL: the golden record of a group of one record ``r`` (source ``s``): its non-empty values
    of the attributes its subject type allows (every value when the schema allows any key)."""
    general = (
        "(SELECT coalesce(jsonb_object_agg(x.key, x.value), '{}') FROM jsonb_each(r.raw) x"
        f" WHERE {EMPTY} AND {_allowed_filter(rules, 's.subject_type_id')})"
    )
    cases = []
    for type_id, (_, schema) in sorted(rules.subject_types.items()):
        allowed = allowed_attributes(schema)
        if allowed is not None:
            cases.append(f"WHEN {int(type_id)} THEN {_picked(sorted(allowed))}")
    return f"(CASE s.subject_type_id {' '.join(cases)} ELSE {general} END)" if cases else general


def _fill(cursor, rules: Rules) -> None:
    """The golden table: groups of one record straight from their row, others by survivorship."""
    cursor.execute(
        "INSERT INTO tw_identity_golden (label, subject_id, is_new, type_id, attributes, fallback)"
        f" SELECT g.label, coalesce(gr.subject_id, {NEXT_ID}), gr.subject_id IS NULL, s.subject_type_id,"
        f" {_single_attributes(rules)},"
        " CASE WHEN jsonb_typeof(r.raw->'name') = 'string' THEN nullif(r.raw->>'name', '') END"
        " FROM tw_stage_identity_single g JOIN identity_sourcerecord r ON r.id = g.record_id"
        " JOIN identity_sourcesystem s ON s.id = r.source_id"
        " LEFT JOIN tw_stage_identity_group gr ON gr.label = g.label"
    )
    frequent = "most_frequent" in rules.strategies.values()
    count = ", count(*) OVER (PARTITION BY e.label, e.key, e.value) AS n" if frequent else ""
    order = _order(rules.strategies)
    cursor.execute(
        # The group's type is its first record's (as in golden_items); then every member's values.
        "WITH t AS (SELECT DISTINCT ON (g.label) g.label, s.subject_type_id AS type_id,"
        "  gr.subject_id FROM tw_stage_identity_member g"
        "  JOIN identity_sourcerecord r ON r.id = g.record_id JOIN identity_sourcesystem s ON s.id = r.source_id"
        "  LEFT JOIN tw_stage_identity_group gr ON gr.label = g.label ORDER BY g.label, g.record_id),"
        " m AS (SELECT g.label, r.id::float8 AS id, s.trust_rank::float8 AS trust,"
        "  extract(epoch FROM r.created_at)::float8 AS c, extract(epoch FROM r.updated_at)::float8 AS u,"
        "  r.raw, t.type_id FROM tw_stage_identity_member g JOIN t ON t.label = g.label"
        "  JOIN identity_sourcerecord r ON r.id = g.record_id JOIN identity_sourcesystem s ON s.id = r.source_id),"
        " e AS (SELECT m.label, m.id, m.trust, m.c, m.u, x.key, x.value FROM m CROSS JOIN LATERAL jsonb_each(m.raw) x"
        f"  WHERE {EMPTY} AND {_allowed_filter(rules, 'm.type_id')}),"
        f" f AS (SELECT e.*{count} FROM e),"
        " w AS (SELECT DISTINCT ON (x.label, x.key) x.label, x.key, x.value FROM f x"
        f"  ORDER BY x.label, x.key, {order}),"
        " a AS (SELECT label, jsonb_object_agg(key, value) AS attributes FROM w GROUP BY label),"
        " n AS (SELECT m.label, (array_agg(m.raw->>'name' ORDER BY m.id) FILTER"
        "  (WHERE jsonb_typeof(m.raw->'name') = 'string' AND m.raw->>'name' <> ''))[1] AS fallback"
        "  FROM m GROUP BY m.label)"
        " INSERT INTO tw_identity_golden (label, subject_id, is_new, type_id, attributes, fallback)"
        f" SELECT t.label, coalesce(t.subject_id, {NEXT_ID}), t.subject_id IS NULL, t.type_id,"
        " coalesce(a.attributes, '{}'), n.fallback"
        " FROM t LEFT JOIN a ON a.label = t.label LEFT JOIN n ON n.label = t.label"
    )


NAME_SQL = (
    "left(CASE WHEN jsonb_typeof(g.attributes->'name') = 'string' AND g.attributes->>'name' <> ''"
    " THEN g.attributes->>'name' ELSE coalesce(g.fallback, '') END, 255)"
)


def _check(cursor, rules: Rules) -> bool:
    """Run each type's schema over the golden records; patch the rejected ones and odd names.

    ``display_name`` follows golden._name: a name that is not a string but is truthy (a
    number, a list) is spelled by Python's ``str``, so those rows are patched too.
    """
    fixes: list[dict] = []
    for type_id, (_, schema) in rules.subject_types.items():
        validator = validator_for(schema)
        if validator is None:
            cursor.execute(
                "SELECT g.label, g.attributes::text, g.fallback FROM tw_identity_golden g WHERE g.type_id = %s"
                " AND jsonb_typeof(g.attributes->'name') NOT IN ('string', 'null')",
                [type_id],
            )
        else:
            cursor.execute(
                "SELECT g.label, g.attributes::text, g.fallback FROM tw_identity_golden g WHERE g.type_id = %s",
                [type_id],
            )
        for label, text, fallback in cursor.fetchall():
            attributes = orjson.loads(text)
            valid = _valid(dict(attributes), schema) if validator is not None else attributes
            name = valid.get("name")
            if valid == attributes and (name is None or (type(name) is str) or not name):
                continue
            fixes.append({"label": label, "a": valid, "n": str(name or fallback or "")[:255]})
    if fixes:
        cursor.execute(
            "UPDATE tw_identity_golden g SET attributes = f.a"
            " FROM jsonb_to_recordset(%s::jsonb) AS f(label bigint, a jsonb, n text) WHERE g.label = f.label;"
            " CREATE TEMP TABLE IF NOT EXISTS tw_identity_golden_name (label bigint, name text);"
            " TRUNCATE tw_identity_golden_name;"
            " INSERT INTO tw_identity_golden_name SELECT f.label, f.n"
            " FROM jsonb_to_recordset(%s::jsonb) AS f(label bigint, n text)",
            [orjson.dumps(fixes).decode(), orjson.dumps([{"label": f["label"], "n": f["n"]} for f in fixes]).decode()],
        )
    return bool(fixes)


def write_golden(
    *,
    labels: np.ndarray,
    records: np.ndarray,
    changed: np.ndarray,
    chosen: dict[int, int],
    rules: Rules,
    actor,
    correlation_id: uuid.UUID,
) -> dict[int, int]:
    """Write the golden record of every group in ``changed`` (labels); returns label -> new subject id.

    ``labels`` and ``records`` are aligned; ``chosen`` maps a label to the existing OneID it keeps.
    """
    in_changed = np.isin(labels, changed)
    member_labels, member_records = labels[in_changed], records[in_changed]
    sizes = np.bincount(member_labels - member_labels.min()) if len(member_labels) else np.zeros(0, np.int64)
    single = sizes[member_labels - member_labels.min()] == 1 if len(member_labels) else np.zeros(0, bool)
    wanted = set(changed.tolist())
    kept = np.array(sorted(x for x in chosen if x in wanted), dtype=np.int64)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL work_mem = '256MB'")
        _stages(cursor)
        _known_types(rules, cursor)
        copy_in(cursor, "tw_stage_identity_single", member_records[single], member_labels[single])
        copy_in(cursor, "tw_stage_identity_member", member_records[~single], member_labels[~single])
        copy_in(cursor, "tw_stage_identity_group", kept, np.array([chosen[int(x)] for x in kept], dtype=np.int64))
        cursor.execute("ANALYZE tw_stage_identity_single, tw_stage_identity_member, tw_stage_identity_group")
        _fill(cursor, rules)
        patched = _check(cursor, rules)
        return _write_subjects(cursor, patched, actor, correlation_id)


def _write_subjects(cursor, patched: bool, actor, correlation_id) -> dict[int, int]:
    name = f"coalesce(p.name, {NAME_SQL})" if patched else NAME_SQL
    join = " LEFT JOIN tw_identity_golden_name p ON p.label = g.label" if patched else ""
    now = timezone.now()
    cursor.execute(
        "INSERT INTO subjects_subject (id, subject_type_id, source, external_id, display_name, attributes,"
        " created_at, updated_at)"
        f" SELECT g.subject_id, g.type_id, %s, {EXTERNAL_ID}, {name}, g.attributes, %s, %s"
        f" FROM tw_identity_golden g{join} WHERE g.is_new ORDER BY g.subject_id",
        [ONEID_SOURCE, now, now],
    )
    created_count = cursor.rowcount
    cursor.execute(
        f"UPDATE subjects_subject s SET display_name = x.name, attributes = x.attributes, updated_at = %s"
        f" FROM (SELECT g.subject_id, {name} AS name, g.attributes FROM tw_identity_golden g{join}"
        "  WHERE NOT g.is_new) x"
        " WHERE s.id = x.subject_id AND (s.display_name, s.attributes) IS DISTINCT FROM (x.name, x.attributes)"
        " RETURNING s.id",
        [now],
    )
    updated = sorted(row[0] for row in cursor.fetchall())
    cursor.execute(
        "INSERT INTO identity_oneid (subject_id, status, created_at, updated_at)"
        " SELECT subject_id, 'active', %s, %s FROM tw_identity_golden WHERE is_new ORDER BY subject_id",
        [now, now],
    )
    cursor.execute("SELECT label, subject_id FROM tw_identity_golden WHERE is_new")
    created = dict(cursor.fetchall())
    cursor.execute("SELECT count(*) FROM tw_identity_golden WHERE NOT is_new")
    unchanged = cursor.fetchone()[0] - len(updated)
    assert created_count == len(created)
    bulk_write_record(
        actor=actor,
        action="identity.oneids_upserted",
        object_type="subjects.subject",
        counts={"created": len(created), "updated": len(updated), "unchanged": unchanged},
        ids=sorted(set(created.values()) | set(updated)),
        correlation_id=correlation_id,
    )
    return created
