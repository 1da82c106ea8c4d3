"""Fixtures of the tag usage tests: a few tags of one member type with values and history."""

from __future__ import annotations

import pytest

from tests.factories import SubjectFactory, SubjectTypeFactory
from tests.factories.tags import TagDefinitionFactory, TagGroupFactory


class UsageWorld:
    def __init__(self, tag_count: int = 5, subject_count: int = 3):
        self.member_type = SubjectTypeFactory(code="member", category="customer")
        self.group = TagGroupFactory(subject_type=self.member_type, code="profile")
        self.tags = [TagDefinitionFactory(group=self.group, code=f"t{i}", options=["a", "b"]) for i in range(tag_count)]
        self.subjects = [SubjectFactory(subject_type=self.member_type) for _ in range(subject_count)]


@pytest.fixture
def usage_world(db):
    return UsageWorld()
