"""ASGI entry point: HTTP through Django, websockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omoi_site.settings")

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from board.middleware import ApiBodyGuard, OriginCheckedUnlessBearer  # noqa: E402
from board.routing import websocket_urlpatterns  # noqa: E402
from omoi_site.mcp import MCP_PATH  # noqa: E402

websocket = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))

application = ProtocolTypeRouter(
    {
        # The guard answers oversized or unauthenticated API and MCP writes before Django reads their body.
        "http": ApiBodyGuard(django_asgi_app, mcp_path=MCP_PATH),
        "websocket": OriginCheckedUnlessBearer(websocket, checked=AllowedHostsOriginValidator(websocket)),
    }
)
