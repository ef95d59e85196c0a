"""What every board page shares: the board a user may see, filters kept in links, plain-text refusals."""

from urllib.parse import urlencode

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.utils.cache import patch_vary_headers

from phases.models import Phase

from ..models import Board

FILTER_FIELDS = ("priority", "phase", "q", "blocked", "lanes")


def board_for(request, slug):
    """The board if the user is a member or staff; 404 otherwise, so that outsiders learn nothing."""
    return get_object_or_404(Board.objects.visible_to(request.user).select_related("workflow"), slug=slug)


def workflow_phases(board):
    return list(Phase.objects.filter(workflow_id=board.workflow_id).with_transitions().in_order())


def filter_query(data):
    """The filter part of a query string, to keep filters on links, fragments and redirects."""
    return urlencode([(name, value) for name in FILTER_FIELDS for value in data.getlist(name) if value])


def bad_request(message):
    """A refusal of a fragment request, as plain text: what the user sent is never read as markup."""
    return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")


def shown(value):
    """A value the user sent, quoted and cut short for a message."""
    return repr(value if len(value) <= 64 else value[:63] + "…")


def vary_on_htmx(response):
    patch_vary_headers(response, ("HX-Request",))
    return response
