import io

import pytest
from django.core.management import call_command

from audit.models import DomainEvent
from identity.demo import load_demo
from identity.models import SourceRecord

from .helpers import partition

pytestmark = pytest.mark.django_db


def test_demo_identities_are_built_and_idempotent():
    call_command("loaddemo", members=200, stdout=io.StringIO())
    out = io.StringIO()
    load_demo(stdout=out)
    assert "OneID demo" in out.getvalue()
    groups = partition()
    assert SourceRecord.objects.filter(assignment=None).count() == 0
    # the 10th member of a group is the first person again in another brand's CRM: one OneID, two brands
    two_brands = [g for g in groups if len({s for s, _ in g if s.startswith("crm_")}) == 2]
    assert len(two_brands) >= 15
    assert any(
        {s for s, _ in g} >= {"crm_glow", "wecom_group", "oa_glow"} or {s for s, _ in g} >= {"crm_lumi", "oa_glow"}
        for g in groups
    )
    junk = [g for g in groups if any(e.startswith("JUNK") for _, e in g)]
    assert len(junk) == 3 and all(len(g) == 1 for g in junk)
    family = [g for g in groups if any(e.startswith("FAM") for _, e in g)]
    assert len(family) == 4
    events = DomainEvent.objects.count()
    load_demo(stdout=io.StringIO())
    assert DomainEvent.objects.count() == events
    assert partition() == groups
