"""The operator's OneID admin: rules, source records (with CSV import), OneIDs, history, suggestions.

Every write goes through ``identity.services``: rules through ``config_save``, a
split through ``oneid_split`` (the OneID page), a merge through ``oneid_merge``
(an action on two selected OneIDs), suggestions through accept / reject actions.

Scoped like the API (``identity.scoping``): changelists, change pages, exports and actions start
from querysets filtered by the user's scope (one SQL condition, no per-row checks), so objects out
of scope are absent (404). Personal values (raw fields, external ids, identifier and evidence
values, golden names and PII attributes) are masked unless a ``subjects.view_pii`` holder opens
the page with ``?unmask=1`` (the reveal link); each reveal is logged (``pii.unmasked``).
Foreign keys to subjects are shown as ids, never as labels that could carry a person's name.
"""

from __future__ import annotations

import contextlib
import json
from contextvars import ContextVar

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from import_export.admin import ImportExportMixin
from import_export.formats import base_formats

from common.errors import ServiceError
from subjects import pii
from subjects.admin_base import ReadOnlyAdmin

from .imports import SourceRecordResource
from .models import (
    BlockedValue,
    CompositeKey,
    IdentifierType,
    MatchSuggestion,
    MergeEvent,
    OneId,
    ReapplyRun,
    SourceRecord,
    SourceSystem,
    SurvivorshipRule,
)
from .scoping import fully_visible_filter, oneid_filter, sees_everything, visible_records
from .selectors import mask_evidence, mask_raw, oneid_detail
from .services import oneid_merge, oneid_split
from .services.config import REAPPLY_SCHEDULED, check_rules, config_delete, config_save
from .services.suggestions import suggestion_accept, suggestion_reject


class ConfigForm(forms.ModelForm):
    """Shows the service's rule checks as form errors before anything is saved."""

    def _post_clean(self) -> None:
        super()._post_clean()
        try:
            check_rules(self.instance)
        except ServiceError as exc:
            for error in exc.errors:
                self.add_error(error.field if error.field in self.fields else None, error.message)


class ConfigAdmin(admin.ModelAdmin):
    """Rules are saved and deleted by the config service (validation, auditlog with the actor)."""

    form = ConfigForm

    def save_model(self, request, obj, form, change) -> None:
        config_save(actor=request.user, model=type(obj), data={}, instance=obj)
        self._tell_reapply(request, obj)

    def delete_model(self, request, obj) -> None:
        config_delete(actor=request.user, instance=obj)
        self._tell_reapply(request, obj)

    def _tell_reapply(self, request, obj) -> None:
        """Say that the stored records will be re-checked, when the change asked for it."""
        if getattr(obj, REAPPLY_SCHEDULED, False):
            self.message_user(
                request,
                "The stored records will be re-checked against the changed rules once this is saved:"
                " see Rules re-applications.",
                messages.INFO,
            )


_revealing: ContextVar[bool] = ContextVar("identity_admin_reveal", default=False)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


class RevealMixin(pii.PiiLookupMixin):
    """Masked by default; ``?unmask=1`` by a PII holder reveals the page (rendered inside the reveal,
    then logged with the ids shown). ``unmask`` is removed from the query before the changelist
    reads its parameters as filters; filtering by a personal field needs ``view_pii``."""

    reveal_object_type = ""
    reveal_fields: tuple[str, ...] = ()

    def _reveal(self, request) -> bool:
        flag = getattr(request, "_identity_reveal", None)
        if flag is None:
            flag = pii.wants_unmasked(request)
            request._identity_reveal = flag
            if "unmask" in request.GET:
                request.GET = request.GET.copy()
                del request.GET["unmask"]
        return flag

    def _rendered(self, request, view, ids_of):
        reveal = self._reveal(request)
        token = _revealing.set(reveal)
        try:
            with pii.revealed() if reveal else contextlib.nullcontext():
                response = view()
                if hasattr(response, "render") and not getattr(response, "is_rendered", True):
                    response.render()
        finally:
            _revealing.reset(token)
        if reveal and getattr(response, "status_code", 0) == 200:
            pii.log_unmask(request.user, self.reveal_object_type, ids_of(response), self.reveal_fields)
        return response

    def changelist_view(self, request, extra_context=None):
        def page_ids(response) -> list[int]:
            changelist = (getattr(response, "context_data", None) or {}).get("cl")
            return [obj.pk for obj in changelist.result_list] if changelist is not None else []

        return self._rendered(
            request, lambda: super(RevealMixin, self).changelist_view(request, extra_context), page_ids
        )

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        self._reveal(request)
        if object_id and pii.can_see_pii(request.user) and not request._identity_reveal:
            extra_context["pii_reveal_url"] = "?unmask=1"

        def object_ids(response) -> list[int]:
            return [int(object_id)] if object_id and str(object_id).isdigit() else []

        return self._rendered(
            request,
            lambda: super(RevealMixin, self).changeform_view(request, object_id, form_url, extra_context),
            object_ids,
        )

    def get_search_fields(self, request):
        """Searching by a personal value is a lookup of personal data: PII holders only."""
        return super().get_search_fields(request) if pii.can_see_pii(request.user) else ()


