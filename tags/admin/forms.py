"""Admin forms of tag groups and definitions; validation and writes are the services' (see subjects.admin_forms).

A tag's options are edited in the tag's own form, one ``value | label`` per line in
display order, because ``tag_save`` replaces them as a whole (refusing to drop
options still in use). A new rule version is a JSON document in the same form;
its errors point into the tree (``rule.cases[1].when.and[0]``) on that field.
"""

from __future__ import annotations

from django import forms
from django.db import transaction

from common.errors import ServiceError
from subjects.admin_forms import PrettyJSONField, ServiceModelForm
from tags.models import Computation, TagDefinition, TagGroup
from tags.services import definitions

TAG_FIELDS = ("group", "code", "name", "description", "value_type", "unit", "owner", "status", "computation")


class RuleDocumentField(PrettyJSONField):
    """Empty until the operator types a document (``null`` would read as a rule)."""

    def prepare_value(self, value):
        return "" if value is None else super().prepare_value(value)


class TagGroupForm(ServiceModelForm):
    class Meta:
        model = TagGroup
        fields = definitions.GROUP_FIELDS

    def service_data(self) -> dict:
        return {name: self.cleaned_data[name] for name in definitions.GROUP_FIELDS if name in self.cleaned_data}

    def call_service(self, data, instance):
        return definitions.tag_group_save(actor=self.actor, data=data, instance=instance)


def options_text(tag: TagDefinition | None) -> str:
    if tag is None or tag.pk is None:
        return ""
    return "\n".join(f"{o.value} | {o.label}" for o in tag.options.all())


def parse_options(text: str) -> list[tuple[str, str]]:
    options = []
    for line in text.splitlines():
        if not line.strip():
            continue
        value, _, label = line.partition("|")
        options.append((value.strip(), label.strip() or value.strip()))
    return options


class TagDefinitionForm(ServiceModelForm):
    field_map = {"rule": "new_rule", "version": "new_rule"}
    options = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 60}),
        help_text="Enum and multi-enum tags: one option a line, <code>value | label</code>, in display order.",
    )
    new_rule = RuleDocumentField(
        required=False,
        label="New rule version",
        widget=forms.Textarea(attrs={"rows": 14, "cols": 80, "class": "vLargeTextField"}),
        help_text="Rule tags: a rule document (see docs/TAGS.md), saved as the next version (a draft).",
    )
    activate_new_rule = forms.BooleanField(
        required=False, help_text="Activate the new version at once (its values follow by a recompute)."
    )

    class Meta:
        model = TagDefinition
        fields = TAG_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial.setdefault("options", options_text(self.instance))

    def service_data(self) -> dict:
        return {name: self.cleaned_data.get(name) for name in TAG_FIELDS if name in self.cleaned_data}

    def call_service(self, data, instance):
        options = parse_options(self.cleaned_data.get("options") or "")
        keeps_options = data.get("value_type") in definitions.OPTION_VALUE_TYPES or options
        document = self.cleaned_data.get("new_rule")
        with transaction.atomic():  # a refused rule undoes the definition's save too
            tag = definitions.tag_save(
                actor=self.actor, data=data, options=options if keeps_options else None, instance=instance
            )
            if document not in (None, "", {}):
                if tag.computation != Computation.RULE:
                    raise ServiceError.single("rule", "Only rule tags (computation: rule) have rule versions.")
                definitions.rule_save(
                    actor=self.actor, tag=tag, document=document, activate=self.cleaned_data.get("activate_new_rule")
                )
        return tag
