"""The analytics page of a board: its flow (cumulative flow, lead and cycle time, throughput, WIP aging) and its discoveries."""

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from board.models import Board

from ..analytics import (
    PERCENTILES,
    RANGE_CHOICES,
    WIP_LISTED,
    discovery_analytics,
    flow_analytics,
    name_tickets,
    parse_days,
)
from ..charts import (
    MAX_POINTS,
    aging_chart,
    cfd_chart,
    column_colors,
    discovery_charts,
    throughput_chart,
    time_scatter,
)
from ..models import Discovery


def _board_for(request, slug):
    """The board if the user is a member or staff; 404 otherwise, so that outsiders learn nothing."""
    return get_object_or_404(Board.objects.visible_to(request.user).select_related("workflow"), slug=slug)


@login_required
@require_GET
def board_analytics(request, slug):
    """`?days=N` (1 to 365, 30 by default) sets the range; anything else is answered 400, saying what is allowed."""
    board = _board_for(request, slug)
    context = {"board": board, "ranges": RANGE_CHOICES, "percentiles": PERCENTILES}
    try:
        days = parse_days(request.GET.get("days"))
    except ValueError as exc:
        return render(request, "discoveries/analytics.html", {**context, "error": str(exc)}, status=400)

    flow = flow_analytics(board, days=days)
    finished = flow.finished[-MAX_POINTS:]
    oldest = flow.wip[:MAX_POINTS]
    # One query names every ticket the charts and tables show.
    name_tickets(finished + oldest)
    colors = column_colors(flow.columns)
    stats = discovery_analytics(Board.objects.filter(pk=board.pk), days=days)
    charts = {
        "cfd": cfd_chart(flow),
        "cycle": time_scatter(flow, kind="cycle"),
        "lead": time_scatter(flow, kind="lead"),
        "throughput": throughput_chart(flow),
        "aging": aging_chart(flow),
        **discovery_charts(
            stats,
            type_labels=dict(Discovery.Type.choices),
            status_labels=dict(Discovery.Resolution.choices),
            phase_colors={key: colors[index] for key, index in flow.column_of.items()},
        ),
    }
    context.update(
        {
            "days": days,
            "ranges": sorted({*RANGE_CHOICES, days}),
            "flow": flow,
            "stats": stats,
            "charts": charts,
            "legend": [
                {"name": column.name, "color": color, "category": column.category}
                for column, color in zip(flow.columns, colors, strict=True)
            ],
            "cfd_rows": [(day, counts) for day, counts in reversed(flow.cfd)],
            # The range cuts its first and last weeks short: the table says by how much.
            "weeks": [
                {
                    "start": week,
                    "count": count,
                    "days": (
                        min(week + timedelta(days=6), flow.window.last_day) - max(week, flow.window.first_day)
                    ).days
                    + 1,
                }
                for week, count in flow.throughput
            ],
            "finished": list(reversed(finished)),
            "finished_count": len(flow.finished),
            "cycle_count": len(flow.cycle_times),
            "wip_listed": [
                {"item": item, "column": flow.columns[item.column], "past": flow.age_rank(item.age_days)}
                for item in oldest[:WIP_LISTED]
            ],
            "type_rows": [
                (label, stats["by_type"].get(value, 0))
                for value, label in Discovery.Type.choices
                if stats["by_type"].get(value)
            ],
            "status_rows": [(label, stats["by_status"].get(value, 0)) for value, label in Discovery.Resolution.choices],
            "tickets_url": reverse("board:ticket-create", args=[board.slug]).removesuffix("new/"),
        }
    )
    return render(request, "discoveries/analytics.html", context)
