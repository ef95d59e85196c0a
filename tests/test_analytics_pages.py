"""The analytics page: who sees it, its range, its charts with their numbers as text, escaping, and its query count."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from board.models import Board, PhaseHistory, Ticket
from board.services import task_create, ticket_create
from discoveries.models import Discovery
from discoveries.services import discovery_branch

from .history_samples import history

pytestmark = pytest.mark.django_db

MARKUP = '<script>alert("x")</script><b>bold</b>'


@pytest.fixture
def bob_client(client, bob):
    client.force_login(bob)
    return client


def analytics_url(board, query=""):
    url = reverse("discoveries:analytics", args=[board.slug])
    return f"{url}?{query}" if query else url


def cells(html, table_id):
    """The text of each row of the table with `id`, as lists of cell texts."""
    table = re.search(rf'<table class="table data-table" id="{table_id}">(.*?)</table>', html, re.S)[1]
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)
    ]


# Who sees it


def test_members_see_the_page(bob_client, board):
    response = bob_client.get(analytics_url(board))
    assert response.status_code == 200
    assert b"<h1>Analytics of Alice&#x27;s board</h1>" in response.content
    assert b'aria-current="page">Analytics</a>' in response.content


def test_staff_see_any_board(alice_client, workflow):
    secret = Board.objects.create(name="Secret", slug="secret", workflow=workflow)
    assert alice_client.get(analytics_url(secret)).status_code == 200


def test_outsiders_get_404(client, charlie, board):
    client.force_login(charlie)
    assert client.get(analytics_url(board)).status_code == 404
    assert client.get(analytics_url(board, "days=abc")).status_code == 404


def test_anonymous_visitors_are_asked_to_log_in(client, board):
    response = client.get(analytics_url(board))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_an_unknown_board_is_404(bob_client, board):
    assert bob_client.get(reverse("discoveries:analytics", args=["nowhere"])).status_code == 404


def test_only_get(bob_client, board):
    assert bob_client.post(analytics_url(board)).status_code == 405


# The range


def test_the_range_defaults_to_30_days_and_is_chosen_in_the_url(bob_client, board):
    html = bob_client.get(analytics_url(board)).content.decode()
    assert '<a href="?days=30" aria-current="page">Last 30 days</a>' in html
    assert html.count('<tr><th scope="row">') >= 30

    html = bob_client.get(analytics_url(board, "days=90")).content.decode()
    assert '<a href="?days=90" aria-current="page">Last 90 days</a>' in html
    first = timezone.localdate() - timedelta(days=89)
    assert f"Flow, {first.day} {first:%b %Y} to" in html

    # Any number of days in range is taken, and offered among the others.
    html = bob_client.get(analytics_url(board, "days=14")).content.decode()
    assert '<a href="?days=14" aria-current="page">Last 14 days</a>' in html


@pytest.mark.parametrize("days", ["0", "366", "abc", "7.5", "-3", "1e3", "9" * 100, MARKUP])
def test_a_bad_range_is_refused_clearly(bob_client, board, days):
    response = bob_client.get(analytics_url(board), {"days": days})

    assert response.status_code == 400
    html = response.content.decode()
    assert "The range must be a whole number of days from 1 to 365, not " in html
    assert 'role="alert"' in html
    assert "<script>alert" not in html and "<b>bold" not in html
    # The ranges on offer are still there to pick from.
    assert '<a href="?days=30"' in html


# Charts and their numbers


@pytest.fixture
def finished(board):
    """Four tickets finished with cycle times of 1 to 4 days, and one in Building for ten days."""
    now = timezone.now()
    for n in range(1, 5):
        done = now - timedelta(days=2)
        history(
            board,
            f"Finished {n}",
            ("PHASE_BACKLOG", done - timedelta(days=n + 1)),
            ("PHASE_IMPLEMENTATION", done - timedelta(days=n)),
            ("PHASE_DONE", done),
        )
    return history(
        board,
        MARKUP,
        ("PHASE_BACKLOG", now - timedelta(days=12)),
        ("PHASE_IMPLEMENTATION", now - timedelta(days=10)),
    )


def test_the_percentiles_are_shown_as_numbers(bob_client, board, finished):
    html = bob_client.get(analytics_url(board)).content.decode()

    # Cycle times 1, 2, 3, 4 days: nearest rank gives 2, 4 and 4; lead times are a day longer.
    assert cells(html, "percentiles") == [
        ["Measure", "Tickets", "50th percentile", "85th percentile", "95th percentile"],
        ["Cycle time (days)", "4", "2.0", "4.0", "4.0"],
        ["Lead time (days)", "4", "3.0", "5.0", "5.0"],
    ]
    assert cells(html, "wip-columns")[1] == ["Building", "1", "10.0", "10.0", "1"]


def test_each_chart_is_an_image_with_a_title_and_a_description(bob_client, board, finished):
    html = bob_client.get(analytics_url(board)).content.decode()

    charts = re.findall(r"<svg class=\"chart[^\"]*\"[^>]*>", html)
    assert len(charts) == 9
    for chart in charts:
        assert 'role="img"' in chart
        ident = re.search(r'aria-labelledby="(\S+)-title \1-desc"', chart)[1]
        assert f'<title id="{ident}-title">' in html and f'<desc id="{ident}-desc">' in html
    cycle = re.search(r'<svg class="chart"[^>]*id="chart-cycle-time".*?</svg>', html, re.S)[0]
    assert cycle.count("<circle") == 4
    assert "50th 2 d" in cycle and "85th 4 d" in cycle
    assert "50th percentile 2 days, 85th percentile 4 days, 95th percentile 4 days." in cycle
    # The cumulative flow says where the tickets are today, in words too.
    cfd = re.search(r'<desc id="cfd-desc">(.*?)</desc>', html, re.S)[1]
    assert "Backlog 0, Analyzing 0, Building 1, Testing 0, Deploying 0, Done 4, Blocked 0." in cfd
    # Each column in its own colour (the default workflow's palette).
    assert "--fill: var(--green)" in html and "--fill: var(--violet)" in html


def test_the_daily_table_gives_each_columns_count(bob_client, board, finished):
    html = bob_client.get(analytics_url(board, "days=7")).content.decode()
    today = timezone.localdate()
    row = re.search(rf'<tr><th scope="row">{today.day} {today:%b %Y}</th>(.*?)</tr>', html)[1]
    assert re.findall(r"<td>(\d+)</td>", row) == ["0", "0", "1", "0", "0", "4", "0"]


def test_markup_in_agent_sent_text_is_shown_escaped(bob_client, board, finished, alice, builder):
    agent, _ = builder
    task = task_create(ticket=finished, title=MARKUP, actor=alice)
    discovery_branch(source_task=task, discovery_type="bug", description=MARKUP, actor=agent, title=MARKUP)

    html = bob_client.get(analytics_url(board)).content.decode()

    assert "<script>alert" not in html and "<b>bold" not in html
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;"
    # In the open discoveries list, and as the ticket's name in the aging table and chart.
    assert html.count(escaped) >= 3
    assert "agent:builder" in html


def test_the_open_discoveries_are_listed_newest_first(bob_client, board, alice):
    task = task_create(ticket=ticket_create(board=board, title="T", actor=alice), title="Work", actor=alice)
    for n in range(3):
        discovery_branch(source_task=task, discovery_type="bug", description=f"Found {n}", actor=alice)
    Discovery.objects.filter(description="Found 1").update(resolution_status="resolved")

    html = bob_client.get(analytics_url(board)).content.decode()

    assert html.index("Found 2") < html.index("Found 0")
    assert "Found 1" not in html
    assert "33%" in html and "(1 of 3 resolved or invalid)" in html


# Query count


def bulk_history(board, tickets, *, rows_each):
    """`tickets` tickets, each moved `rows_each` times over the last 40 days, with tasks and discoveries; in bulk."""
    phases = list(board.workflow.phases.in_order())
    now = timezone.now()
    made = Ticket.objects.bulk_create(
        Ticket(board=board, title=f"Ticket {n}", phase=phases[n % len(phases)]) for n in range(tickets)
    )
    rows = [
        PhaseHistory(ticket=ticket, to_key=phases[(n + step) % len(phases)].key, actor="bulk")
        for n, ticket in enumerate(made)
        for step in range(rows_each)
    ]
    PhaseHistory.objects.bulk_create(rows)
    # In the order made, spread over the 40 days (auto_now_add stamped them all now).
    step = timedelta(days=40) / len(rows)
    for index, row in enumerate(rows):
        row.created_at = now - step * (len(rows) - index)
    PhaseHistory.objects.bulk_update(rows, ["created_at"], batch_size=500)
    return made


def count_queries(client, url):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


def test_the_page_costs_the_same_queries_with_a_short_or_a_long_history(bob_client, board, alice):
    def grow(tickets, rows_each):
        made = bulk_history(board, tickets, rows_each=rows_each)
        for ticket in made[:3]:
            task = task_create(ticket=ticket, title="Work", actor=alice)
            discovery_branch(source_task=task, discovery_type="bug", description="Found", actor=alice)

    grow(3, 2)
    few = count_queries(bob_client, analytics_url(board))
    grow(60, 12)
    assert PhaseHistory.objects.count() > 700
    many = count_queries(bob_client, analytics_url(board, "days=90"))

    assert few == many
    assert many <= 16


# The JSON for agents: GET /api/v1/discoveries/analytics


@pytest.fixture
def two_boards(board, workflow, alice):
    """A discovery on Alice's board, and two on a board Builder is not on."""
    task = task_create(ticket=ticket_create(board=board, title="Here", actor=alice), title="Work", actor=alice)
    discovery_branch(source_task=task, discovery_type="bug", description=MARKUP, actor=alice)
    other = Board.objects.create(name="Other", slug="other", workflow=workflow)
    elsewhere = task_create(ticket=ticket_create(board=other, title="There", actor=alice), title="W", actor=alice)
    for kind in ("security_issue", "optimization"):
        discovery_branch(source_task=elsewhere, discovery_type=kind, description="Secret", actor=alice)
    return other


