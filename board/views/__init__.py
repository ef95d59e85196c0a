"""Board pages, one module per page; the URLconf reaches them through these names."""

from .agents import agent_revoke_view, agents_view
from .board import board_columns_fragment, board_detail, column_more, ticket_move_view
from .boards import (
    board_create_view,
    board_list,
    board_member_remove_view,
    board_member_role_view,
    board_members_view,
)
from .tickets import ticket_create_view, ticket_detail, ticket_edit_view, ticket_result_review_view

__all__ = [
    "agent_revoke_view",
    "agents_view",
    "board_columns_fragment",
    "board_create_view",
    "board_detail",
    "board_list",
    "board_member_remove_view",
    "board_member_role_view",
    "board_members_view",
    "column_more",
    "ticket_create_view",
    "ticket_detail",
    "ticket_edit_view",
    "ticket_move_view",
    "ticket_result_review_view",
]
