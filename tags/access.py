"""Which tags a user may see, use and edit: the one tag-access policy, as SQL filters.

A tag is reached through its group. HQ (``subjects.all_scopes`` or a superuser) reaches every
tag. Anyone else reaches a tag for an action (view / use / edit)

- by the group's policy for that action: ``scope`` lets in every user whose scope covers the
  group's brand (a group-wide group, brand empty, covers everyone); ``granted`` lets in no one
  by policy — or
- by a django-guardian object grant, to the user or one of their groups, on the group (covering
  all its tags) or on the tag itself (refining: one tag without the rest of its group).

Use and edit are narrower than view: a tag is usable or editable only when it is also visible
by policy, or when the grant for that action is held; any grant on a tag makes it visible.
Model permissions (``view_tagvalue``, ``change_tagdefinition``, …) still say what *kind* of
object a user may read or write; the endpoints check those, this module says *which tags*.

Every function returns a queryset or a ``Q`` whose grants are subqueries (guardian's grant
tables joined by real foreign keys), never a list of ids loaded per row, and never guardian's
``get_objects_for_user`` — which returns the whole table for a model-wide permission.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Q, QuerySet

from common.errors import ItemError, ServiceError
from subjects.access import access_for, visible_subject_filter

from .models import (
    AccessPolicy,
    TagDefinition,
    TagDefinitionGroupObjectPermission,
    TagDefinitionUserObjectPermission,
    TagGroup,
    TagGroupGroupObjectPermission,
    TagGroupUserObjectPermission,
)

VIEW, USE, EDIT = "view", "use", "edit"
_CODENAMES = {VIEW: ("view", "use", "change"), USE: ("use",), EDIT: ("change",)}
_POLICY_FIELDS = {VIEW: ("view_policy",), USE: ("view_policy", "use_policy"), EDIT: ("view_policy", "edit_policy")}


def is_hq(user) -> bool:
    """HQ sees everything: the same test as the subject scope (``all_scopes`` or superuser)."""
    return access_for(user).unrestricted


def _active(user) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False) and user.is_active)


def _brand_q(user, prefix: str) -> Q:
    """The group's brand is covered by the user's scopes (a group-wide group always is)."""
    brands = access_for(user).brand_ids
    if brands is None:
        return Q()
    return Q(**{f"{prefix}brand__isnull": True}) | Q(**{f"{prefix}brand_id__in": sorted(brands)})


def _policy_q(user, action: str, prefix: str) -> Q:
    policies = Q(**{f"{prefix}{name}": AccessPolicy.SCOPE for name in _POLICY_FIELDS[action]})
    return policies & _brand_q(user, prefix)


def _grants(user_model, group_model, user, codenames: Iterable[str]):
    """Ids of the objects on which ``user`` or one of their groups holds one of ``codenames``."""
    codenames = sorted(codenames)
    direct = user_model.objects.filter(user_id=user.pk, permission__codename__in=codenames)
    through_groups = group_model.objects.filter(group__user=user.pk, permission__codename__in=codenames)
    return direct.values("content_object_id"), through_groups.values("content_object_id")


def _group_grants(user, action: str):
    codes = [f"{c}_taggroup" for c in _CODENAMES[action]]
    return _grants(TagGroupUserObjectPermission, TagGroupGroupObjectPermission, user, codes)


def _definition_grants(user, action: str):
    codes = [f"{c}_tagdefinition" for c in _CODENAMES[action]]
    return _grants(TagDefinitionUserObjectPermission, TagDefinitionGroupObjectPermission, user, codes)


def tag_condition(user, action: str) -> Q | None:
    """The ``Q`` on TagDefinition for ``action``; None means every tag (HQ)."""
    if is_hq(user):
        return None
    if not _active(user):
        return Q(pk__in=[])
    by_user, by_group = _group_grants(user, action)
    def_user, def_group = _definition_grants(user, action)
    return (
        _policy_q(user, action, "group__")
        | Q(group_id__in=by_user)
        | Q(group_id__in=by_group)
        | Q(pk__in=def_user)
        | Q(pk__in=def_group)
    )


def _tags(user, action: str, queryset: QuerySet | None) -> QuerySet:
    queryset = TagDefinition.objects.all() if queryset is None else queryset
    condition = tag_condition(user, action)
    return queryset if condition is None else queryset.filter(condition)


def visible_tags(user, queryset: QuerySet | None = None) -> QuerySet:
    """Tags ``user`` may see (their definitions and, on visible subjects, their values)."""
    return _tags(user, VIEW, queryset)


def usable_tags(user, queryset: QuerySet | None = None) -> QuerySet:
    """Tags ``user`` may read in rules, propagations, previews and exports."""
    return _tags(user, USE, queryset)


def editable_tags(user, queryset: QuerySet | None = None) -> QuerySet:
    """Tags whose definition and values ``user`` may change."""
    return _tags(user, EDIT, queryset)


def visible_tag_filter(user, field: str = "tag") -> Q:
    """A ``Q`` on another model's tag column (``"tag"``, ``"depends_on"``…); ``Q()`` for HQ."""
    condition = tag_condition(user, VIEW)
    if condition is None:
        return Q()
    return Q(**{f"{field}__in": TagDefinition.objects.filter(condition).values("pk")})


