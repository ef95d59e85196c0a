"""Websocket routes of the board app, mounted under `/ws/` by omoi_site.asgi."""

from django.urls import path

from .consumers import BoardConsumer

websocket_urlpatterns = [
    path("ws/boards/<slug:slug>/", BoardConsumer.as_asgi()),
]
