"""Property tests: the compiled SQL agrees with the Python evaluator on generated worlds and rules.

Also: a full recompute equals the union of incremental recomputes over any chunking;
history replays to the current values; a recompute with nothing to change writes nothing.
Each example runs in a rolled-back transaction on the test database (PostgreSQL or SQLite).
"""

from __future__ import annotations

import math
import random

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tags.models import TagValue, TagValueChange
from tags.rules.evaluator import evaluate
from tags.services.recompute import recompute_all, recompute_subjects

from .engine import Engine
from .rulegen import NOW, member_attributes, rules, worlds

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Rollback(Exception):
    pass


@pytest.fixture
def engine(db):
    return Engine()


def same(stored: dict, expected: dict) -> bool:
    if stored.keys() != expected.keys():
        return False
    for key, value in expected.items():
        got = stored[key]
        if isinstance(value, float) or isinstance(got, float):
            if not math.isclose(got, value, rel_tol=1e-12, abs_tol=1e-12):
                return False
        elif got != value:
            return False
    return True


def run_in_rollback(fn):
    try:
        with transaction.atomic():
            fn()
            raise Rollback
    except Rollback:
        pass


def tuple_versions(tag) -> list:
    """PostgreSQL: (subject_id, xmin) of the tag's rows — changes if a row was rewritten at all."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT subject_id, xmin::text FROM tags_tagvalue WHERE tag_id = %s ORDER BY 1", [tag.pk])
        return cursor.fetchall()


@SETTINGS
@given(data=worlds(), document=rules, chunk=st.integers(1, 4))
def test_compiled_sql_equals_the_python_evaluation(engine, data, document, chunk):
    def body():
        members, _ = engine.load(data, NOW)
        tag = engine.target_for(document)
        engine.activate(tag, document)
        recompute_all(tag, chunk_size=chunk, now=NOW)

        world = engine.world(NOW)
        rule = engine.rule_of(tag)
        expected = {m: v for m in members if (v := evaluate(rule, m, world)) is not None}
        assert same(engine.stored(tag), expected), (document, engine.stored(tag), expected)

        changes = TagValueChange.objects.count()
        versions = tuple_versions(tag) if connection.vendor == "postgresql" else None
        assert recompute_all(tag, chunk_size=chunk, now=NOW) == 0
        assert recompute_subjects(tag, members, now=NOW) == 0
        assert TagValueChange.objects.count() == changes
        if versions is not None:
            assert tuple_versions(tag) == versions

    run_in_rollback(body)


@SETTINGS
@given(
    data=worlds(),
    document=rules,
    seed=st.integers(0, 2**32),
    edits=st.lists(st.tuples(st.integers(0, 6), member_attributes), max_size=4),
)
def test_full_equals_union_of_incremental_chunks_and_history_replays(engine, data, document, seed, edits):
    def body():
        members, _ = engine.load(data, NOW)
        tag = engine.target_for(document)
        engine.activate(tag, document)
        recompute_all(tag, chunk_size=50, now=NOW)
        full = engine.stored(tag)

        TagValueChange.objects.filter(tag=tag).delete()
        TagValue.objects.filter(tag=tag).delete()
        shuffled = members[:]
        random.Random(seed).shuffle(shuffled)
        cut = sorted(random.Random(seed + 1).sample(range(1, len(shuffled) + 1), k=min(2, len(shuffled))))
        for low, high in zip([0, *cut], [*cut, len(shuffled)], strict=False):
            recompute_subjects(tag, shuffled[low:high], now=NOW)
        assert engine.stored(tag) == full
        assert engine.replayed(tag) == full

        from subjects.models import Subject

        touched = []
        for index, attributes in edits:
            if index < len(members):
                Subject.objects.filter(pk=members[index]).update(
                    attributes={k: v for k, v in attributes.items() if v is not None}
                )
                touched.append(members[index])
        recompute_subjects(tag, touched, now=NOW)
        assert engine.replayed(tag) == engine.stored(tag)
        world = engine.world(NOW)
        rule = engine.rule_of(tag)
        expected = {m: v for m in members if (v := evaluate(rule, m, world)) is not None}
        assert same(engine.stored(tag), expected)

    run_in_rollback(body)