def _shown(value: object) -> object:
    return value if _revealing.get() else pii.mask(value)


@admin.register(SourceSystem)
class SourceSystemAdmin(ConfigAdmin):
    list_display = ("code", "name", "kind", "brand", "trust_rank", "app_id", "open_platform_id", "subject_type")
    list_filter = ("kind",)
    search_fields = ("code", "name")
    raw_id_fields = ("brand",)


@admin.register(IdentifierType)
class IdentifierTypeAdmin(ConfigAdmin):
    list_display = (
        "code",
        "normalizer",
        "linking",
        "priority",
        "max_per_oneid",
        "max_shared_records",
        "scoping",
        "active",
    )
    list_filter = ("linking", "scoping", "active")


@admin.register(CompositeKey)
class CompositeKeyAdmin(ConfigAdmin):
    list_display = ("code", "name", "parts", "priority", "max_shared_records", "active")


@admin.register(BlockedValue)
class BlockedValueAdmin(ConfigAdmin):
    list_display = ("identifier_type", "value", "pattern", "reason")
    list_filter = ("identifier_type",)


@admin.register(SurvivorshipRule)
class SurvivorshipRuleAdmin(ConfigAdmin):
    list_display = ("attribute", "strategy")


@admin.register(SourceRecord)
class SourceRecordAdmin(RevealMixin, ImportExportMixin, admin.ModelAdmin):
    """Read-only: records arrive through the API or the CSV import, both through the service.

    The user's records only (their brands, OneIDs they see); raw fields and external ids masked.
    The CSV import is HQ's (all scopes): its rows are not checked against pushable sources."""

    resource_classes = [SourceRecordResource]
    skip_admin_log = True  # audited by the service's domain events, not one admin LogEntry per row
    import_formats = [base_formats.CSV]
    export_formats = [base_formats.CSV]
    list_display = ("id", "source", "external_id_shown", "brand_id", "oneid_shown", "updated_at")
    list_filter = ("source",)
    list_select_related = ("source", "assignment")
    search_fields = ("=external_id",)
    show_full_result_count = False
    fields = ("source", "external_id_shown", "raw_shown", "content_hash", "brand_id", "oneid_shown", "created_at")
    readonly_fields = fields
    reveal_object_type = "identity.sourcerecord"
    reveal_fields = ("raw", "external_id")
    pii_lookup_fields = ("raw", "external_id")

    def get_queryset(self, request):
        return visible_records(request.user, super().get_queryset(request))

    @admin.display(description="external id")
    def external_id_shown(self, obj) -> object:
        return _shown(obj.external_id)

    @admin.display(description="OneID")
    def oneid_shown(self, obj) -> int | None:
        return obj.assigned_oneid_id

    @admin.display(description="raw fields")
    def raw_shown(self, obj) -> str:
        return _json(obj.raw if _revealing.get() else mask_raw(obj.raw))

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_import_permission(self, request) -> bool:
        return sees_everything(request.user) and request.user.has_perms(
            ["identity.add_sourcerecord", "identity.change_sourcerecord"]
        )

    def get_data_for_export(self, request, queryset, **kwargs):
        """Exports are masked for users without PII permission; a PII holder's clear export is logged."""
        dataset = super().get_data_for_export(request, queryset, **kwargs)
        if pii.can_see_pii(request.user):
            pii.log_unmask(request.user, self.reveal_object_type, list(queryset.values_list("pk", flat=True)[:10_000]))
            return dataset
        headers = list(dataset.headers or [])
        rows = [list(row) for row in dataset]
        for row in rows:
            for index, name in enumerate(headers):
                if name == "external_id":
                    row[index] = pii.mask(row[index])
                elif name == "raw" and row[index]:
                    row[index] = _json(mask_raw(json.loads(row[index])))
        dataset.wipe()
        dataset.headers = headers
        for row in rows:
            dataset.append(row)
        return dataset


