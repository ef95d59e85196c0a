"""Board pages, mounted at the site root by omoi_site.urls."""

from django.urls import path

from . import views

app_name = "board"

urlpatterns = [
    path("", views.board_list, name="list"),
    # Before boards/<slug>/: "new" is a reserved slug (board.models.RESERVED_BOARD_SLUGS).
    path("boards/new/", views.board_create_view, name="board-create"),
    path("boards/<slug:slug>/members/", views.board_members_view, name="members"),
    path("boards/<slug:slug>/members/<int:user_id>/role/", views.board_member_role_view, name="member-role"),
    path("boards/<slug:slug>/members/<int:user_id>/remove/", views.board_member_remove_view, name="member-remove"),
    path("boards/<slug:slug>/", views.board_detail, name="detail"),
    path("boards/<slug:slug>/columns/", views.board_columns_fragment, name="columns"),
    path("boards/<slug:slug>/columns/<slug:key>/cards/", views.column_more, name="column-more"),
    path("boards/<slug:slug>/agents/", views.agents_view, name="agents"),
    path("boards/<slug:slug>/agents/<int:pk>/revoke/", views.agent_revoke_view, name="agent-revoke"),
    path("boards/<slug:slug>/tickets/new/", views.ticket_create_view, name="ticket-create"),
    path("boards/<slug:slug>/tickets/<int:pk>/", views.ticket_detail, name="ticket"),
    path("boards/<slug:slug>/tickets/<int:pk>/edit/", views.ticket_edit_view, name="ticket-edit"),
    path("boards/<slug:slug>/tickets/<int:pk>/move/", views.ticket_move_view, name="ticket-move"),
    path("boards/<slug:slug>/tickets/<int:pk>/comments/", views.tickets.ticket_comment_view, name="ticket-comment"),
    path("boards/<slug:slug>/tickets/<int:pk>/phase/", views.tickets.ticket_phase_view, name="ticket-phase"),
    path(
        "boards/<slug:slug>/tickets/<int:pk>/results/<int:result_pk>/review/",
        views.ticket_result_review_view,
        name="result-review",
    ),
]
