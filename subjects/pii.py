"""Personal information (PII): what counts as PII, masking it, and logging every unmasked read.

PII is the display name of customer and staff subjects, attribute keys a type's JSON Schema marks
``"x-pii": true``, and attribute keys whose name contains one of ``TAGWEAVE_PII_ATTRIBUTE_NAMES``
(name, phone, e-mail, address, open ids, …) at any depth. Masking is total: a masked value is
``MASK``, never a partial value (auditlog's default mask keeps half the string, which for a phone
number is most of it). Everybody sees masked values by default; a holder of ``subjects.view_pii``
asks explicitly (``?unmask=1`` in the API, the admin's reveal link) and each such read writes a
``pii.unmasked`` domain event naming who saw which objects' which fields.

``Subject.__str__`` goes through ``subject_label``: a customer's or staff member's name is masked
unless the code runs inside ``revealed()``. So admin breadcrumbs, foreign-key widgets, delete
confirmations, error messages and stored audit representations cannot show a name by accident.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar

from django.conf import settings
from django.db.models.signals import post_delete, post_save

MASK = "***"
PII_CATEGORIES = frozenset({"customer", "staff"})
UNMASK_EVENT = "pii.unmasked"
MAX_LOGGED_IDS = 10_000
_TRUE = frozenset({"1", "true", "yes", "on"})

_revealed: ContextVar[bool] = ContextVar("tagweave_pii_revealed", default=False)


def mask(value: object) -> object:
    """``MASK`` for any non-empty value (strings, numbers, lists, objects); empty stays empty."""
    if value is None or value == "" or value == [] or value == {}:
        return value
    return MASK


def default_names() -> tuple[str, ...]:
    return tuple(name.lower() for name in settings.TAGWEAVE_PII_ATTRIBUTE_NAMES)


def schema_pii_keys(schema: object) -> frozenset[str]:
    """Property names marked ``"x-pii": true`` anywhere in a JSON Schema."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, Mapping):
            for key, sub in (node.get("properties") or {}).items():
                if isinstance(sub, Mapping) and sub.get("x-pii") is True:
                    found.add(str(key))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return frozenset(found)


def pii_attribute_keys(subject_type) -> frozenset[str]:
    """The attribute keys of a subject or relationship type that are PII (schema-marked + defaults).

    Any key *containing* a default name is PII as well (``mobile_phone``, ``home_address``): see
    ``is_pii_key``. Memoised on the type instance, which lives for one request.
    """
    if subject_type is None:
        return frozenset(default_names())
    cached = getattr(subject_type, "_tagweave_pii_keys", None)
    if cached is None:
        cached = schema_pii_keys(subject_type.attribute_schema or {}) | frozenset(default_names())
        subject_type._tagweave_pii_keys = cached
    return cached


def is_pii_key(key: object, keys: Iterable[str] = ()) -> bool:
    lowered = str(key).lower()
    return str(key) in keys or lowered in keys or any(name in lowered for name in default_names())


def mask_attributes(attributes: object, keys: Iterable[str] = ()) -> object:
    """``attributes`` with every PII key's whole value masked, nested objects and lists included."""
    keys = frozenset(keys)
    if isinstance(attributes, Mapping):
        return {k: mask(v) if is_pii_key(k, keys) else mask_attributes(v, keys) for k, v in attributes.items()}
    if isinstance(attributes, list):
        return [mask_attributes(v, keys) for v in attributes]
    return attributes


def is_pii_type(subject_type) -> bool:
    return getattr(subject_type, "category", None) in PII_CATEGORIES


def mask_subject_payload(data: Mapping, subject_type) -> dict:
    """A serialized subject (or relationship) with its PII masked: display name and attributes."""
    masked = dict(data)
    if "display_name" in masked and is_pii_type(subject_type):
        masked["display_name"] = mask(masked["display_name"])
    if "attributes" in masked:
        masked["attributes"] = mask_attributes(masked["attributes"], pii_attribute_keys(subject_type))
    return masked


