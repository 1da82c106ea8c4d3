from rest_framework.routers import SimpleRouter

from .values import TagValueViewSet
from .views import RecomputeJobViewSet, TagDefinitionViewSet, TagGroupViewSet

router = SimpleRouter()
router.register("tag-groups", TagGroupViewSet)
router.register("tag-definitions", TagDefinitionViewSet)
router.register("recompute-jobs", RecomputeJobViewSet)
router.register("tag-values", TagValueViewSet)
urlpatterns = router.urls
