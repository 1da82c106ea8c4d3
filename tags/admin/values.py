"""Read-only admin of tag values, their history and recompute jobs, and the "value at a time" lookup.

These tables are the biggest in the system: lists select their related rows in the
same query, never count the whole table, and filter by raw ids. Values are written
only through ``store.write_values`` (the subject page, the bulk action, imports)
and the engine, never through these pages.

Every list, filter and lookup here shows only rows of tags the operator may see
(``tags.access``) on subjects in their scope (``subjects.access``): the filter is part of the
list's one statement, so the query count does not grow with permissions.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html

from audit.usage import record_tag_use
from subjects.access import visible_subjects
from subjects.admin_base import ReadOnlyAdmin
from subjects.models import Subject
from tags.access import visible_tag_filter, visible_tags, visible_value_filter
from tags.models import RecomputeJob, TagDefinition, TagValue, TagValueChange
from tags.services.values import ValueProblem

from .imports import TagValueImportMixin
from .subject_panel import set_subject_value
from .values_input import parse_value_text, value_text

SUBJECTS_LISTED = 200


class VisibleValuesMixin:
    """The changelist and change pages hold only visible tags' rows on visible subjects."""

    def get_queryset(self, request):
        return super().get_queryset(request).filter(visible_value_filter(request.user))


class TagFilter(admin.SimpleListFilter):
    """Visible tags listed with their subject type (codes repeat across types)."""

    title = "tag"
    parameter_name = "tag"

    def lookups(self, request, model_admin):
        rows = visible_tags(request.user, TagDefinition.objects.order_by("subject_type__code", "code")).values_list(
            "id", "subject_type__code", "code"
        )
        return [(str(i), f"{t} · {c}") for i, t, c in rows]

    def queryset(self, request, queryset):
        value = self.value()
        if value and value.isdigit() and len(value) < 19:
            record_tag_use([int(value)], "read", actor=request.user)
            return queryset.filter(tag_id=int(value))
        return queryset


@admin.register(TagValue)
class TagValueAdmin(VisibleValuesMixin, TagValueImportMixin, ReadOnlyAdmin):
    list_display = ("id", "subject", "tag", "shown_value", "source", "rule_version", "updated_at")
    list_filter = (TagFilter, "source")
    list_select_related = ("subject", "tag")
    search_fields = ("=subject__id",)
    search_help_text = "Exact subject id."
    show_full_result_count = False
    raw_id_fields = ("subject",)

    @admin.display(description="value")
    def shown_value(self, obj: TagValue) -> str:
        return value_text(obj.value)

    def get_urls(self):
        return [
            path(
                "subject/<int:subject_id>/set/",
                self.admin_site.admin_view(set_subject_value),
                name="tags_subject_set_value",
            ),
            *super().get_urls(),
        ]


@admin.register(TagValueChange)
class TagValueChangeAdmin(VisibleValuesMixin, ReadOnlyAdmin):
    list_display = ("id", "subject", "tag", "old", "new", "source", "rule_version", "changed_at", "correlation_id")
    list_filter = (TagFilter, "source")
    list_select_related = ("subject", "tag")
    search_fields = ("=subject__id", "=correlation_id")
    search_help_text = "Exact subject id or correlation id."
    show_full_result_count = False
    change_list_template = "admin/tags/tagvaluechange/change_list.html"

    @admin.display(description="from")
    def old(self, obj: TagValueChange) -> str:
        return value_text(obj.old_value) or "—"

    @admin.display(description="to")
    def new(self, obj: TagValueChange) -> str:
        return value_text(obj.new_value) or "—"

    def get_urls(self):
        return [
            path("value-at/", self.admin_site.admin_view(self.value_at_view), name="tags_tagvaluechange_value_at"),
            *super().get_urls(),
        ]

    def value_at_view(self, request):
        form = ValueAtForm(request.GET or None, user=request.user)
        answer = form.answer() if form.is_valid() else None
        context = {**self.admin_site.each_context(request), "opts": self.opts, "title": "Value at a time"}
        return TemplateResponse(
            request, "admin/tags/tagvaluechange/value_at.html", {**context, "form": form, "answer": answer}
        )


class ValueAtForm(forms.Form):
    tag = forms.ModelChoiceField(queryset=TagDefinition.objects.select_related("subject_type").order_by("code"))
    at = forms.DateTimeField(help_text="e.g. 2026-06-01 00:00")
    subject = forms.IntegerField(required=False, min_value=1, help_text="A subject id: its value then.")
    value = forms.CharField(required=False, help_text="Or a value: the subjects that had it then.")

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["tag"].queryset = visible_tags(user, self.fields["tag"].queryset)
        self.fields["tag"].label_from_instance = lambda t: f"{t.subject_type.code} · {t.name} ({t.code})"

    def clean(self):
        data = super().clean()
        if not data.get("subject") and not data.get("value"):
            raise forms.ValidationError("Give a subject id or a value.")
        return data

    def answer(self) -> dict | None:
        from tags.services import history

        tag, at = self.cleaned_data["tag"], self.cleaned_data["at"]
        if subject := self.cleaned_data.get("subject"):
            if not visible_subjects(self.user, Subject.objects.filter(pk=subject)).exists():
                self.add_error("subject", f"No subject {subject}.")
                return None
            value = history.value_at(tag, subject, at)
            return {"kind": "value", "tag": tag, "at": at, "subject": subject, "text": value_text(value)}
        value = parse_value_text(tag.value_type, self.cleaned_data["value"])
        try:
            ids = history.subjects_with_value_at(tag, value, at, user=self.user)
        except ValueProblem as problem:
            self.add_error("value", str(problem))
            return None
        listed = Subject.objects.filter(id__in=ids[:SUBJECTS_LISTED]).order_by("id")
        return {"kind": "subjects", "tag": tag, "at": at, "value": value_text(value), "count": len(ids),
                "subjects": list(listed.values("id", "display_name", "external_id"))}  # fmt: skip


@admin.register(RecomputeJob)
class RecomputeJobAdmin(ReadOnlyAdmin):
    list_display = ("id", "tag", "status", "progress", "rows_changed", "requested_by", "started_at", "finished_at")
    list_filter = ("status",)
    list_select_related = ("tag", "requested_by")
    readonly_fields = (
        "tag", "status", "progress", "subject_count", "chunks_done", "chunks_total", "rows_changed", "requested_by",
        "correlation_id", "created_at", "started_at", "finished_at", "error",
    )  # fmt: skip
    fields = readonly_fields
    change_form_template = "admin/tags/recomputejob/change_form.html"

    def get_queryset(self, request):
        return super().get_queryset(request).filter(visible_tag_filter(request.user))

    @admin.display(description="progress")
    def progress(self, obj: RecomputeJob) -> str:
        total = obj.chunks_total or 0
        return format_html(
            '<progress value="{}" max="{}"></progress> {}/{} chunks',
            obj.chunks_done,
            max(total, 1),
            obj.chunks_done,
            total,
        )