def masked_if_needed(user, data: Mapping, subject_type, *, unmasked: bool = False) -> Mapping:
    """``data`` as is for a PII holder who asked to unmask (the caller logs it), masked otherwise."""
    if unmasked and can_see_pii(user):
        return data
    return mask_subject_payload(data, subject_type)


def can_see_pii(user) -> bool:
    from .access import can_see_pii as holds_pii_permission

    return holds_pii_permission(user)


def wants_unmasked(request) -> bool:
    """A holder of ``view_pii`` asked explicitly (``?unmask=1``) to see personal data in clear."""
    if request is None:
        return False
    flag = str(request.GET.get("unmask", "")).strip().lower()
    return flag in _TRUE and can_see_pii(getattr(request, "user", None))


def log_unmask(user, object_type: str, ids: Sequence[int], fields: Sequence[str] = ()) -> None:
    """The ``pii.unmasked`` domain event of one unmasked read (one row per request, not per object)."""
    from audit.services import domain_event_record

    ids = list(ids)
    if not ids:
        return
    domain_event_record(
        actor=user,
        action=UNMASK_EVENT,
        object_type=object_type,
        row_count=len(ids),
        summary={"ids": ids[:MAX_LOGGED_IDS], "fields": list(fields), "truncated": len(ids) > MAX_LOGGED_IDS},
    )


# Labels (``Subject.__str__``) --------------------------------------------------------------


@contextlib.contextmanager
def revealed() -> Iterator[None]:
    """Render subject labels in clear inside the block (an unmasked read that the caller logs)."""
    token = _revealed.set(True)
    try:
        yield
    finally:
        _revealed.reset(token)


@contextlib.contextmanager
def masked_labels() -> Iterator[None]:
    """Labels masked inside the block even within ``revealed()`` (what is stored, e.g. audit labels)."""
    token = _revealed.set(False)
    try:
        yield
    finally:
        _revealed.reset(token)


def labels_revealed() -> bool:
    return _revealed.get()


def subject_label(subject) -> str:
    """What ``str(subject)`` shows: the name, masked for customers and staff outside ``revealed()``."""
    fallback = f"{subject.source}:{subject.external_id}"
    if not subject.display_name:
        return fallback
    if _revealed.get() or not _subject_is_pii(subject):
        return subject.display_name
    return f"{MASK} ({fallback})"


def _subject_is_pii(subject) -> bool:
    if "subject_type" in subject._state.fields_cache:
        return is_pii_type(subject.subject_type)
    return _type_categories().get(subject.subject_type_id, "customer") in PII_CATEGORIES


_CACHE_SECONDS = 30.0
_categories: dict[int, str] = {}
_loaded_at = 0.0


def _type_categories() -> dict[int, str]:
    """Subject type id → category, one query per process every 30 s (types are few and rarely change).

    A type saved or deleted in this process clears it at once; an unknown id counts as PII.
    """
    global _categories, _loaded_at
    if time.monotonic() - _loaded_at > _CACHE_SECONDS:
        from .models import SubjectType

        _categories = dict(SubjectType.objects.values_list("id", "category"))
        _loaded_at = time.monotonic()
    return _categories


def forget_type_categories(**kwargs) -> None:
    global _loaded_at
    _loaded_at = 0.0


post_save.connect(forget_type_categories, sender="subjects.SubjectType", dispatch_uid="subjects.pii.types")
post_delete.connect(forget_type_categories, sender="subjects.SubjectType", dispatch_uid="subjects.pii.types_del")


# Admin -----------------------------------------------------------------------------------


def _strip_unmask(request):
    """The request without ``unmask`` in its query: the changelist reads every parameter as a filter."""
    if "unmask" in request.GET:
        request.GET = request.GET.copy()
        del request.GET["unmask"]
    return request


