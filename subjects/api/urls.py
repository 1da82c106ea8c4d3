from rest_framework.routers import DefaultRouter

from .views import RelationshipTypeViewSet, RelationshipViewSet, SubjectTypeViewSet, SubjectViewSet

router = DefaultRouter()
router.register("subject-types", SubjectTypeViewSet)
router.register("relationship-types", RelationshipTypeViewSet)
router.register("subjects", SubjectViewSet)
router.register("relationships", RelationshipViewSet)
urlpatterns = router.urls
