"""The parsed active rule of a tag, cached per rule row (rule versions are immutable)."""

from __future__ import annotations

import functools

from common.errors import ServiceError
from tags.models import TagDefinition
from tags.rules import nodes as n
from tags.rules.context import DbContext, TagInfo
from tags.rules.parse import RuleInvalid, parse_rule


def tag_info(tag: TagDefinition, options: tuple[str, ...] | None = None) -> TagInfo:
    if options is None:
        options = tuple(tag.options.values_list("value", flat=True))
    return TagInfo(tag.pk, tag.code, tag.subject_type_id, tag.value_type, options, tag.status)


def parse_for(tag: TagDefinition, document: object) -> n.Rule:
    """Parse ``document`` as a rule of ``tag``; ServiceError with the tree-pointing ItemErrors."""
    try:
        return parse_rule(document, tag=tag_info(tag), ctx=DbContext())
    except RuleInvalid as invalid:
        raise ServiceError(f'The rule of "{tag.code}" is invalid.', invalid.errors) from None


@functools.lru_cache(maxsize=512)
def _parsed(rule_id: int, tag_id: int, document_json: str) -> n.Rule:
    import orjson

    tag = TagDefinition.objects.select_related("subject_type").get(pk=tag_id)
    return parse_for(tag, orjson.loads(document_json))


def active_rule(tag: TagDefinition) -> n.Rule | None:
    """The active rule of ``tag`` as a tree, or None when it has none (assigned tags, drafts)."""
    if tag.rule_id is None:
        return None
    import orjson

    rule = tag.rule
    return _parsed(rule.pk, tag.pk, orjson.dumps(rule.document, option=orjson.OPT_SORT_KEYS).decode())


def forget_cached_rules() -> None:
    """Options or referenced tags changed: parse again on next use."""
    _parsed.cache_clear()
