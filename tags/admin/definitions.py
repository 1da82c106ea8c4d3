"""Admin of tag groups and tag definitions: options and new rule versions in the tag's form, and the
verbs as buttons — preview (counts per value and changes), activate a version, archive, recompute.

Verbs are POSTs to the tag's own admin URLs that call ``tags.services`` and report
the outcome as a message; a refusal (an archive while other tags read the tag)
shows the service's message, which lists the dependents.

Access (``tags.access``): lists and pages hold only groups and tags the operator may see; a
visible one they may not edit opens read-only, and its verbs are refused. Both admins are
guardian's object-permission admins ("Object permissions" on the page), where an operator who
may edit a group or a tag grants view / use / change on it to users and groups — a grant on a
group covers all its tags.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from guardian.admin import GuardedModelAdminMixin

from common.errors import ServiceError
from subjects.access import visible_subjects
from subjects.admin_base import ServiceAdmin
from tags import access
from tags.models import Computation, TagDefinition, TagDependency, TagGroup, TagRule
from tags.services import definitions, recompute

from .forms import TagDefinitionForm, TagGroupForm


class TagAccessAdminMixin(GuardedModelAdminMixin):
    """Visible objects only; change (and managing grants) only on editable ones.

    The grant pages are guardian's; they are reached only for an object the operator may edit,
    so nobody hands out access they do not hold.
    """

    def visible(self, request, queryset):
        raise NotImplementedError

    def editable(self, request, queryset):
        raise NotImplementedError

    def get_queryset(self, request):
        return self.visible(request, super().get_queryset(request))

    def has_change_permission(self, request, obj=None) -> bool:
        if not super().has_change_permission(request, obj):
            return False
        return obj is None or self.editable(request, type(obj).objects.filter(pk=obj.pk)).exists()

    def _may_grant(self, request, object_pk) -> None:
        pk = _version(str(object_pk))
        found = self.editable(request, self.model.objects.filter(pk=pk)).exists() if pk else False
        if not (found and super().has_change_permission(request, None)):
            raise PermissionDenied

    def obj_perms_manage_view(self, request, object_pk):
        self._may_grant(request, object_pk)
        return super().obj_perms_manage_view(request, object_pk)

    def obj_perms_manage_user_view(self, request, object_pk, user_id):
        self._may_grant(request, object_pk)
        return super().obj_perms_manage_user_view(request, object_pk, user_id)

    def obj_perms_manage_group_view(self, request, object_pk, group_id):
        self._may_grant(request, object_pk)
        return super().obj_perms_manage_group_view(request, object_pk, group_id)


@admin.register(TagGroup)
class TagGroupAdmin(TagAccessAdminMixin, ServiceAdmin):
    form = TagGroupForm
    actions = []
    list_display = ("code", "name", "subject_type", "brand", "view_policy", "use_policy", "edit_policy", "position")
    list_filter = ("subject_type", "view_policy", "use_policy", "edit_policy")
    list_select_related = ("subject_type", "brand")
    search_fields = ("code", "name")

    def visible(self, request, queryset):
        return access.visible_groups(request.user, queryset)

    def editable(self, request, queryset):
        return access.editable_groups(request.user, queryset)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        """A brand is chosen among the brands the operator sees (the service checks they hold it)."""
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "brand" and field is not None:
            field.queryset = visible_subjects(request.user, field.queryset)
        return field

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # groups are kept: their tags' history refers to them


@admin.register(TagDefinition)
class TagDefinitionAdmin(TagAccessAdminMixin, ServiceAdmin):
    form = TagDefinitionForm
    actions = ["recompute_selected"]
    list_display = (
        "code", "name", "subject_type", "group", "value_type", "computation", "status", "version", "last_computed_at",
    )  # fmt: skip
    # RelatedOnlyFieldListFilter: the group filter offers only the groups of visible tags.
    list_filter = ("subject_type", ("group", admin.RelatedOnlyFieldListFilter), "status", "computation", "value_type")
    list_select_related = ("subject_type", "group")
    search_fields = ("code", "name")
    raw_id_fields = ("owner",)
    readonly_fields = (
        "subject_type", "version", "last_computed_at", "dependencies_list", "dependents_list", "rule_versions",
        "recent_jobs", "created_at", "updated_at",
    )  # fmt: skip
    change_form_template = "admin/tags/tagdefinition/change_form.html"

    def visible(self, request, queryset):
        return access.visible_tags(request.user, queryset)

    def editable(self, request, queryset):
        return access.editable_tags(request.user, queryset)

    def get_queryset(self, request):
        """Visible tags, with only the visible tags they read and are read by."""
        user = request.user
        dependencies = TagDependency.objects.filter(access.visible_tag_filter(user, "depends_on"))
        dependents = TagDependency.objects.filter(access.visible_tag_filter(user, "tag"))
        return (
            super()
            .get_queryset(request)
            .prefetch_related(
                Prefetch("dependencies", queryset=dependencies.select_related("depends_on")),
                Prefetch("dependents", queryset=dependents.select_related("tag")),
            )
        )

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        """A tag is put only in a group the operator may edit."""
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "group" and field is not None:
            field.queryset = access.editable_groups(request.user, field.queryset)
        return field

    def get_fieldsets(self, request, obj=None):
        main = ("group", "code", "name", "description", "value_type", "unit", "owner", "status", "computation")
        sets = [(None, {"fields": main}), ("Options", {"fields": ("options",)})]
        if obj is None or obj.computation == Computation.RULE:
            sets.append(("Rule", {"fields": ("rule_versions", "new_rule", "activate_new_rule")}))
        if obj is not None:
            sets.append(
                (
                    "Computation and dependencies",
                    {
                        "fields": (
                            "subject_type",
                            "version",
                            "last_computed_at",
                            "dependencies_list",
                            "dependents_list",
                            "recent_jobs",
                            "created_at",
                            "updated_at",
                        )
                    },
                )
            )
        return sets

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # tags are archived, not deleted: their history stays readable

    @admin.display(description="Reads (dependencies)")
    def dependencies_list(self, obj) -> str:
        return _tag_links(d.depends_on for d in obj.dependencies.all())

    @admin.display(description="Read by (dependents)")
    def dependents_list(self, obj) -> str:
        return _tag_links(d.tag for d in obj.dependents.all())

    @admin.display(description="Rule versions")
    def rule_versions(self, obj) -> str:
        if obj is None or obj.pk is None:
            return "—"
        rows = TagRule.objects.filter(tag=obj).order_by("-version")[:20]
        if not rows:
            return "No versions yet."
        preview = reverse("admin:tags_tagdefinition_preview", args=[obj.pk])
        return format_html(
            "<table><tr><th>Version</th><th>Saved</th><th>Activated</th><th></th></tr>{}</table>",
            format_html_join(
                "",
                '<tr><td>v{}{}</td><td>{}</td><td>{}</td><td><a href="{}?version={}">preview</a></td></tr>',
                (
                    (
                        r.version,
                        " (active)" if r.pk == obj.rule_id else "",
                        r.created_at,
                        r.activated_at or "—",
                        preview,
                        r.version,
                    )
                    for r in rows
                ),
            ),
        )

    @admin.display(description="Recent recomputes")
    def recent_jobs(self, obj) -> str:
        jobs = obj.recompute_jobs.order_by("-id")[:5] if obj and obj.pk else []
        if not jobs:
            return "—"
        return format_html_join(
            "<br>",
            '<a href="{}">#{}</a> {} — {}/{} chunks, {} rows changed',
            (
                (
                    reverse("admin:tags_recomputejob_change", args=[j.pk]),
                    j.pk,
                    j.status,
                    j.chunks_done,
                    j.chunks_total,
                    j.rows_changed,
                )
                for j in jobs
            ),
        )

    # Verbs -----------------------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/preview/", view(self.preview_view), name="tags_tagdefinition_preview"),
            path("<int:pk>/activate/", view(self.activate_view), name="tags_tagdefinition_activate"),
            path("<int:pk>/archive/", view(self.archive_view), name="tags_tagdefinition_archive"),
            path("<int:pk>/recompute/", view(self.recompute_view), name="tags_tagdefinition_recompute"),
            *super().get_urls(),
        ]

    def _tag(self, request, pk: int, *, change: bool) -> TagDefinition:
        """The URL's tag: 404 unless visible, 403 when a change is asked of a tag one may not edit."""
        tags = access.visible_tags(request.user, TagDefinition.objects.select_related("rule", "subject_type", "group"))
        tag = get_object_or_404(tags, pk=pk)
        allowed = self.has_change_permission(request, tag) if change else self.has_view_permission(request, tag)
        if not allowed:
            raise PermissionDenied
        return tag

    def _back(self, tag: TagDefinition) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:tags_tagdefinition_change", args=[tag.pk]))

    def preview_view(self, request, pk: int):
        """Counts per value and changes against the stored values, by the SQL the recompute runs."""
        from tags.services import preview

        tag = self._tag(request, pk, change=False)
        version = _version(request.GET.get("version"))
        if version is None:
            version = TagRule.objects.filter(tag=tag).order_by("-version").values_list("version", flat=True).first()
        saved = TagRule.objects.filter(tag=tag, version=version).first() if version else None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": tag,
            "title": f"Preview of {tag.name}" + (f" v{saved.version}" if saved else ""),
            "rule": saved,
            "can_activate": saved is not None and saved.pk != tag.rule_id and self.has_change_permission(request, tag),
        }
        if saved is None:
            context["error"] = "This tag has no rule version to preview."
        else:
            try:
                result = preview.preview_rule(tag, saved.document, user=request.user)
            except ServiceError as exc:
                context["error"] = exc.message
                context["errors"] = exc.errors
            else:
                options = dict(tag.options.values_list("value", "label"))
                context["result"] = result
                context["rows"] = [(value, options.get(value, value), n) for value, n in result["counts"].items()]
        return TemplateResponse(request, "admin/tags/tagdefinition/preview.html", context)

    def activate_view(self, request, pk: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        tag = self._tag(request, pk, change=True)
        version = _version(request.POST.get("version"))
        try:
            definitions.activate_rule(actor=request.user, tag=tag, version=version or 0)
        except ServiceError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return self._back(tag)
        self.message_user(request, f"Version {version} of {tag.name} is active; a full recompute was queued.")
        return self._back(tag)

    def archive_view(self, request, pk: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        tag = self._tag(request, pk, change=True)
        try:
            definitions.archive(actor=request.user, tag=tag)
        except ServiceError as exc:
            self.message_user(request, f"Not archived: {exc.message}", messages.ERROR)
            return self._back(tag)
        self.message_user(request, f"{tag.name} is archived.")
        return self._back(tag)

    def recompute_view(self, request, pk: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        tag = self._tag(request, pk, change=True)
        try:
            job = recompute.start_recompute(tag, actor=request.user)
        except ServiceError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return self._back(tag)
        self.message_user(request, f"Recompute of {tag.name} queued (job #{job.pk}).")
        return HttpResponseRedirect(reverse("admin:tags_recomputejob_change", args=[job.pk]))

    @admin.action(description="Recompute the selected rule tags", permissions=["change"])
    def recompute_selected(self, request, queryset):
        started, refused = [], []
        for tag in access.editable_tags(request.user, queryset.select_related("rule"))[:50]:
            try:
                started.append(recompute.start_recompute(tag, actor=request.user).pk)
            except ServiceError as exc:
                refused.append(exc.message)
        if started:
            self.message_user(request, f"Recompute queued: jobs {', '.join(f'#{p}' for p in started)}.")
        for message in refused:
            self.message_user(request, message, messages.WARNING)


def _version(text) -> int | None:
    return int(text) if isinstance(text, str) and text.isdigit() and len(text) < 9 else None


def _tag_links(tags) -> str:
    tags = sorted(tags, key=lambda t: t.code)
    if not tags:
        return "—"
    return format_html_join(
        ", ", '<a href="{}">{}</a>', ((reverse("admin:tags_tagdefinition_change", args=[t.pk]), t.code) for t in tags)
    )
