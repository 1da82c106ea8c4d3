"""Tag groups, tag definitions, options and rule versions: validated writes with audit events.

A rule version is immutable once saved; changing a rule saves a new version. Activating
a version re-validates it against the current schema and tags, replaces the tag's
rule dependencies (refusing a cycle, named), and queues a recompute after commit.

Tag access (``tags.access``) is checked here, so the API and the admin refuse alike: changing a
group or a tag needs edit access to it (403), a group's brand must be one the actor holds, and a
rule or propagation document may only read tags its author may use (the error names them).
``actor=None`` is the system (demo loads): not checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from audit.services import domain_event_record
from common.errors import ConflictError, ItemError, ServiceError
from subjects.access import access_for
from tags import access
from tags.models import (
    Computation,
    TagDefinition,
    TagDependency,
    TagGroup,
    TagOption,
    TagRule,
    TagStatus,
    ValueType,
)

from .compiled import forget_cached_rules, parse_for
from .graph import check_no_cycle, replace_dependencies

GROUP_FIELDS = (
    "subject_type", "code", "name", "description", "position", "brand", "view_policy", "use_policy", "edit_policy",
)  # fmt: skip
TAG_FIELDS = ("group", "code", "name", "description", "value_type", "unit", "owner", "status", "computation")
OPTION_VALUE_TYPES = (ValueType.ENUM, ValueType.MULTI_ENUM)


def _audit(actor, action: str, obj, summary: Mapping) -> None:
    domain_event_record(
        actor=actor, action=action, object_type=type(obj).__name__.lower(), row_count=1, summary=summary
    )


def _clean(instance) -> None:
    try:
        instance.full_clean(validate_unique=True)
    except ValidationError as exc:
        errors = [ItemError(None, name, message) for name, messages in exc.message_dict.items() for message in messages]
        raise ServiceError(errors[0].message, errors) from None


def _check_group_brand(actor, group: TagGroup) -> None:
    """A non-HQ actor keeps groups inside their brands: no group-wide group, no other brand's."""
    if actor is None or access.is_hq(actor):
        return
    brands = access_for(actor).brand_ids
    if brands is None or (group.brand_id is not None and group.brand_id in brands):
        return
    message = "Only HQ keeps group-wide tag groups; choose one of your brands."
    if group.brand_id is not None:
        message = "You may not give a tag group to a brand outside your scope."
    raise access.TagForbidden.single("brand", message, "out_of_scope")


def tag_group_save(*, actor, data: Mapping, instance: TagGroup | None = None) -> TagGroup:
    if instance is not None:
        access.require_editable_group(actor, instance)
    group = instance or TagGroup()
    if instance and "subject_type" in data and data["subject_type"] != instance.subject_type and instance.tags.exists():
        raise ServiceError.single("subject_type", "A group that holds tags cannot move to another subject type.")
    for name in GROUP_FIELDS:
        if name in data:
            setattr(group, name, data[name])
    if instance is None or "brand" in data:
        _check_group_brand(actor, group)
    _clean(group)
    with transaction.atomic():
        group.save()
        _audit(actor, "tags.group_saved", group, {"id": group.pk, "code": group.code})
    return group


def tag_save(
    *,
    actor,
    data: Mapping,
    options: Sequence[tuple[str, str]] | None = None,
    instance: TagDefinition | None = None,
) -> TagDefinition:
    """Create or update a tag definition; ``options`` ([(value, label)], in display order) replaces them."""
    if instance is not None:
        access.require_editable(actor, instance)
    tag = instance or TagDefinition()
    old_type = instance.value_type if instance else None
    old_group = instance.group_id if instance else None
    for name in TAG_FIELDS:
        if name in data:
            setattr(tag, name, data[name])
    if tag.group_id:
        tag.subject_type_id = tag.group.subject_type_id
        if tag.group_id != old_group:
            access.require_editable_group(actor, tag.group)
    if instance and old_type != tag.value_type and tag.values.exists():
        raise ServiceError.single("value_type", "The value type of a tag that has values cannot change.")
    if tag.computation == Computation.RULE and not tag.rule_id and tag.status == TagStatus.ACTIVE:
        raise ServiceError.single("status", "A rule tag becomes active when a rule version is activated.")
    _clean(tag)
    errors = _option_errors(tag, options)
    if errors:
        raise ServiceError(errors[0].message, errors)
    with transaction.atomic():
        tag.save()
        if options is not None:
            _replace_options(tag, options)
        forget_cached_rules()
        _audit(actor, "tags.tag_saved", tag, {"id": tag.pk, "code": tag.code, **{k: str(data[k]) for k in data}})
    return tag


def _option_errors(tag: TagDefinition, options) -> list[ItemError]:
    if options is None:
        return []
    if options and tag.value_type not in OPTION_VALUE_TYPES:
        return [ItemError(None, "options", f"Only enum and multi-enum tags have options, not {tag.value_type}.")]
    errors, seen = [], set()
    for i, option in enumerate(options):
        value, label = option if isinstance(option, list | tuple) and len(option) == 2 else (None, None)
        if not isinstance(value, str) or not value or len(value) > 64 or "\x00" in value:
            errors.append(ItemError(i, "options.value", "An option value is 1 to 64 characters."))
        elif value in seen:
            errors.append(ItemError(i, "options.value", f'Option "{value}" appears twice.', "duplicate"))
        if not isinstance(label, str) or len(label) > 200:
            errors.append(ItemError(i, "options.label", "An option label is text up to 200 characters."))
        seen.add(value)
    if tag.pk and not errors:
        kept = {o[0] for o in options}
        used = _used_values(tag) - kept
        if used:
            errors.append(
                ItemError(None, "options", f"Options still in use cannot be removed: {', '.join(sorted(used))}.")
            )
    return errors


