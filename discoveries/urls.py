"""Pages about what agents found and how the work branched, under a board: mounted at the site root."""

from django.urls import path  # noqa: F401 (each page module adds its routes below)

app_name = "discoveries"

urlpatterns = []
