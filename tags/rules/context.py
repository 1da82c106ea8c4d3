"""What a rule may refer to: attribute schemas, tags and relationship types, read once per parse.

Parsing is pure over a context; ``DbContext`` answers from the database with one
query per kind of lookup and caches, tests can use it or pass their own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from .nodes import BOOLEAN, DATE, LIST, NUMBER, STRING

KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


@dataclass(frozen=True)
class TagInfo:
    id: int
    code: str
    subject_type_id: int
    value_type: str
    options: tuple[str, ...]
    status: str


@dataclass(frozen=True)
class RelationshipInfo:
    id: int
    code: str
    from_type_id: int
    to_type_id: int


class Context(Protocol):
    def attribute_type(self, subject_type_id: int, path: tuple[str, ...]) -> str | None: ...

    def tag(self, subject_type_id: int, code: str) -> TagInfo | None: ...

    def relationship(self, code: str) -> RelationshipInfo | None: ...

    def type_code(self, subject_type_id: int) -> str: ...


_TAG_TYPE = {
    "enum": STRING,
    "text": STRING,
    "number": NUMBER,
    "boolean": BOOLEAN,
    "date": DATE,
    "multi_enum": LIST,
}


def tag_value_type(value_type: str) -> str:
    """The rule-language type of a tag's values."""
    return _TAG_TYPE[value_type]


def schema_leaf_type(schema: Mapping, path: tuple[str, ...]) -> str | None:
    """The type of the attribute at ``path`` in a JSON Schema, or None when it is not declared."""
    node: object = schema
    for key in path:
        if not isinstance(node, Mapping):
            return None
        properties = node.get("properties")
        if not isinstance(properties, Mapping) or key not in properties:
            return None
        node = properties[key]
    return _schema_type(node) if isinstance(node, Mapping) else None


def _schema_type(node: Mapping) -> str | None:
    declared = node.get("type")
    if isinstance(declared, list):
        declared = next((t for t in declared if t != "null"), None)
    if declared in ("number", "integer"):
        return NUMBER
    if declared == "string":
        return DATE if node.get("format") == "date" else STRING
    if declared == "boolean":
        return BOOLEAN
    if declared == "array":
        return LIST
    enum = node.get("enum")
    if declared is None and isinstance(enum, list) and enum:
        if all(isinstance(v, str) for v in enum):
            return STRING
        if all(isinstance(v, bool) for v in enum):
            return BOOLEAN
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in enum):
            return NUMBER
    return None


class DbContext:
    """A context backed by the database, cached for the lifetime of one parse."""

    def __init__(self) -> None:
        self._schemas: dict[int, tuple[str, Mapping]] = {}
        self._tags: dict[int, dict[str, TagInfo]] = {}
        self._relationships: dict[str, RelationshipInfo | None] = {}

    def _type(self, subject_type_id: int) -> tuple[str, Mapping]:
        if subject_type_id not in self._schemas:
            from subjects.models import SubjectType

            row = SubjectType.objects.filter(pk=subject_type_id).values_list("code", "attribute_schema").first()
            self._schemas[subject_type_id] = row or ("?", {})
        return self._schemas[subject_type_id]

    def attribute_type(self, subject_type_id: int, path: tuple[str, ...]) -> str | None:
        return schema_leaf_type(self._type(subject_type_id)[1], path)

    def type_code(self, subject_type_id: int) -> str:
        return self._type(subject_type_id)[0]

    def tag(self, subject_type_id: int, code: str) -> TagInfo | None:
        if subject_type_id not in self._tags:
            from tags.models import TagDefinition, TagOption

            rows = TagDefinition.objects.filter(subject_type_id=subject_type_id).values_list(
                "id", "code", "value_type", "status"
            )
            options: dict[int, list[str]] = {}
            for tag_id, value in TagOption.objects.filter(tag__subject_type_id=subject_type_id).values_list(
                "tag_id", "value"
            ):
                options.setdefault(tag_id, []).append(value)
            self._tags[subject_type_id] = {
                c: TagInfo(i, c, subject_type_id, vt, tuple(options.get(i, ())), st) for i, c, vt, st in rows
            }
        return self._tags[subject_type_id].get(code)

    def relationship(self, code: str) -> RelationshipInfo | None:
        if code not in self._relationships:
            from subjects.models import RelationshipType

            row = RelationshipType.objects.filter(code=code).values_list("id", "from_type_id", "to_type_id").first()
            self._relationships[code] = RelationshipInfo(row[0], code, row[1], row[2]) if row else None
        return self._relationships[code]