def _used_values(tag: TagDefinition) -> set[str]:
    used: set[str] = set()
    for value in tag.values.values_list("value", flat=True).distinct()[:10_000]:
        used.update(value if isinstance(value, list) else [value])
    return used


def _replace_options(tag: TagDefinition, options) -> None:
    TagOption.objects.filter(tag=tag).delete()
    TagOption.objects.bulk_create(
        TagOption(tag=tag, value=value, label=label or value, position=i) for i, (value, label) in enumerate(options)
    )


def rule_save(*, actor, tag: TagDefinition, document: object, activate: bool = False) -> TagRule:
    """Validate ``document`` and store it as the tag's next rule version (optionally activating it)."""
    access.require_editable(actor, tag)
    if tag.status == TagStatus.ARCHIVED:
        raise ServiceError.single("tag", f'Tag "{tag.code}" is archived.', "archived")
    if tag.computation == Computation.PROPAGATED:  # propagation hook: documents of propagated tags
        from tags.propagation.definitions import propagation_save

        check_document_usable(actor, tag, document)
        return propagation_save(actor=actor, tag=tag, document=document, activate=activate)
    if tag.computation != Computation.RULE:
        raise ServiceError.single("computation", f'Tag "{tag.code}" is {tag.computation}, not computed by a rule.')
    rule = parse_for(tag, document)
    access.check_usable(actor, rule.tag_ids)
    check_no_cycle(tag, rule.tag_ids)
    with transaction.atomic():
        version = (TagRule.objects.filter(tag=tag).aggregate(v=Max("version"))["v"] or 0) + 1
        try:
            with transaction.atomic():
                saved = TagRule.objects.create(tag=tag, version=version, document=document, created_by=_user(actor))
        except IntegrityError:
            raise ConflictError.single("rule", "Another version was saved at the same time; try again.") from None
        _audit(actor, "tags.rule_saved", saved, {"tag_id": tag.pk, "version": version})
        if activate:
            activate_rule(actor=actor, tag=tag, version=version)
    return saved


def _user(actor):
    return actor if actor is not None and actor.is_authenticated else None


def document_tag_ids(tag: TagDefinition, document: object) -> frozenset[int]:
    """The tags a rule or propagation document of ``tag`` reads (ServiceError when invalid)."""
    if tag.computation == Computation.PROPAGATED:
        from tags.propagation.active import parse_for as parse_propagation

        return frozenset(parse_propagation(tag, document).tag_ids)
    return frozenset(parse_for(tag, document).tag_ids)


def check_document_usable(actor, tag: TagDefinition, document: object) -> None:
    """Refuse ``document`` when it reads a tag ``actor`` may not use (previews, saves, activations)."""
    if actor is not None and not access.is_hq(actor):
        access.check_usable(actor, document_tag_ids(tag, document))


def activate_rule(*, actor, tag: TagDefinition, version: int, recompute: bool = True) -> TagRule:
    """Make ``version`` the tag's active rule; its values follow by a queued recompute.

    The activating user must be allowed to use what the version reads: a draft saved by
    someone else does not let them put other tags to use.
    """
    access.require_editable(actor, tag)
    if tag.computation == Computation.PROPAGATED:  # propagation hook
        from tags.propagation.definitions import activate_propagation

        _check_saved_usable(actor, tag, version)
        return activate_propagation(actor=actor, tag=tag, version=version, recompute=recompute)
    saved = TagRule.objects.filter(tag=tag, version=version).first()
    if saved is None:
        raise ServiceError.single("version", f'Tag "{tag.code}" has no rule version {version}.', "unknown")
    forget_cached_rules()
    rule = parse_for(tag, saved.document)
    access.check_usable(actor, rule.tag_ids)
    with transaction.atomic():
        TagDefinition.objects.select_for_update().filter(pk=tag.pk).first()
        check_no_cycle(tag, rule.tag_ids)
        replace_dependencies(tag, rule.tag_ids)
        now = timezone.now()
        TagRule.objects.filter(pk=saved.pk).update(activated_at=now)
        tag.rule, tag.version = saved, version
        if tag.status == TagStatus.DRAFT:
            tag.status = TagStatus.ACTIVE
        tag.save(update_fields=["rule", "version", "status", "updated_at"])
        _audit(actor, "tags.rule_activated", saved, {"tag_id": tag.pk, "version": version})
        if recompute:
            from .recompute import start_recompute

            start_recompute(tag, actor=actor)
    return saved


def _check_saved_usable(actor, tag: TagDefinition, version: int) -> None:
    document = TagRule.objects.filter(tag=tag, version=version).values_list("document", flat=True).first()
    if document is not None:
        check_document_usable(actor, tag, document)


def archive(*, actor, tag: TagDefinition) -> TagDefinition:
    """Archive ``tag``; refused while other live tags read it (the message lists them)."""
    access.require_editable(actor, tag)
    dependents = sorted(
        TagDependency.objects.filter(depends_on=tag)
        .exclude(tag__status=TagStatus.ARCHIVED)
        .values_list("tag__code", flat=True)
    )
    if dependents:
        raise ServiceError.single(
            "tag",
            f'Tag "{tag.code}" is read by {", ".join(dependents)}; change or archive them first.',
            "has_dependents",
        )
    with transaction.atomic():
        tag.status = TagStatus.ARCHIVED
        tag.save(update_fields=["status", "updated_at"])
        forget_cached_rules()
        _audit(actor, "tags.tag_archived", tag, {"id": tag.pk, "code": tag.code})
    return tag
