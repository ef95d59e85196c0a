"""Root URLs: the composition of every app's pages."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, reverse_lazy

from .api import api
from .mcp import MCP_PATH
from .mcp import server as mcp_server

# The admin speaks of Omoi; "View site" goes back to the board list.
admin.site.site_header = admin.site.site_title = "Omoi administration"
admin.site.site_url = reverse_lazy("board:list")

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    # Agent CLIs over MCP (CSRF-exempt, as the API: each request carries its bearer token).
    path(MCP_PATH.removeprefix("/"), mcp_server, name="mcp"),
    path("", include("board.urls")),
    path("", include("discoveries.urls")),
]
