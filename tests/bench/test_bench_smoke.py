"""The bulk_upsert benchmark's functions at a toy size: ours and the COPY reference agree.

No timing is asserted here; speed is the benchmark's business.
"""

import pytest

from bench import bulk_upsert as b

pytestmark = pytest.mark.postgres


@pytest.fixture
def shape(db):
    return b.Shape.toy()


@pytest.fixture
def types(db):
    return b.ensure_types()


def test_ours_and_copy_reference_end_with_the_same_rows(shape, types):
    ours = b.load_ours(shape, chunk=7)
    b.create_reference_tables(b.REF_FK)
    reference = b.load_reference(shape, types, b.REF_FK, block=11)

    assert (ours.subjects, ours.relationships) == (shape.subjects, shape.relationships)
    assert ours.counts == {"created": 210, "updated": 0, "unchanged": 0}
    assert reference.rows_written == 210
    assert b.table_count("subjects_subject") == b.table_count(b.REF_FK.subject) == 60
    assert b.table_count("subjects_relationship") == b.table_count(b.REF_FK.relationship) == 150
    assert b.ids_are_canonical(ours.ids)
    assert b.differing_rows(b.REF_FK) == {"subjects": 0, "relationships": 0}


def test_reference_without_foreign_keys_copies_the_same_rows(shape, types):
    b.create_reference_tables(b.REF_NOFK)
    reference = b.load_reference(shape, types, b.REF_NOFK)

    assert (reference.subjects, reference.relationships) == (60, 150)


def test_upsert_of_unchanged_data_writes_no_rows(shape, types):
    b.load_ours(shape, chunk=50)
    again = b.load_ours(shape, chunk=50, truncate=False)

    assert again.rows_written == 0
    assert again.counts == {"created": 0, "updated": 0, "unchanged": 210}
