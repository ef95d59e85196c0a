"""The board's agents page, and revoking an agent from it."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from ..models import Agent
from ..selectors import (
    board_agents,
    last_event_id,
)
from ..services import agent_revoke, agent_silence_limit
from .common import board_for, vary_on_htmx


@login_required
@require_GET
def agents_view(request, slug):
    """The board's agents: what each is, holds and has done; staff may revoke one. htmx gets the list alone."""
    board = board_for(request, slug)
    # Read before the list: whatever happens after this id, the page's live connection replays.
    seen = last_event_id(board.pk)
    now = timezone.now()
    context = {
        "board": board,
        "rows": board_agents(board, now=now, silence_limit=agent_silence_limit()),
        "now": now,
        "heartbeat_seconds": int(settings.OMOI_HEARTBEAT_INTERVAL.total_seconds()),
        "may_revoke": request.user.is_staff,
        "last_event_id": seen,
        "tickets_url": reverse("board:ticket-create", args=[board.slug]).removesuffix("new/"),
    }
    template = "board/agents.html#agent-list" if request.htmx and not request.htmx.boosted else "board/agents.html"
    return vary_on_htmx(render(request, template, context))


@login_required
@require_POST
def agent_revoke_view(request, slug, pk):
    """Staff revoke an agent's token from the agents page; it stops working on every board at once."""
    board = board_for(request, slug)
    agent = get_object_or_404(Agent, boards=board, pk=pk)
    if not request.user.is_staff:
        raise PermissionDenied("Only staff may revoke an agent.")
    if agent.is_revoked:
        messages.error(request, f"Agent {agent.name} was already revoked.")
    else:
        agent_revoke(agent=agent, actor=request.user)
        messages.success(
            request, f"Agent {agent.name} is revoked: its token no longer works, and its tasks went back to the queue."
        )
    return redirect(f"{reverse('board:agents', args=[board.slug])}#agent-{agent.pk}")
