"""Ingest's bulk-load paths: the all-new COPY of records and the text COPY of identifiers."""

import pytest

from identity.models import Identifier, SourceRecord

from .helpers import push

pytestmark = pytest.mark.django_db


def test_values_with_copy_special_characters_are_stored_exactly(sources):
    push(
        ("oa_a", "X1", {"openid": "o\\1\\N", "unionid": "u\\t"}),
        ("crm_a", "X2", {"name": "王\\芳", "email": "a\\b@qq.com"}),
    )
    assert set(Identifier.objects.filter(status="link").values_list("value", flat=True)) >= {
        "o\\1\\N",
        "u\\t",
        "a\\b@qq.com",
    }
    assert Identifier.objects.get(identifier_type__code="name").value == "王\\芳"


def test_a_large_all_new_batch_then_a_mixed_one(sources):
    first = push(*[("crm_a", f"L{i}", {"email": f"l{i}@qq.com"}) for i in range(250)], resolve=False)
    assert {r.status for r in first.results} == {"created"}
    stored = dict(SourceRecord.objects.values_list("id", "external_id"))
    assert [stored[r.id] for r in first.results] == [f"L{i}" for i in range(250)]
    odd = push(*[("crm_b", f"T\\{i}\t", {"note": f"a\\b\n{i}"}) for i in range(201)], resolve=False).results[5]
    assert SourceRecord.objects.filter(id=odd.id).values_list("external_id", "raw").get() == (
        "T\\5\t",
        {"note": "a\\b\n5"},
    )
    items = [("crm_a", f"L{i}", {"email": f"l{i}@qq.com"}) for i in range(250)]
    items[3] = ("crm_a", "L3", {"email": "changed@qq.com"})
    items.append(("crm_a", "L250", {"email": "new@qq.com"}))
    second = push(*items, resolve=False)
    assert [r.status for r in second.results].count("unchanged") == 249
    assert (second.results[3].status, second.results[250].status) == ("updated", "created")
    assert Identifier.objects.filter(record_id=first.results[3].id).get().value == "changed@qq.com"
    assert Identifier.objects.count() == 251
