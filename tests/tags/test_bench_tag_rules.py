"""bench/tag_rules at a toy size: ours and the hand-written reference end with the same values.

No timing here; speed is the benchmark's business.
"""

import datetime as dt

import pytest

from bench import tag_rules as b

pytestmark = pytest.mark.postgres

NOW = dt.datetime(2026, 6, 15, 12, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("ours_code", "ref_code", "sql"),
    [("age_band", "age_band_ref", b.AGE_REFERENCE), ("frequency", "frequency_ref", b.FREQ_REFERENCE)],
)
def test_ours_equals_the_reference_and_no_change_writes_nothing(db, ours_code, ref_code, sql):
    subject_type = b.ensure_type()
    b.generate(subject_type.pk, 300, 1500, NOW)
    tags = b.ensure_tags(subject_type)
    ours, ref = tags[ours_code], tags[ref_code]

    assert b.run_ours(ours, now=NOW, chunk_size=70) > 0
    assert b.run_ours(ours, now=NOW, chunk_size=70) == 0
    written = b.run_reference(sql, tag_id=ref.pk, type_id=subject_type.pk, now=NOW)
    assert b.run_reference(sql, tag_id=ref.pk, type_id=subject_type.pk, now=NOW) == 0

    assert b.checksum(ours.pk) == b.checksum(ref.pk)
    assert b.checksum(ours.pk)[0] == written