class PiiLookupMixin:
    """Filtering a changelist by a personal field (``pii_lookup_fields``) needs ``view_pii``.

    Django's admin accepts a lookup on any of the model's own fields from the query string, list
    filter or not (``?display_name__startswith=Li``, ``?attributes__phone__startswith=139``): the
    rows such a filter leaves would recover a masked value one character at a time. Refused
    lookups answer 400, like any lookup the admin disallows; the CSV export builds the same
    changelist.
    """

    pii_lookup_fields: tuple[str, ...] = ()

    def lookup_allowed(self, lookup, value, request=None):
        field = lookup.split("__", 1)[0]
        if field in self.pii_lookup_fields and not can_see_pii(getattr(request, "user", None)):
            return False
        return super().lookup_allowed(lookup, value, request)


class PiiAdminMixin(PiiLookupMixin):
    """Masks PII in a ModelAdmin of subjects or relationships (``pii_type`` names the type FK).

    Without an explicit reveal (``?unmask=1`` by a ``view_pii`` holder, logged) the changelist and
    the change page show ``MASK`` for PII, the PII fields are read-only displays of the masked
    values and are left out of the form, so a save can never write the mask back; searching PII
    fields needs ``view_pii``; CSV exports are masked.
    """

    pii_type = "subject_type"
    pii_form_fields: tuple[str, ...] = ("display_name", "attributes")
    pii_search_fields: tuple[str, ...] = ("display_name",)
    pii_lookup_fields: tuple[str, ...] = ("display_name", "attributes")
    pii_object_type = "subjects.subject"

    # Reveal ------------------------------------------------------------------------------

    def _revealing(self, request) -> bool:
        flag = getattr(request, "_tagweave_pii_reveal", None)
        if flag is None:
            flag = wants_unmasked(request)
            request._tagweave_pii_reveal = flag
        return flag

    def _render(self, request, view, ids_of):
        """Run ``view`` (masked, or revealed and logged) and render it inside that state."""
        reveal = self._revealing(request)
        _strip_unmask(request)
        with revealed() if reveal else contextlib.nullcontext():
            response = view()
            if hasattr(response, "render") and not getattr(response, "is_rendered", True):
                response.render()
        if reveal:
            log_unmask(request.user, self.pii_object_type, ids_of(response), self.pii_form_fields)
        return response

    def changelist_view(self, request, extra_context=None):
        def page_ids(response) -> list[int]:
            changelist = (getattr(response, "context_data", None) or {}).get("cl")
            return [obj.pk for obj in changelist.result_list] if changelist is not None else []

        return self._render(
            request, lambda: super(PiiAdminMixin, self).changelist_view(request, extra_context), page_ids
        )

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        if object_id and can_see_pii(request.user) and not self._revealing(request):
            extra_context["pii_reveal_url"] = "?unmask=1"
        extra_context["pii_masked"] = bool(object_id) and not self._revealing(request)

        def object_ids(response) -> list:
            return [int(object_id)] if object_id and str(object_id).isdigit() else []

        return self._render(
            request,
            lambda: super(PiiAdminMixin, self).changeform_view(request, object_id, form_url, extra_context),
            object_ids,
        )

    # The admin's own history stores ``str(obj)``: always the masked label, even when revealed.

    def log_addition(self, request, obj, message):
        with masked_labels():
            return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        with masked_labels():
            return super().log_change(request, obj, message)

    def log_deletions(self, request, queryset):
        with masked_labels():
            return super().log_deletions(request, queryset)

    def _masking(self, request, obj=None) -> bool:
        return obj is not None and not self._revealing(request)

    def get_queryset(self, request):
        """With the type: masking a change page's values needs its schema and category."""
        return super().get_queryset(request).select_related(self.pii_type)

    # List and search ---------------------------------------------------------------------

    def get_list_display(self, request):
        return tuple(
            "pii_display_name" if name == "display_name" else name for name in super().get_list_display(request)
        )

    def get_search_fields(self, request):
        fields = super().get_search_fields(request)
        if can_see_pii(request.user):
            return fields
        return tuple(f for f in fields if f.lstrip("=^@") not in self.pii_search_fields)

    # Change page -------------------------------------------------------------------------

    def get_readonly_fields(self, request, obj=None):
        fields = tuple(super().get_readonly_fields(request, obj))
        if self._masking(request, obj):
            fields += tuple(f"pii_{name}" for name in self.pii_form_fields)
        return fields

    def get_exclude(self, request, obj=None):
        excluded = tuple(super().get_exclude(request, obj) or ())
        return excluded + self.pii_form_fields if self._masking(request, obj) else excluded or None

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if not self._masking(request, obj):
            return form
        removed = tuple(self.pii_form_fields)

        def service_data(this) -> dict:
            item = form.service_data(this)
            for name in removed:
                item.pop(name, None)
            return item

        attrs = {name: None for name in removed}
        if hasattr(form, "service_data"):
            attrs["service_data"] = service_data
        return type(form.__name__, (form,), attrs)

    def _type_of(self, obj):
        return getattr(obj, self.pii_type, None)

    def pii_display_name(self, obj) -> str:
        value = getattr(obj, "display_name", "")
        if labels_revealed() or not is_pii_type(self._type_of(obj)):
            return value
        return mask(value)

    pii_display_name.short_description = "display name"

    def pii_attributes(self, obj) -> str:
        import json

        from django.utils.html import format_html

        attributes = mask_attributes(obj.attributes, pii_attribute_keys(self._type_of(obj)))
        return format_html("<pre>{}</pre>", json.dumps(attributes, ensure_ascii=False, indent=2, sort_keys=True))

    pii_attributes.short_description = "attributes (personal data masked)"

    # Export ------------------------------------------------------------------------------

    def get_export_queryset(self, request):
        self._revealing(request)  # decided before the flag leaves the query
        return super().get_export_queryset(_strip_unmask(request))

    def get_data_for_export(self, request, queryset, **kwargs):
        reveal = self._revealing(request)
        dataset = super().get_data_for_export(request, queryset, **kwargs)
        if reveal:
            log_unmask(request.user, self.pii_object_type, list(queryset.values_list("pk", flat=True)[:MAX_LOGGED_IDS]))
            return dataset
        return mask_dataset(dataset)


