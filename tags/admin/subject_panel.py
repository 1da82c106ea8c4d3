"""Tags on the subject admin: the panel on a subject's page, its manual edit, and a bulk action.

Every write is ``store.write_values(source="manual")`` with the operator as actor:
the panel's form sets or clears one assigned tag on one subject, the changelist
action sets one tag on every selected subject through an intermediate form. Rule
and propagated tags are refused by the service, and its message is shown.

Access: the panel lists only tags the operator may see (``tags.access``); the manual edit and
the bulk action offer and accept only tags they may edit, on subjects they may see.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_POST

from common.errors import ServiceError
from subjects.access import visible_subjects
from subjects.models import Subject
from tags.access import editable_tags
from tags.api.profile import subject_type_tags
from tags.models import Computation, TagDefinition, TagStatus, ValueSource
from tags.services import store

from .values_input import parse_value_text, value_text

MAX_BULK_SUBJECTS = 100_000
ERRORS_SHOWN = 10
SET_PERMS = ("tags.add_tagvalue", "tags.change_tagvalue", "tags.delete_tagvalue")


def may_set_values(request) -> bool:
    return request.user.has_perms(SET_PERMS)


def subject_tags_context(request, subject: Subject) -> dict:
    """What the subject change page shows: the groups and the manual-edit form, from one query."""
    groups, type_tags = subject_type_tags(subject, user=request.user)
    for group in groups:
        for tag in group["tags"]:
            tag["text"] = value_text(tag["value"])
    editable = []
    if may_set_values(request):
        editable = [
            t
            for t in type_tags
            if t["editable"] and t["computation"] == Computation.ASSIGNED and t["status"] != TagStatus.ARCHIVED
        ]
    return {
        "tag_groups": groups,
        "tag_edit": {"url": reverse("admin:tags_subject_set_value", args=[subject.pk]), "tags": editable},
    }


def _report(request, exc: ServiceError, subject_ids: list[int] | None = None) -> None:
    for error in exc.errors[:ERRORS_SHOWN]:
        where = ""
        if error.index is not None and subject_ids is not None:
            where = f"subject {subject_ids[error.index]}: "
        messages.error(request, f"{where}{error.message}")
    if len(exc.errors) > ERRORS_SHOWN:
        messages.error(request, f"… and {len(exc.errors) - ERRORS_SHOWN} more problems.")
    messages.warning(request, "Nothing was written.")


@require_POST
def set_subject_value(request, subject_id: int):
    """Set (or, with an empty value or "clear", remove) a manual value of an assigned tag.

    Mounted by ``TagValueAdmin.get_urls`` through ``admin_view`` (staff only, CSRF-checked).
    """
    if not may_set_values(request):
        raise PermissionDenied
    subject = get_object_or_404(visible_subjects(request.user), pk=subject_id)
    back = reverse("admin:subjects_subject_change", args=[subject.pk]) + "#subject-tags"
    tag = editable_tags(request.user).filter(pk=_int(request.POST.get("tag"))).first()
    if tag is None:
        messages.error(request, "Choose a tag.")
        return HttpResponseRedirect(back)
    value = None if request.POST.get("clear") else parse_value_text(tag.value_type, request.POST.get("value"))
    try:
        result = store.write_values(tag, [(subject.pk, value)], source=ValueSource.MANUAL, actor=request.user)
    except ServiceError as exc:
        _report(request, exc)
        return HttpResponseRedirect(back)
    if result.unchanged:
        messages.info(request, f"{tag.name}: unchanged.")
    elif result.removed:
        messages.success(request, f"{tag.name}: value cleared.")
    else:
        messages.success(request, f"{tag.name} set to {value_text(value)}.")
    return HttpResponseRedirect(back)


def _int(text) -> int | None:
    return int(text) if isinstance(text, str) and text.isascii() and text.isdigit() and len(text) < 19 else None


class SetTagValueForm(forms.Form):
    tag = forms.ModelChoiceField(queryset=TagDefinition.objects.none())
    value = forms.CharField(
        required=False,
        help_text="Enum: the option value; multi-enum: values separated by commas; boolean: true/false; "
        "date: YYYY-MM-DD. Empty removes the value.",
    )

    def __init__(self, *args, subject_type_ids=(), user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tag"].queryset = (
            editable_tags(user, TagDefinition.objects.filter(subject_type_id__in=subject_type_ids))
            .exclude(status=TagStatus.ARCHIVED)
            .select_related("subject_type")
            .order_by("subject_type_id", "code")
        )
        self.fields["tag"].label_from_instance = lambda t: (
            f"{t.subject_type.code} · {t.name} ({t.code}, {t.computation})"
        )


@admin.action(description="Set a tag value on the selected subjects", permissions=["set_tag_values"])
def set_tag_value(modeladmin, request, queryset):
    """An intermediate form (tag + value), then one ``write_values`` over all selected subjects.

    Listed only for users who may set tag values (``has_set_tag_values_permission`` on the ModelAdmin).
    """
    ids = list(queryset.order_by("id").values_list("id", flat=True)[: MAX_BULK_SUBJECTS + 1])
    if len(ids) > MAX_BULK_SUBJECTS:
        modeladmin.message_user(request, f"Select at most {MAX_BULK_SUBJECTS:,} subjects at once.", messages.ERROR)
        return None
    type_ids = sorted(set(queryset.order_by().values_list("subject_type_id", flat=True).distinct()))
    form = SetTagValueForm(
        request.POST if "apply" in request.POST else None, subject_type_ids=type_ids, user=request.user
    )
    if form.is_valid():
        tag = form.cleaned_data["tag"]
        if tag.computation != Computation.ASSIGNED:
            modeladmin.message_user(
                request,
                f'"{tag.name}" is computed by a {tag.computation}; its values cannot be set by hand. '
                "Change its rule instead.",
                messages.ERROR,
            )
            return None
        value = parse_value_text(tag.value_type, form.cleaned_data["value"])
        try:
            result = store.write_values(tag, [(i, value) for i in ids], source=ValueSource.MANUAL, actor=request.user)
        except ServiceError as exc:
            _report(request, exc, ids)
            return None
        modeladmin.message_user(
            request,
            f"{tag.name}: {result.created} set, {result.updated} changed, {result.removed} cleared, "
            f"{result.unchanged} unchanged.",
            messages.SUCCESS,
        )
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Set a tag value",
        "opts": modeladmin.model._meta,
        "form": form,
        "count": len(ids),
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
        "action_name": "set_tag_value",
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/tags/set_tag_value.html", context)
