"""Pages about what agents found and how the work branched, under a board: mounted at the site root."""

from django.urls import path

from .views import analytics, graph, listing

app_name = "discoveries"

urlpatterns = [
    path("boards/<slug:slug>/graph/", graph.board_graph, name="board-graph"),
    path("boards/<slug:slug>/graph/data/", graph.board_graph_data, name="board-graph-data"),
    path("boards/<slug:slug>/graph/tasks/<int:pk>/", graph.graph_task, name="graph-task"),
    path("boards/<slug:slug>/tickets/<int:pk>/graph/", graph.ticket_graph, name="ticket-graph"),
    path("boards/<slug:slug>/tickets/<int:pk>/graph/data/", graph.ticket_graph_data, name="ticket-graph-data"),
    path("boards/<slug:slug>/discoveries/", listing.discovery_list, name="list"),
    path("boards/<slug:slug>/analytics/", analytics.board_analytics, name="analytics"),
    path("boards/<slug:slug>/discoveries/<int:pk>/resolve/", listing.discovery_resolve_view, name="resolve"),
]