def test_the_json_counts_the_agents_boards_only(api, board, two_boards):
    response = api.get("/discoveries/analytics")

    assert response.status_code == 200
    data = response.json()
    assert data["boards"] == [board.slug]
    assert data["total"] == 1
    assert {kind: count for kind, count in data["by_type"].items() if count} == {"bug": 1}
    assert set(data["by_type"]) == set(Discovery.Type.values)
    assert data["by_status"] == {"open": 1, "resolved": 0, "invalid": 0}
    assert data["by_phase"] == [{"phase": "PHASE_BACKLOG", "name": "Backlog", "count": 1}]
    assert data["resolution_rate"] == 0.0
    assert data["branch_depth"] == {"spawned_tasks": 1, "average": 1.0, "max": 1}
    assert len(data["per_day"]) == 30 and data["per_day"][-1] == {"date": timezone.localdate().isoformat(), "count": 1}
    [found] = data["open"]
    # JSON carries the text as sent; it is the page that escapes it.
    assert (found["board"], found["description"], found["phase"]) == (board.slug, MARKUP, "PHASE_BACKLOG")
    assert "Secret" not in response.content.decode()


def test_the_json_covers_every_board_of_the_agent_or_the_one_asked(api, board, two_boards, builder):
    builder[0].boards.add(two_boards)

    assert api.get("/discoveries/analytics").json()["total"] == 3
    one = api.get(f"/discoveries/analytics?board={two_boards.slug}&days=7").json()
    assert (one["boards"], one["total"], len(one["per_day"])) == ([two_boards.slug], 2, 7)


