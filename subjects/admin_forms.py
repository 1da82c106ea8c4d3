"""Admin forms whose validation is the service's: the write happens in ``_post_clean``.

The admin only learns whether a form is valid from ``is_valid()``; an error raised
later, in ``save_model``, would be a 500. So the form calls the service as its
last validation step (inside the admin's own transaction) and turns a
``ServiceError`` into errors on the named fields; ``save_model`` then has nothing
left to do. The form therefore never writes through ``Model.save()``.
"""

from __future__ import annotations

import json

from django import forms

from common.errors import ItemError, ServiceError

from .models import Relationship, RelationshipType, Subject, SubjectType
from .services import (
    relationship_save,
    relationship_type_save,
    subject_save,
    subject_type_save,
)
from .services.objects import RELATIONSHIP_TYPE_FIELDS, TYPE_FIELDS


class PrettyJSONField(forms.JSONField):
    """A JSON textarea that shows its value indented, so attributes read as a document."""

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, cls=self.encoder)


def apply_service_error(form: forms.Form, exc: ServiceError, field_map: dict[str, str]) -> None:
    """Put each of the service's errors on the form field it names, or on the form."""
    for error in exc.errors or [ItemError(None, "", exc.message, exc.code)]:
        head = error.field.split(".", 1)[0]
        name = field_map.get(head, head)
        nested = "." in error.field
        message = f"{error.field}: {error.message}" if nested else error.message
        if name in form.fields:
            form.add_error(name, message)
        else:
            form.add_error(None, f"{error.field}: {message}" if error.field and not nested else message)


class ServiceModelForm(forms.ModelForm):
    """Validates and saves through a service; ``actor`` is bound by the ModelAdmin."""

    actor = None
    field_map: dict[str, str] = {}

    def service_data(self) -> dict:
        raise NotImplementedError

    def call_service(self, data: dict, instance):
        raise NotImplementedError

    @property
    def adding(self) -> bool:
        return self.instance._state.adding

    def _post_clean(self) -> None:
        if self._errors:
            return
        try:
            self.instance = self.call_service(self.service_data(), None if self.adding else self.instance)
        except ServiceError as exc:
            apply_service_error(self, exc, self.field_map)

    def save(self, commit=True):
        if self.errors:
            raise ValueError("The form has errors; nothing was saved.")
        self.save_m2m = lambda: None
        return self.instance


def _json_default(value):
    return {} if value is None else value


class SubjectTypeForm(ServiceModelForm):
    attribute_schema = PrettyJSONField(required=False, widget=forms.Textarea(attrs={"rows": 12, "cols": 80}))

    class Meta:
        model = SubjectType
        fields = TYPE_FIELDS

    def service_data(self) -> dict:
        data = {name: self.cleaned_data[name] for name in TYPE_FIELDS if name in self.cleaned_data}
        data["attribute_schema"] = _json_default(data.get("attribute_schema"))
        return data

    def call_service(self, data, instance):
        return subject_type_save(actor=self.actor, data=data, instance=instance)


class RelationshipTypeForm(ServiceModelForm):
    attribute_schema = PrettyJSONField(required=False, widget=forms.Textarea(attrs={"rows": 12, "cols": 80}))

    class Meta:
        model = RelationshipType
        fields = RELATIONSHIP_TYPE_FIELDS

    def service_data(self) -> dict:
        data = {name: self.cleaned_data[name] for name in RELATIONSHIP_TYPE_FIELDS if name in self.cleaned_data}
        data["attribute_schema"] = _json_default(data.get("attribute_schema"))
        return data

    def call_service(self, data, instance):
        return relationship_type_save(actor=self.actor, data=data, instance=instance)


def _pk(value):
    return None if value is None else value.pk


class SubjectForm(ServiceModelForm):
    """Type, source and external_id identify a subject: editable only when adding."""

    field_map = {"type": "subject_type"}
    attributes = PrettyJSONField(required=False, widget=forms.Textarea(attrs={"rows": 12, "cols": 80}))

    class Meta:
        model = Subject
        fields = (
            "subject_type",
            "source",
            "external_id",
            "display_name",
            "attributes",
            "business_line",
            "brand",
            "region",
            "parent",
        )

    def service_data(self) -> dict:
        data = self.cleaned_data
        item = {
            "display_name": data.get("display_name", ""),
            "attributes": _json_default(data.get("attributes")),
            **{name: _pk(data.get(name)) for name in ("business_line", "brand", "region", "parent")},
        }
        if self.adding:
            item.update(type=data["subject_type"].code, source=data["source"], external_id=data["external_id"])
        return item

    def call_service(self, data, instance):
        return subject_save(actor=self.actor, data=data, instance=instance)


class RelationshipForm(ServiceModelForm):
    field_map = {"type": "relationship_type", "from": "from_subject", "to": "to_subject"}
    attributes = PrettyJSONField(required=False, widget=forms.Textarea(attrs={"rows": 8, "cols": 80}))

    class Meta:
        model = Relationship
        fields = (
            "relationship_type",
            "source",
            "external_id",
            "from_subject",
            "to_subject",
            "weight",
            "valid_from",
            "valid_to",
            "attributes",
        )

    def service_data(self) -> dict:
        data = self.cleaned_data
        item = {
            "from": _pk(data.get("from_subject")),
            "to": _pk(data.get("to_subject")),
            "weight": data.get("weight"),
            "valid_from": _iso(data.get("valid_from")),
            "valid_to": _iso(data.get("valid_to")),
            "attributes": _json_default(data.get("attributes")),
        }
        if self.adding:
            item.update(
                type=data["relationship_type"].code,
                source=data["source"],
                external_id=data["external_id"],
            )
        return item

    def call_service(self, data, instance):
        return relationship_save(actor=self.actor, data=data, instance=instance)


def _iso(value):
    return None if value is None else value.isoformat()
