import pytest

from identity.golden import RecordView, golden_record
from identity.normalize import NORMALIZERS, NormalizeError

PHONE = NORMALIZERS["phone"]


def phone(value):
    return PHONE.finish(PHONE.clean(value))


@pytest.mark.parametrize(
    "raw",
    ["13812345678", "138 1234 5678", "138-1234-5678", "+8613812345678", "+86 138 1234 5678", "008613812345678",
     "86 13812345678", "１３８１２３４５６７８", "＋８６ １３８－１２３４－５６７８", "(+86) 138.1234.5678", 13812345678],
)  # fmt: skip
def test_chinese_mobiles_in_every_spelling(raw):
    assert phone(raw) == "+8613812345678"


def test_other_numbers_go_through_phonenumbers():
    assert phone("+1 650-253-0000") == "+16502530000"
    assert phone("010 6552 9988") == "+861065529988"  # a Beijing landline


@pytest.mark.parametrize("raw", ["12345", "abc", "", "+86 1381234567", True, 1.5, None, "1" * 600])
def test_malformed_phones_are_rejected(raw):
    with pytest.raises(NormalizeError):
        phone(raw)


def test_email_and_tokens():
    email = NORMALIZERS["email"]
    assert email.finish(email.clean("  Fang.Wang+shop@GMail.com ")) == "fangwang@gmail.com"
    assert email.finish(email.clean("Li@QQ.com")) == "li@qq.com"
    with pytest.raises(NormalizeError):
        email.finish(email.clean("not-an-email"))
    token = NORMALIZERS["token"]
    assert token.finish(token.clean(" oAbC123 ")) == "oAbC123"
    with pytest.raises(NormalizeError):
        token.finish(token.clean("has space"))
    text = NORMALIZERS["text"]
    assert text.finish(text.clean("上海市  南京西路，１２３号")) == "上海市 南京西路 123号"


def view(id_, trust, updated, raw, created=None):
    return RecordView(id_, trust, created if created is not None else id_, updated, raw)


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "city": {"type": "string"}, "level": {"enum": ["gold", "vip"]}},
    "additionalProperties": False,
}


def test_golden_record_strategies_and_schema():
    records = [
        view(1, 90, 10, {"name": "王芳", "city": "上海", "level": "gold", "openid": "x"}),
        view(2, 50, 30, {"name": "Wang Fang", "city": "北京", "level": "platinum"}),
        view(3, 40, 20, {"name": "", "city": "北京"}),
    ]
    attributes, name = golden_record(records, SCHEMA, {})
    assert attributes == {"name": "王芳", "city": "上海", "level": "gold"} and name == "王芳"
    attributes, _ = golden_record(records, SCHEMA, {"city": "most_frequent", "name": "most_recent"})
    assert attributes["city"] == "北京" and attributes["name"] == "Wang Fang"
    attributes, _ = golden_record(records, SCHEMA, {"level": "most_recent"})
    assert "level" not in attributes  # 'platinum' fails the schema and is dropped
    attributes, _ = golden_record(records, SCHEMA, {"city": "first_non_empty"})
    assert attributes["city"] == "上海"
