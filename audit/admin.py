from django.contrib import admin

from .models import DomainEvent


@admin.register(DomainEvent)
class DomainEventAdmin(admin.ModelAdmin):
    list_display = (
        "occurred_at",
        "action",
        "actor",
        "object_type",
        "row_count",
        "correlation_id",
    )
    list_filter = ("action", "object_type")
    search_fields = ("=correlation_id", "action")
    date_hierarchy = "occurred_at"
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
