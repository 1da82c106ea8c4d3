"""The parsed active propagation of a tag, cached per rule row (rule versions are immutable)."""

from __future__ import annotations

import functools

import orjson

from common.errors import ServiceError
from tags.models import Computation, TagDefinition, TagStatus
from tags.rules.context import DbContext
from tags.services.compiled import tag_info

from .document import Propagation, PropagationInvalid, parse_propagation


def parse_for(tag: TagDefinition, document: object) -> Propagation:
    """Parse ``document`` as the propagation of ``tag``; ServiceError with errors pointing into it."""
    try:
        return parse_propagation(document, tag=tag_info(tag), ctx=DbContext())
    except PropagationInvalid as invalid:
        raise ServiceError(f'The propagation of "{tag.code}" is invalid.', invalid.errors) from None


@functools.lru_cache(maxsize=512)
def _parsed(rule_id: int, tag_id: int, document_json: str) -> Propagation:
    tag = TagDefinition.objects.get(pk=tag_id)
    return parse_for(tag, orjson.loads(document_json))


def active_propagation(tag: TagDefinition) -> Propagation | None:
    """The active propagation of a live propagated tag, or None."""
    if tag.computation != Computation.PROPAGATED or tag.status == TagStatus.ARCHIVED or tag.rule_id is None:
        return None
    rule = tag.rule
    return _parsed(rule.pk, tag.pk, orjson.dumps(rule.document, option=orjson.OPT_SORT_KEYS).decode())


def forget() -> None:
    _parsed.cache_clear()