def test_another_boards_analytics_do_not_exist_for_the_agent(api, two_boards):
    response = api.get(f"/discoveries/analytics?board={two_boards.slug}")
    assert response.status_code == 404
    assert "Secret" not in response.content.decode()


@pytest.mark.parametrize("query", ["days=0", "days=366", "days=abc", "board=no%20spaces", "board="])
def test_the_json_refuses_bad_input(api, board, query):
    response = api.get(f"/discoveries/analytics?{query}")
    assert response.status_code == 422


def test_the_json_needs_an_agent(client, board):
    assert client.get("/api/v1/discoveries/analytics").status_code == 401


def test_the_json_costs_the_same_queries_with_few_or_many_discoveries(api, board, alice):
    def grow(count):
        task = task_create(ticket=ticket_create(board=board, title="T", actor=alice), title="W", actor=alice)
        for _ in range(count):
            _, task = discovery_branch(source_task=task, discovery_type="bug", description="Deeper", actor=alice)

    grow(1)
    with CaptureQueriesContext(connection) as few:
        api.get("/discoveries/analytics")
    grow(30)
    with CaptureQueriesContext(connection) as many:
        data = api.get("/discoveries/analytics").json()
    assert data["branch_depth"]["max"] == 30
    assert len(few) == len(many)


# In a browser


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("server_log", "no_broadcasts_from_the_test_process")
@pytest.mark.parametrize("width", [1400, 390])
def test_the_page_fits_the_screen_and_its_numbers_open(open_as, board, bob, alice, width):
    now = timezone.now()
    for n in range(1, 6):
        history(
            board,
            f"Ticket {n}",
            ("PHASE_BACKLOG", now - timedelta(days=n + 3)),
            ("PHASE_IMPLEMENTATION", now - timedelta(days=n + 1)),
            ("PHASE_DONE", now - timedelta(hours=n)),
        )
    task = task_create(ticket=Ticket.objects.first(), title="Work", actor=alice)
    discovery_branch(source_task=task, discovery_type="bug", description=MARKUP, actor=alice)
    page = open_as(bob, analytics_url(board), viewport={"width": width, "height": 900})

    # No sideways scroll of the page: a chart too wide for a phone scrolls inside its card.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    expect(page.locator("svg.chart")).to_have_count(9)
    for chart in page.locator("svg.chart").all():
        box = chart.bounding_box()
        assert box["width"] > 250 and box["height"] > 20
    expect(page.get_by_role("img", name="Cumulative flow")).to_be_visible()
    table = page.locator("#cfd-table")
    expect(table).to_be_hidden()
    page.locator("summary", has_text="Tickets in each column at the end of each day").click()
    expect(table).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="<script>")).to_have_count(1)

    page.get_by_role("link", name="Last 7 days").click()
    page.wait_for_url("**?days=7")
    expect(page.locator('.range-nav a[aria-current="page"]')).to_have_text("Last 7 days")