class RelationshipPiiAdminMixin(PiiAdminMixin):
    pii_type = "relationship_type"
    pii_form_fields = ("attributes",)
    pii_search_fields = ()
    pii_lookup_fields = ("attributes",)
    pii_object_type = "subjects.relationship"
    change_form_template = "admin/subjects/pii_change_form.html"


def mask_dataset(dataset):
    """A subjects CSV export (tablib ``Dataset``) with display names and PII attributes masked."""
    import json

    from .models import SubjectType

    headers = list(dataset.headers or [])
    if not headers:
        return dataset
    types = {t.code: t for t in SubjectType.objects.all()}
    type_col = headers.index("type") if "type" in headers else None
    name_col = headers.index("display_name") if "display_name" in headers else None
    attr_col = headers.index("attributes") if "attributes" in headers else None
    rows = []
    for row in dataset:
        row = list(row)
        subject_type = types.get(row[type_col]) if type_col is not None else None
        if name_col is not None and (subject_type is None or is_pii_type(subject_type)):
            row[name_col] = mask(row[name_col])
        if attr_col is not None and row[attr_col]:
            try:
                parsed = json.loads(row[attr_col])
            except (TypeError, ValueError):
                row[attr_col] = MASK
            else:
                masked = mask_attributes(parsed, pii_attribute_keys(subject_type))
                row[attr_col] = json.dumps(masked, ensure_ascii=False, sort_keys=True)
        rows.append(row)
    dataset.wipe()
    dataset.headers = headers
    for row in rows:
        dataset.append(row)
    return dataset