def _whole(request, ids: list[int]) -> bool:
    """Whether the user sees every record of each OneID in ``ids`` (decisions need the whole person)."""
    if sees_everything(request.user):
        return True
    found = OneId.objects.filter(fully_visible_filter(request.user, "subject_id"), subject_id__in=ids).count()
    return found == len(set(ids))


@admin.action(description="Merge the two selected OneIDs (manual merge)", permissions=["change"])
def merge_selected(modeladmin, request, queryset):
    ids = sorted(queryset.values_list("subject_id", flat=True))
    if len(ids) != 2:
        modeladmin.message_user(request, "Select exactly two OneIDs to merge.", messages.ERROR)
        return None
    if not _whole(request, ids):
        modeladmin.message_user(request, "Not merged: a OneID holds records of brands you do not hold.", messages.ERROR)
        return None
    try:
        survivor = oneid_merge(actor=request.user, oneids=ids, reason="admin")
    except ServiceError as exc:
        modeladmin.message_user(request, f"Not merged: {exc.message}", messages.ERROR)
        return None
    modeladmin.message_user(request, f"Merged into OneID {survivor}.", messages.SUCCESS)
    return None


@admin.register(OneId)
class OneIdAdmin(RevealMixin, admin.ModelAdmin):
    """OneIDs in the user's scope; the page shows the user's part of the person (records, golden
    record recomputed from them, identifiers, links, merges), masked unless revealed."""

    list_display = ("subject_id", "person", "status", "merged_into_id", "updated_at")
    list_filter = ("status",)
    list_select_related = ("subject", "subject__subject_type")
    search_fields = ("=subject__id", "subject__display_name")
    show_full_result_count = False
    actions = [merge_selected]
    fields = ("subject_id", "status", "merged_into_id", "created_at", "updated_at")
    readonly_fields = fields
    reveal_object_type = "identity.oneid"
    reveal_fields = ("display_name", "attributes", "records")

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if sees_everything(request.user):
            return queryset
        return queryset.filter(oneid_filter(request.user, "subject"))

    def get_search_fields(self, request):
        if pii.can_see_pii(request.user):
            return self.search_fields
        return ("=subject__id",)

    def get_list_display(self, request):
        """A scoped user's list leaves the stored golden name out: it may come from another brand's
        record (their part of the person, with its own name, is on the change page)."""
        shown = super().get_list_display(request)
        return shown if sees_everything(request.user) else tuple(f for f in shown if f != "person")

    @admin.display(description="name")
    def person(self, obj) -> object:
        name = obj.subject.display_name
        return name if _revealing.get() or not pii.is_pii_type(obj.subject.subject_type) else pii.mask(name)

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        """Nothing on the page is editable; changes are splits and merges, through the services."""

    def get_urls(self):
        split = path("<int:pk>/split/", self.admin_site.admin_view(self.split_view), name="identity_oneid_split")
        return [split, *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        with contextlib.suppress(ValueError, ServiceError):
            extra_context["detail"] = oneid_detail(
                int(object_id),
                include_records=request.user.has_perm("identity.view_sourcerecord"),
                viewer=request.user,
                masked=not self._reveal(request),
            )
        detail = extra_context.get("detail")
        extra_context["can_split"] = (
            self.has_change_permission(request) and detail is not None and not detail.get("partial")
        )
        return super().change_view(request, object_id, form_url, extra_context)

    def split_view(self, request, pk: int):
        oneid = get_object_or_404(self.get_queryset(request), subject_id=pk)
        if request.method != "POST" or not self.has_change_permission(request, oneid) or not _whole(request, [pk]):
            raise PermissionDenied
        records = [int(r) for r in request.POST.getlist("records") if r.isdigit()]
        try:
            kept, new = oneid_split(
                actor=request.user, oneid=pk, records=records, reason=request.POST.get("reason", "")
            )
        except ServiceError as exc:
            self.message_user(request, f"Not split: {exc.message}", messages.ERROR)
        else:
            self.message_user(request, f"Split: OneID {kept} kept the rest, the selected records are OneID {new}.")
        return HttpResponseRedirect(reverse("admin:identity_oneid_change", args=[pk]))


@admin.register(MergeEvent)
class MergeEventAdmin(RevealMixin, admin.ModelAdmin):
    """Merges and splits of OneIDs the user sees whole; evidence values masked unless revealed."""

    list_display = ("id", "kind", "oneid_id", "rule", "others", "evidence_shown", "actor_id", "created_at")
    list_filter = ("kind",)
    show_full_result_count = False
    fields = (
        "kind",
        "oneid_id",
        "others",
        "rule",
        "evidence_shown",
        "records",
        "actor_id",
        "correlation_id",
        "created_at",
    )
    readonly_fields = fields
    search_fields = ()
    reveal_object_type = "identity.mergeevent"
    reveal_fields = ("evidence",)
    pii_lookup_fields = ("evidence",)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if sees_everything(request.user):
            return queryset
        return queryset.filter(fully_visible_filter(request.user, "oneid_id"))

    @admin.display(description="evidence")
    def evidence_shown(self, obj) -> str:
        return _json(obj.evidence if _revealing.get() else mask_evidence(obj.evidence))

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.action(description="Accept: merge the pair", permissions=["accept"])
def accept_selected(modeladmin, request, queryset):
    for suggestion in queryset.filter(status="open"):
        try:
            suggestion_accept(actor=request.user, suggestion_id=suggestion.id)
        except ServiceError as exc:
            modeladmin.message_user(request, f"Suggestion {suggestion.id}: {exc.message}", messages.ERROR)


@admin.action(description="Reject: never propose the pair again", permissions=["change"])
def reject_selected(modeladmin, request, queryset):
    for suggestion in queryset.filter(status="open"):
        suggestion_reject(actor=request.user, suggestion_id=suggestion.id)


@admin.register(MatchSuggestion)
class MatchSuggestionAdmin(RevealMixin, admin.ModelAdmin):
    """Pairs of OneIDs the user sees whole (the actions act on this queryset only)."""

    list_display = ("id", "oneid_a_id", "oneid_b_id", "score", "evidence_shown", "status", "decided_by_id")
    list_filter = ("status",)
    fields = ("oneid_a_id", "oneid_b_id", "score", "evidence_shown", "status", "decided_by_id", "decided_at")
    readonly_fields = fields
    search_fields = ()
    actions = [accept_selected, reject_selected]
    reveal_object_type = "identity.matchsuggestion"
    reveal_fields = ("evidence",)
    pii_lookup_fields = ("evidence",)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if sees_everything(request.user):
            return queryset
        user = request.user
        return queryset.filter(fully_visible_filter(user, "oneid_a_id"), fully_visible_filter(user, "oneid_b_id"))

    @admin.display(description="evidence")
    def evidence_shown(self, obj) -> str:
        return _json(obj.evidence if _revealing.get() else mask_evidence(obj.evidence))

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("identity.change_matchsuggestion") and obj is None

    def has_accept_permission(self, request) -> bool:
        """Accepting merges two OneIDs: it needs what a manual merge needs (as the API does)."""
        return request.user.has_perms(["identity.change_matchsuggestion", "identity.change_oneid"])


@admin.register(ReapplyRun)
class ReapplyRunAdmin(ReadOnlyAdmin):
    """The re-applications of the rules (after a rule change, or ``reapply_identity_rules``): read-only.

    A run's problems name records and fields, never values; the records themselves are scoped on
    their own page, so runs are shown only to users who see every brand.
    """

    list_display = ("id", "status", "requested_by", "requested_at", "finished_at", "changed", "problems")
    list_filter = ("status",)
    list_select_related = ("requested_by",)
    fields = (
        "status",
        "requested_by",
        "requested_at",
        "started_at",
        "finished_at",
        "covered_by",
        "refresh_golden",
        "records",
        "changed",
        "added",
        "removed",
        "problems",
        "problems_shown",
        "resolution_shown",
        "correlation_id",
        "error",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return queryset if sees_everything(request.user) else queryset.none()

    @admin.display(description="problem samples")
    def problems_shown(self, obj: ReapplyRun) -> str:
        return _json(obj.problem_samples)

    @admin.display(description="resolution")
    def resolution_shown(self, obj: ReapplyRun) -> str:
        return _json(obj.resolution)
