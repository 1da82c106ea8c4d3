"""``loaddemo`` end to end: subjects, OneID identities, tags and events; a second run writes nothing."""

from io import StringIO

import pytest
from django.core.management import call_command

from audit.models import DomainEvent
from identity.models import SourceRecord
from subjects.models import Relationship, Subject
from tags.models import Event, TagDefinition, TagValue, TagValueChange

pytestmark = pytest.mark.django_db


def counts() -> dict[str, int]:
    return {
        "subjects": Subject.objects.count(),
        "relationships": Relationship.objects.count(),
        "source_records": SourceRecord.objects.count(),
        "events": Event.objects.count(),
        "tag_values": TagValue.objects.count(),
        "tag_history": TagValueChange.objects.count(),
        "domain_events": DomainEvent.objects.count(),
    }


def test_full_demo_has_every_layer_and_reruns_write_nothing():
    call_command("loaddemo", members=100, stdout=StringIO())
    first = counts()
    assert first["source_records"] > 0
    assert first["events"] > 0
    assert first["tag_values"] > 0
    assert TagDefinition.objects.filter(computation="rule", values__isnull=False).exists()

    out = StringIO()
    call_command("loaddemo", members=100, stdout=out)
    assert counts() == first, out.getvalue()
