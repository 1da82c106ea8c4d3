"""Blocked patterns joined into one alternation match exactly what they match one by one."""

import re

from hypothesis import given
from hypothesis import strategies as st

from identity.extract import Rules, TypeRule, _joined

PATTERNS = [
    r"\+?(\d)\1{6,}",  # a backreference: kept on its own
    r"\+?0+",
    r"(test|demo|noreply|no-reply)[^@]*@.*",
    r".*@(example|test)\.(com|org|net)",
    r"test[_\- ]?(user|account|acct)?[_\-]?\d*",
    r"(?P<d>\d)(?P=d)",  # a named group and its backreference
    r"(a)?(?(1)b|c)",  # a conditional on a group number
    r"x(?i:Y)z",
]
PHONE = TypeRule(1, "phone", "phone", ("phone",), False, 1, None, None, "none")


def _rules() -> Rules:
    compiled = [re.compile(p, re.IGNORECASE) for p in PATTERNS]
    return Rules([PHONE], [], {None: {"null"}}, {1: compiled[:2], None: compiled[2:]})


def _one_by_one(value: str) -> bool:
    return (
        not value
        or value.casefold() == "null"
        or any(re.fullmatch(p, value, re.IGNORECASE) is not None for p in PATTERNS)
    )


@given(st.text(alphabet="0123456789+@.abcxyzXYZ-_testdmoplunr", max_size=16))
def test_joined_patterns_block_what_each_pattern_blocks(value):
    assert _rules().is_blocked(1, value) == _one_by_one(value)


def test_examples():
    rules = _rules()
    for value in ["00000000000", "+0", "33333333333", "test_user1", "a@example.com", "NULL", "11", "ab", "c", "xyZ"]:
        assert rules.is_blocked(1, value), value
    for value in ["13812345678", "a@qq.com", "12", "abc", "xyzz"]:
        assert not rules.is_blocked(1, value), value


def test_unsafe_patterns_are_not_joined():
    assert _joined([re.compile(r"(\d)\1")]) is None
    assert _joined([re.compile(r"(?P<a>x)")]) is None
    assert _joined([re.compile(r"a"), re.compile(r"b")]).fullmatch("b")
