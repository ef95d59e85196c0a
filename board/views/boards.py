"""The list of boards a user may open."""

from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.shortcuts import render
from django.views.decorators.http import require_GET

from ..models import Board


@login_required
@require_GET
def board_list(request):
    boards = Board.objects.visible_to(request.user).annotate(ticket_count=Count("tickets")).order_by("name")
    return render(request, "board/board_list.html", {"boards": boards})
