from rest_framework.routers import SimpleRouter

from .views import (
    BlockedValueViewSet,
    CompositeKeyViewSet,
    IdentifierTypeViewSet,
    MatchSuggestionViewSet,
    OneIdViewSet,
    ReapplyRunViewSet,
    SourceRecordViewSet,
    SourceSystemViewSet,
)

router = SimpleRouter()
router.register("source-systems", SourceSystemViewSet)
router.register("identifier-types", IdentifierTypeViewSet)
router.register("composite-keys", CompositeKeyViewSet)
router.register("blocked-values", BlockedValueViewSet)
router.register("source-records", SourceRecordViewSet)
router.register("oneids", OneIdViewSet)
router.register("match-suggestions", MatchSuggestionViewSet)
router.register("reapply-runs", ReapplyRunViewSet)
urlpatterns = router.urls
