"""Pages about what agents found and how the work branched, under a board: mounted at the site root."""

from django.urls import path  # noqa: F401 (each page module adds its routes below)

from .views import analytics, listing

app_name = "discoveries"

urlpatterns = [
    path("boards/<slug:slug>/discoveries/", listing.discovery_list, name="list"),
    path("boards/<slug:slug>/analytics/", analytics.board_analytics, name="analytics"),
    path("boards/<slug:slug>/discoveries/<int:pk>/resolve/", listing.discovery_resolve_view, name="resolve"),
]