def visible_value_filter(user, tag_field: str = "tag", subject_field: str = "subject") -> Q:
    """Values (or history rows) ``user`` may see: a visible tag on a visible subject."""
    return visible_tag_filter(user, tag_field) & visible_subject_filter(user, subject_field)


def _group_condition(user, action: str) -> Q | None:
    if is_hq(user):
        return None
    if not _active(user):
        return Q(pk__in=[])
    by_user, by_group = _group_grants(user, action)
    condition = _policy_q(user, action, "") | Q(pk__in=by_user) | Q(pk__in=by_group)
    if action == VIEW:  # a group holding a tag the user sees is shown, with only that tag
        condition |= Q(pk__in=visible_tags(user).values("group_id"))
    return condition


def visible_groups(user, queryset: QuerySet | None = None) -> QuerySet:
    queryset = TagGroup.objects.all() if queryset is None else queryset
    condition = _group_condition(user, VIEW)
    return queryset if condition is None else queryset.filter(condition)


def editable_groups(user, queryset: QuerySet | None = None) -> QuerySet:
    """Groups ``user`` may change and add tags to (a tag grant does not open its group)."""
    queryset = TagGroup.objects.all() if queryset is None else queryset
    condition = _group_condition(user, EDIT)
    return queryset if condition is None else queryset.filter(condition)


def check_usable(actor, tag_ids: Iterable[int], *, field: str = "document") -> None:
    """Refuse a document that reads tags ``actor`` may not use, naming each (two queries at most).

    ``actor`` None is the system (demo loads, tasks re-running stored rules): not checked.
    The code named is the one the author wrote in the document, so naming it tells them nothing new.
    """
    ids = set(tag_ids)
    if actor is None or not ids or is_hq(actor):
        return
    allowed = set(usable_tags(actor, TagDefinition.objects.filter(pk__in=ids)).values_list("pk", flat=True))
    denied = ids - allowed
    if not denied:
        return
    codes = sorted(TagDefinition.objects.filter(pk__in=denied).values_list("code", flat=True))
    errors = [ItemError(None, field, f'You may not use tag "{code}".', "forbidden") for code in codes]
    listed = ", ".join(f'"{code}"' for code in codes)
    raise ServiceError(f"The document reads tags you may not use: {listed}.", errors, "forbidden")


class TagForbidden(ServiceError):
    """A visible tag (or group) the user may not change: 403, unlike an invisible one (404)."""

    status_code = 403


def require_editable(actor, tag: TagDefinition) -> None:
    """403 unless ``actor`` may edit ``tag`` (system actors may); callers have shown it is visible."""
    if actor is None or is_hq(actor):
        return
    if not editable_tags(actor, TagDefinition.objects.filter(pk=tag.pk)).exists():
        raise TagForbidden.single("tag", f'You may not change tag "{tag.code}".', "forbidden")


def require_editable_group(actor, group: TagGroup) -> None:
    if actor is None or is_hq(actor):
        return
    if not editable_groups(actor, TagGroup.objects.filter(pk=group.pk)).exists():
        raise TagForbidden.single("group", f'You may not change tag group "{group.code}".', "forbidden")


def redact_explanation(user, tag: TagDefinition, explanation: dict) -> dict:
    """``tags.propagation.explain``'s answer without what ``user`` may not see (two queries at most).

    A rule's inputs keep only visible tags; a propagation's inputs keep only subjects in the
    user's scope, and none at all when a tag it reads is invisible. ``inputs_total`` counts
    what is shown when the inputs were all listed, and is null when they were cut.
    """
    if is_hq(user):
        return explanation
    why = explanation.get("why") or {}
    if why.get("kind") == "rule" and isinstance(why.get("inputs"), dict):
        read = why["inputs"].get("tags") or {}
        shown = visible_tags(user, TagDefinition.objects.filter(subject_type_id=tag.subject_type_id, code__in=read))
        codes = set(shown.values_list("code", flat=True))
        why["inputs"]["tags"] = {code: value for code, value in read.items() if code in codes}
    elif why.get("kind") == "propagation" and "inputs" in why:
        why["inputs"], why["inputs_total"] = _visible_inputs(user, tag, why["inputs"], why.get("inputs_total"))
    return explanation


def _visible_inputs(user, tag: TagDefinition, inputs: list[dict], total: int | None) -> tuple[list[dict], int | None]:
    from subjects.access import visible_subjects

    from .models import TagDependency

    reads = TagDependency.objects.filter(tag=tag).values("depends_on_id")
    if reads.exclude(depends_on_id__in=visible_tags(user).values("pk")).exists():
        return [], None
    ids = {row["subject_id"] for row in inputs}
    seen = set(visible_subjects(user).filter(pk__in=ids).values_list("pk", flat=True)) if ids else set()
    shown = [row for row in inputs if row["subject_id"] in seen]
    complete = total is not None and total <= len(inputs)
    return shown, len(shown) if complete else None
