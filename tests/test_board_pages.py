"""The board pages: who sees them, what the columns and cards show, filters, swimlanes, paging and query counts."""

import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from board.events import EventType
from board.models import Board, Task, Ticket
from board.selectors import PAGE_SIZE
from board.services import POSITION_GAP, ticket_create, ticket_update

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob_client(client, bob):
    client.force_login(bob)
    return client


@pytest.fixture
def make(board, alice):
    def make(title, phase="PHASE_BACKLOG", **kwargs):
        return ticket_create(board=board, title=title, actor=alice, phase=phase, **kwargs)

    return make


def bulk_tickets(board, count):
    """`count` tickets spread over every phase, written in one statement."""
    phases = list(board.workflow.phases.in_order())
    priorities = ["LOW", "MEDIUM", "HIGH", "CRITICAL"]
    Ticket.objects.bulk_create(
        Ticket(
            board=board,
            title=f"Ticket {n}",
            phase=phases[n % len(phases)],
            priority=priorities[n % 4],
            position=(n + 1) * POSITION_GAP,
            is_blocked=n % 3 == 0,
            blocked_reason="Waiting" if n % 3 == 0 else "",
        )
        for n in range(count)
    )


def board_url(board, query=""):
    url = reverse("board:detail", args=[board.slug])
    return f"{url}?{query}" if query else url


def column_titles(response, key):
    view = next(v for v in response.context["columns"] if v.column.key == key)
    return [card.title for cell in view.cells for card in cell.cards]


# Who sees what


def test_the_board_list_shows_only_my_boards(bob_client, board, workflow):
    Board.objects.create(name="Secret board", slug="secret", workflow=workflow)
    response = bob_client.get(reverse("board:list"))
    assert response.status_code == 200
    assert b"Alice&#x27;s board" in response.content
    assert b"Secret board" not in response.content


def test_staff_see_every_board(alice_client, board, workflow):
    Board.objects.create(name="Secret board", slug="secret", workflow=workflow)
    response = alice_client.get(reverse("board:list"))
    assert b"Secret board" in response.content


@pytest.mark.parametrize("name", ["board:list", "board:detail", "board:ticket-create"])
def test_pages_ask_anonymous_visitors_to_log_in(client, board, name):
    url = reverse(name, args=[board.slug] if name != "board:list" else [])
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_a_member_sees_the_board(bob_client, board, make):
    make("Visible work")
    response = bob_client.get(board_url(board))
    assert response.status_code == 200
    assert b"Visible work" in response.content


def test_an_outsider_gets_404_on_every_board_page(client, charlie, board, make):
    ticket = make("Hidden")
    client.force_login(charlie)
    urls = [
        board_url(board),
        reverse("board:columns", args=[board.slug]) + "?column=backlog",
        reverse("board:column-more", args=[board.slug, "backlog"]),
        reverse("board:ticket", args=[board.slug, ticket.pk]),
        reverse("board:ticket-edit", args=[board.slug, ticket.pk]),
        reverse("board:ticket-create", args=[board.slug]),
    ]
    for url in urls:
        assert client.get(url).status_code == 404, url
    response = client.post(reverse("board:ticket-move", args=[board.slug, ticket.pk]), {"column": "analyzing"})
    assert response.status_code == 404
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_BACKLOG"


def test_staff_see_a_board_they_are_not_members_of(client, board, make):
    from django.contrib.auth import get_user_model

    dana = get_user_model().objects.create_user("dana", password="x", is_staff=True)
    client.force_login(dana)
    assert client.get(board_url(board)).status_code == 200


# Columns and cards


def test_columns_come_in_workflow_order_with_their_phases_and_counts(bob_client, board, make):
    make("One")
    make("Two", "PHASE_DESIGN")
    response = bob_client.get(board_url(board))
    keys = [view.column.key for view in response.context["columns"]]
    assert keys == ["backlog", "analyzing", "building", "testing", "deploying", "done", "blocked"]
    html = response.content.decode()
    # A column of several phases names them on its bands; a column of one, under its name when they differ.
    assert '<span class="band-name">Requirements Analysis</span>' in html
    assert '<span class="band-name">Design</span>' in html
    assert '<span class="column-phases">Implementation</span>' in html
    assert '<span class="column-phases">Backlog</span>' not in html
    assert ">1/5<" in html  # analyzing: one ticket, limit five


def test_a_column_at_its_limit_says_so_in_words(bob_client, board, make):
    for n in range(3):
        make(f"Ship {n}", "PHASE_DEPLOYMENT")
    response = bob_client.get(board_url(board))
    html = response.content.decode()
    deploying = html[html.index('id="column-deploying"') :]
    deploying = deploying[: deploying.index("</header>")]
    assert "3/3" in deploying
    assert "Full" in deploying


def test_a_warn_column_over_its_limit_says_over_limit(bob_client, board, make):
    for n in range(6):
        make(f"Think {n}", "PHASE_REQUIREMENTS")
    html = bob_client.get(board_url(board)).content.decode()
    analyzing = html[html.index('id="column-analyzing"') :]
    analyzing = analyzing[: analyzing.index("</header>")]
    assert "6/5" in analyzing
    assert "Over limit" in analyzing


def test_cards_show_priority_phase_and_blocked_reason(bob_client, board, make, alice):
    ticket = make("Spec it", "PHASE_DESIGN", priority="HIGH")
    ticket_update(ticket=ticket, actor=alice, is_blocked=True, blocked_reason="Waiting for legal")
    html = bob_client.get(board_url(board)).content.decode()
    card = html[html.index(f'id="ticket-{ticket.pk}"') :]
    card = card[: card.index("</li>")]
    assert "High" in card
    assert "Design" in card  # analyzing shows two phases, so the card names its own
    assert "Blocked:" in card and "Waiting for legal" in card


def test_a_column_of_one_phase_does_not_repeat_it_on_cards(bob_client, board, make):
    ticket = make("Plain")
    html = bob_client.get(board_url(board)).content.decode()
    card = html[html.index(f'id="ticket-{ticket.pk}"') :]
    card = card[: card.index("</li>")]
    assert "card-phase" not in card


def test_a_card_shows_its_priority_as_a_chip_with_words_and_its_phase_in_a_column_of_several(bob_client, board, make):
    ticket = make("Spec it", "PHASE_DESIGN", priority="CRITICAL")
    html = bob_client.get(board_url(board)).content.decode()
    card = html[html.index(f'id="ticket-{ticket.pk}"') :]
    card = card[: card.index("</li>")]
    assert '<span class="chip chip-prio-critical priority">Critical</span>' in card
    assert '<span class="chip chip-neutral card-phase">Design</span>' in card
    assert f'<span class="ticket-id">#{ticket.pk}</span>' in card


def test_card_text_is_escaped(bob_client, board, make):
    make('<script>alert("x")</script>')
    html = bob_client.get(board_url(board)).content.decode()
    assert '<script>alert("x")</script>' not in html
    assert "&lt;script&gt;" in html


def test_cards_keep_the_order_of_their_positions(bob_client, board, make):
    first, _, third = make("First"), make("Second"), make("Third")
    Ticket.objects.filter(pk=third.pk).update(position=first.position - 1)
    response = bob_client.get(board_url(board))
    assert column_titles(response, "backlog") == ["Third", "First", "Second"]


def menu_html(html, ticket):
    """The move menu of `ticket`'s card: from its button to the end of its form."""
    menu = html[html.index(f'id="move-{ticket.pk}"') :]
    return menu[: menu.index("</form>")]


def column_button(key, name, note="", disabled=False):
    note = f'<span class="menu-note">{note}</span>' if note else ""
    return (
        f'<button type="submit" name="column" value="{key}" class="menu-item"{" disabled" if disabled else ""}>'
        f"{name}{note}</button>"
    )


def test_the_move_menu_offers_every_other_column_and_says_why_some_are_closed(bob_client, board, make):
    for n in range(8):
        make(f"Check {n}", "PHASE_TESTING")
    ticket = make("Build", "PHASE_IMPLEMENTATION")
    menu = menu_html(bob_client.get(board_url(board)).content.decode(), ticket)
    assert column_button("testing", "Testing", "full 8/8", disabled=True) in menu
    assert column_button("done", "Done", "not allowed", disabled=True) in menu
    assert column_button("blocked", "Blocked") in menu
    # Its own column is no choice, and a column of one phase has no phases to switch between.
    assert 'value="building"' not in menu
    assert "Move to phase" not in menu
    assert re.findall(r'name="column" value="([^"]+)"', menu) == [
        "backlog",
        "analyzing",
        "testing",
        "deploying",
        "done",
        "blocked",
    ]
    assert f'id="move-up-{ticket.pk}"' in menu and f'id="move-down-{ticket.pk}"' in menu


def test_staff_may_choose_a_closed_column_to_override_it(alice_client, board, make):
    ticket = make("Build", "PHASE_IMPLEMENTATION")
    menu = menu_html(alice_client.get(board_url(board)).content.decode(), ticket)
    assert column_button("done", "Done", "not allowed") in menu


@pytest.mark.parametrize("client_name", ["bob_client", "alice_client"])
def test_a_card_in_a_column_of_several_phases_offers_the_next_phase(request, client_name, board, make):
    ticket = make("Specify", "PHASE_REQUIREMENTS")
    client = request.getfixturevalue(client_name)
    menu = menu_html(client.get(board_url(board)).content.decode(), ticket)
    assert '<p class="menu-heading">Move to phase</p>' in menu
    assert (
        '<p class="menu-item menu-current" aria-current="true">Requirements Analysis'
        '<span class="menu-note">current</span></p>'
    ) in menu
    assert '<button type="submit" name="phase" value="PHASE_DESIGN" class="menu-item">Design</button>' in menu
    # Neither members nor staff are offered the column the card is already in.
    assert 'value="analyzing"' not in menu
    closed = client_name == "bob_client"
    assert column_button("building", "Building", "not allowed", disabled=closed) in menu


def test_a_card_in_the_second_phase_of_its_column_cannot_go_back_without_an_override(bob_client, board, make):
    ticket = make("Designing", "PHASE_DESIGN")
    menu = menu_html(bob_client.get(board_url(board)).content.decode(), ticket)
    assert (
        '<button type="submit" name="phase" value="PHASE_REQUIREMENTS" class="menu-item" disabled>'
        'Requirements Analysis<span class="menu-note">not allowed</span></button>'
    ) in menu
    assert column_button("building", "Building") in menu


def test_a_column_of_several_phases_shows_one_drop_band_per_phase(bob_client, board, make):
    design = make("Designing", "PHASE_DESIGN")
    requirements = make("Specifying", "PHASE_REQUIREMENTS")
    html = bob_client.get(board_url(board)).content.decode()
    analyzing = html[html.index('id="column-analyzing"') : html.index('id="column-building"')]
    bands = re.findall(r'<ol class="cards" data-column="analyzing" data-lane="" data-phase="([^"]+)"', analyzing)
    assert bands == ["PHASE_REQUIREMENTS", "PHASE_DESIGN"]

    def band(key):
        cards = analyzing[analyzing.index(f'data-phase="{key}"') :]
        return cards[: cards.index("</ol>")]

    assert f'id="ticket-{requirements.pk}"' in band("PHASE_REQUIREMENTS")
    assert f'id="ticket-{design.pk}"' in band("PHASE_DESIGN")
    assert f'id="ticket-{design.pk}"' not in band("PHASE_REQUIREMENTS")
    assert '<span class="band-name">Design</span> <span class="band-count">1</span>' in analyzing
    # A column of one phase is one list, with no band.
    backlog = html[html.index('id="column-backlog"') : html.index('id="column-analyzing"')]
    assert 'class="band"' not in backlog and "data-phase=" not in backlog


def test_every_card_of_a_re_rendered_column_offers_every_column_of_the_board(bob_client, board, make):
    ticket = make("Fresh")
    url = reverse("board:columns", args=[board.slug]) + "?column=backlog"
    menu = menu_html(bob_client.get(url, headers={"HX-Request": "true"}).content.decode(), ticket)
    assert re.findall(r'name="column" value="([^"]+)"', menu) == [
        "analyzing",
        "building",
        "testing",
        "deploying",
        "done",
        "blocked",
    ]
    assert column_button("analyzing", "Analyzing") in menu


def test_the_menu_of_a_re_rendered_column_knows_a_full_column_it_did_not_render(bob_client, board, make):
    for n in range(8):
        make(f"Check {n}", "PHASE_TESTING")
    ticket = make("Build", "PHASE_IMPLEMENTATION")
    url = reverse("board:columns", args=[board.slug]) + "?column=building"
    menu = menu_html(bob_client.get(url, headers={"HX-Request": "true"}).content.decode(), ticket)
    assert column_button("testing", "Testing", "full 8/8", disabled=True) in menu


def test_the_page_carries_the_last_event_id_for_the_live_connection(bob_client, board, make):
    make("One")
    last = board.events.order_by("-id").first()
    html = bob_client.get(board_url(board)).content.decode()
    assert f'data-last-event-id="{last.pk}"' in html
    assert f'data-socket-path="/ws/boards/{board.slug}/"' in html


# Filters and swimlanes


def test_filters_narrow_the_cards_and_stay_in_the_links(bob_client, board, make, alice):
    make("Alpha login", priority="HIGH")
    make("Beta login", priority="LOW")
    blocked = make("Gamma login", priority="HIGH")
    ticket_update(ticket=blocked, actor=alice, is_blocked=True, blocked_reason="Vendor")
    response = bob_client.get(board_url(board, "priority=HIGH&q=login"))
    assert column_titles(response, "backlog") == ["Alpha login", "Gamma login"]
    assert "priority=HIGH&amp;q=login" in response.content.decode()  # the move forms keep the filter
    response = bob_client.get(board_url(board, "blocked=on"))
    assert column_titles(response, "backlog") == ["Gamma login"]
    response = bob_client.get(board_url(board, "phase=PHASE_DESIGN"))
    assert column_titles(response, "backlog") == []


def test_blocked_takes_in_the_tickets_parked_in_a_holding_phase(bob_client, board, make, alice):
    flagged = make("Flagged in backlog")
    ticket_update(ticket=flagged, actor=alice, is_blocked=True, blocked_reason="Vendor")
    make("Free in backlog")
    parked = make("Waiting for legal", "PHASE_BLOCKED")
    response = bob_client.get(board_url(board, "blocked=on"))
    assert column_titles(response, "backlog") == ["Flagged in backlog"]
    assert column_titles(response, "blocked") == ["Waiting for legal"]
    blocked = next(view for view in response.context["columns"] if view.column.key == "blocked")
    assert (blocked.count, blocked.shown) == (1, 1)
    html = response.content.decode()
    assert "Blocked: flagged as blocked, or waiting in Blocked." in html
    assert (
        '<label class="filter check"><input type="checkbox" name="blocked" id="id_blocked" checked> Blocked</label>'
        in html
    )
    assert parked.phase.is_holding


def test_counts_stay_whole_under_a_filter(bob_client, board, make):
    make("Alpha")
    make("Beta")
    response = bob_client.get(board_url(board, "q=Alpha"))
    backlog = response.context["columns"][0]
    assert (backlog.count, backlog.shown) == (2, 1)
    assert "1 shown" in response.content.decode()


def test_search_finds_a_ticket_by_number(bob_client, board, make):
    make("Alpha")
    beta = make("Beta")
    response = bob_client.get(board_url(board, f"q=%23{beta.pk}"))
    assert column_titles(response, "backlog") == ["Beta"]


def test_an_unknown_filter_value_is_reported_and_ignored(bob_client, board, make):
    make("Alpha")
    response = bob_client.get(board_url(board, "phase=PHASE_NOPE&priority=URGENT"))
    assert response.status_code == 200
    assert column_titles(response, "backlog") == ["Alpha"]
    html = response.content.decode()
    assert "Select a valid choice. PHASE_NOPE is not one of the available choices." in html
    assert "This filter is ignored." in html


def test_swimlanes_group_each_column_by_priority(bob_client, board, make):
    make("Low one", priority="LOW")
    make("Critical one", priority="CRITICAL")
    response = bob_client.get(board_url(board, "lanes=priority"))
    backlog = response.context["columns"][0]
    assert [cell.lane for cell in backlog.cells] == ["CRITICAL", "HIGH", "MEDIUM", "LOW"]
    assert [[c.title for c in cell.cards] for cell in backlog.cells] == [["Critical one"], [], [], ["Low one"]]


def test_each_swimlane_has_one_header_across_the_board_with_its_count(bob_client, board, make):
    make("Low one", priority="LOW")
    make("Low two", "PHASE_IMPLEMENTATION", priority="LOW")
    make("Critical one", priority="CRITICAL")
    make("Hidden low", priority="LOW")
    html = bob_client.get(board_url(board, "lanes=priority&q=one")).content.decode()
    headers = re.findall(
        r'<div class="lane-header" id="lane-(\w+)".*?<span class="chip chip-prio-\w+">(\w+)</span>\s*'
        r'<span class="lane-count">([^<]+)</span>',
        html,
        re.S,
    )
    assert headers == [
        ("CRITICAL", "Critical", "1 ticket"),
        ("HIGH", "High", "0 tickets"),
        ("MEDIUM", "Medium", "0 tickets"),
        ("LOW", "Low", "1 ticket"),
    ]
    # Cells name their column and lane for screen readers; the visible name is the lane's header.
    assert html.count('class="lane-header"') == 4
    assert '<h3 class="visually-hidden">Backlog, Critical</h3>' in html
    # A live update re-renders the lane headers too, with their counts.
    url = reverse("board:columns", args=[board.slug]) + "?column=backlog&lanes=priority"
    fragment = bob_client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert fragment.count('class="lane-header"') == 4
    assert fragment.count('hx-swap-oob="true"') == 5


def test_an_htmx_filter_request_gets_the_board_body_only(bob_client, board, make):
    make("Alpha")
    response = bob_client.get(board_url(board, "q=Alpha"), headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="board-body">')
    assert "<html" not in html
    assert "HX-Request" in response["Vary"]
    assert "HX-Request" in bob_client.get(board_url(board))["Vary"]


# Paging


def test_a_long_column_shows_its_first_cards_and_loads_more(bob_client, board):
    Ticket.objects.bulk_create(
        Ticket(board=board, title=f"Card {n:03}", phase=board.workflow.phases.get(key="PHASE_BACKLOG"), position=n)
        for n in range(1, PAGE_SIZE + 8)
    )
    response = bob_client.get(board_url(board))
    titles = column_titles(response, "backlog")
    assert titles == [f"Card {n:03}" for n in range(1, PAGE_SIZE + 1)]
    html = response.content.decode()
    last = Ticket.objects.get(title=f"Card {PAGE_SIZE:03}")
    more_url = reverse("board:column-more", args=[board.slug, "backlog"]) + f"?after={last.pk}"
    assert more_url in html
    more = bob_client.get(more_url, headers={"HX-Request": "true"})
    assert more.status_code == 200
    titles = re.findall(r'class="card-title"[^>]*>([^<]+)<', more.content.decode())
    assert titles == [f"Card {n:03}" for n in range(PAGE_SIZE + 1, PAGE_SIZE + 8)]
    assert "Load more" not in more.content.decode()


def test_each_band_of_a_column_of_several_phases_loads_more_of_its_own_phase(bob_client, board):
    phases = {key: board.workflow.phases.get(key=key) for key in ("PHASE_REQUIREMENTS", "PHASE_DESIGN")}
    Ticket.objects.bulk_create(
        Ticket(board=board, title=f"{key[6:9]} {n:03}", phase=phase, position=n * 2 + (key == "PHASE_DESIGN"))
        for key, phase in phases.items()
        for n in range(1, PAGE_SIZE + 4)
    )
    response = bob_client.get(board_url(board))
    analyzing = next(view for view in response.context["columns"] if view.column.key == "analyzing")
    requirements, design = analyzing.cells[0].bands
    assert [len(requirements.cards), len(design.cards)] == [PAGE_SIZE, PAGE_SIZE]
    assert requirements.has_more and design.has_more
    last = design.cards[-1]
    more_url = reverse("board:column-more", args=[board.slug, "analyzing"]) + f"?after={last.pk}&band=PHASE_DESIGN"
    assert more_url.replace("&", "&amp;") in response.content.decode()
    more = bob_client.get(more_url, headers={"HX-Request": "true"})
    titles = re.findall(r'class="card-title"[^>]*>([^<]+)<', more.content.decode())
    assert titles == [f"DES {n:03}" for n in range(PAGE_SIZE + 1, PAGE_SIZE + 4)]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("after=abc", b"`after` must be a ticket id"),
        ("after=999999", b"Ticket #999999 is not on this board."),
        ("lane=URGENT", b"Unknown swimlane"),
        ("band=PHASE_DESIGN", b"Column Backlog shows no phase 'PHASE_DESIGN'."),
    ],
)
def test_load_more_refuses_bad_input(bob_client, board, query, message):
    url = reverse("board:column-more", args=[board.slug, "backlog"]) + f"?{query}"
    response = bob_client.get(url)
    assert response.status_code == 400
    assert message in response.content


def test_load_more_of_an_unknown_column_is_refused(bob_client, board):
    response = bob_client.get(reverse("board:column-more", args=[board.slug, "nowhere"]))
    assert response.status_code == 400
    assert b"no column 'nowhere'" in response.content


def test_the_columns_fragment_renders_the_asked_columns_out_of_band(bob_client, board, make):
    make("Alpha")
    url = reverse("board:columns", args=[board.slug]) + "?column=backlog&column=testing&column=nowhere"
    html = bob_client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert html.count('hx-swap-oob="true"') == 2
    assert 'id="column-backlog"' in html and 'id="column-testing"' in html
    assert "Alpha" in html


# Query counts


def count_queries(client, url):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


@pytest.mark.parametrize("query", ["", "lanes=priority", "q=Ticket&priority=HIGH&blocked=on"])
def test_the_board_page_costs_the_same_queries_with_10_or_500_tickets(bob_client, board, query):
    bulk_tickets(board, 10)
    url = board_url(board, query)
    few = count_queries(bob_client, url)
    bulk_tickets(board, 490)
    assert Ticket.objects.count() == 500
    many = count_queries(bob_client, url)
    assert few == many
    assert many <= 12


def test_the_board_list_costs_the_same_queries_with_one_or_many_boards(bob_client, board, workflow, bob):
    few = count_queries(bob_client, reverse("board:list"))
    for n in range(10):
        Board.objects.create(name=f"Board {n}", slug=f"board-{n}", workflow=workflow).members.add(bob)
    assert count_queries(bob_client, reverse("board:list")) == few


@pytest.mark.parametrize("query", ["", "lanes=priority"])
def test_the_columns_fragment_costs_the_same_queries_with_10_or_500_tickets(bob_client, board, query):
    bulk_tickets(board, 10)
    url = reverse("board:columns", args=[board.slug]) + f"?column=backlog&column=analyzing&{query}"
    few = count_queries(bob_client, url)
    bulk_tickets(board, 490)
    assert count_queries(bob_client, url) == few


def test_load_more_costs_the_same_queries_whatever_the_column_length(bob_client, board):
    bulk_tickets(board, 70)
    first = Ticket.objects.order_by("position").first()
    url = reverse("board:column-more", args=[board.slug, "backlog"]) + f"?after={first.pk}"
    few = count_queries(bob_client, url)
    bulk_tickets(board, 700)
    assert count_queries(bob_client, url) == few


def test_cards_show_task_progress_and_open_discoveries(bob_client, board, make, alice):
    from board.services import task_create
    from discoveries.models import Discovery

    ticket = make("With work", "PHASE_IMPLEMENTATION")
    done = task_create(ticket=ticket, title="Done part", actor=alice)
    task_create(ticket=ticket, title="Open part", actor=alice)
    Task.objects.filter(pk=done.pk).update(status="completed")
    Discovery.objects.create(source_task=done, discovery_type="bug", description="Crash", discovered_by="x")
    Discovery.objects.create(
        source_task=done, discovery_type="bug", description="Old", discovered_by="x", resolution_status="resolved"
    )
    html = bob_client.get(board_url(board)).content.decode()
    card = html[html.index(f'id="ticket-{ticket.pk}"') :]
    card = card[: card.index("</li>")]
    assert "Tasks 1/2" in card
    assert "1 open discovery" in card


def test_the_page_gives_its_script_the_event_names(bob_client, board):
    response = bob_client.get(reverse("board:detail", args=[board.slug]))
    names = json.loads(re.search(r'id="event-types"[^>]*>(.*?)</script>', response.content.decode()).group(1))
    assert names == {event_type.name: str(event_type) for event_type in EventType}
    assert names["TICKET_TRANSITIONED"] == "ticket.transitioned"


def test_cards_show_tasks_that_failed_for_good_and_tasks_waiting_to_retry(bob_client, board, make, alice):
    from board.services import task_create

    ticket = make("Flaky", "PHASE_TESTING")
    gone = task_create(ticket=ticket, title="Out of retries", actor=alice)
    again = task_create(ticket=ticket, title="Retry later", actor=alice)
    task_create(ticket=ticket, title="Fresh", actor=alice)
    Task.objects.filter(pk=gone.pk).update(status="failed", retry_count=3)
    Task.objects.filter(pk=again.pk).update(retry_count=1)
    html = bob_client.get(board_url(board)).content.decode()
    card = html[html.index(f'id="ticket-{ticket.pk}"') :]
    card = card[: card.index("</li>")]
    assert "1 failed" in card
    assert "1 retrying" in card
    assert "Tasks 0/3" in card


# The agent on a card, the graph link and the board's tabs


def card_html(response, ticket):
    html = response.content.decode()
    card = html[html.index(f'id="ticket-{ticket.pk}"') :]
    return card[: card.index("</li>")]


def test_a_card_names_the_agent_holding_its_task(bob_client, board, make, alice):
    from board.services import agent_create, task_claim, task_create

    ticket = make("In the works", "PHASE_IMPLEMENTATION")
    idle = make("Waiting", "PHASE_IMPLEMENTATION")
    task_create(ticket=ticket, title="Build", actor=alice)
    task_create(ticket=idle, title="Later", actor=alice)
    agent, _ = agent_create(name="demo-agent-1", boards=[board], actor=alice)
    assert task_claim(agent=agent, board=board).ticket_id == ticket.pk
    response = bob_client.get(board_url(board))
    card = card_html(response, ticket)
    assert '<span aria-hidden="true">⚙ demo-agent-1</span>' in card
    assert '<span class="visually-hidden">worked on by demo-agent-1</span>' in card
    assert "worked on by" not in card_html(response, idle)


def test_a_card_names_one_agent_and_counts_the_others(bob_client, board, make, alice):
    from board.services import agent_create, task_create

    ticket = make("Busy", "PHASE_IMPLEMENTATION")
    for name, status in (("zed", "running"), ("amy", "assigned"), ("bea", "running"), ("old", "completed")):
        agent, _ = agent_create(name=name, boards=[board], actor=alice)
        task = task_create(ticket=ticket, title=f"Task of {name}", actor=alice)
        Task.objects.filter(pk=task.pk).update(status=status, assigned_agent=agent)
    card = card_html(bob_client.get(board_url(board)), ticket)
    assert "⚙ amy +2" in card
    assert "worked on by amy and 2 other agents" in card
    assert "old" not in card


def test_markup_in_an_agent_name_on_a_card_is_escaped(bob_client, board, make, alice):
    from board.services import agent_create, task_create

    markup = "<b onmouseover=alert(1)>x</b>"
    ticket = make("Watched", "PHASE_IMPLEMENTATION")
    agent, _ = agent_create(name=markup, boards=[board], actor=alice)
    task = task_create(ticket=ticket, title="T", actor=alice)
    Task.objects.filter(pk=task.pk).update(status="running", assigned_agent=agent)
    card = card_html(bob_client.get(board_url(board)), ticket)
    assert markup not in card
    assert "worked on by &lt;b onmouseover=alert(1)&gt;x&lt;/b&gt;" in card


def test_each_card_with_tasks_links_to_its_workflow_graph(bob_client, board, make, alice):
    from board.services import task_create

    ticket = make("Branchy")
    task_create(ticket=ticket, title="Look around", actor=alice)
    bare = make("Nothing to draw yet")
    response = bob_client.get(board_url(board))
    card = card_html(response, ticket)
    graph = reverse("discoveries:ticket-graph", args=[board.slug, ticket.pk])
    assert f'<a class="card-graph" href="{graph}" title="Workflow graph">' in card
    assert f"Workflow graph of #{ticket.pk}" in card
    assert "card-graph" not in card_html(response, bare)
    # The fragments that re-render cards carry the link too.
    columns = bob_client.get(reverse("board:columns", args=[board.slug]) + "?column=backlog")
    assert graph in columns.content.decode()


def test_the_board_page_has_tabs_for_the_boards_pages(bob_client, board):
    html = bob_client.get(board_url(board)).content.decode()
    nav = html[html.index('<nav class="board-tabs"') :]
    nav = nav[: nav.index("</nav>")]
    expected = [
        ("Board", reverse("board:detail", args=[board.slug])),
        ("Graph", reverse("discoveries:board-graph", args=[board.slug])),
        ("Discoveries", reverse("discoveries:list", args=[board.slug])),
        ("Agents", reverse("board:agents", args=[board.slug])),
        ("Analytics", reverse("discoveries:analytics", args=[board.slug])),
        ("Members", reverse("board:members", args=[board.slug])),
    ]
    links = re.findall(r'<a href="([^"]+)"( aria-current="page")?>([^<]+)</a>', nav)
    assert [(name, url) for url, _, name in links] == expected
    assert links[0][1] == ' aria-current="page"'
    assert all(not current for _, current, _ in links[1:])


def test_the_board_page_costs_the_same_queries_whoever_works_on_its_cards(bob_client, board, alice):
    from board.services import agent_create

    bulk_tickets(board, 500)
    tickets = list(Ticket.objects.order_by("position")[:300])
    url = board_url(board)

    def hold(start, count):
        for ticket in tickets[start : start + count]:
            agent, _ = agent_create(name=f"agent-{ticket.pk}", boards=[board], actor=alice)
            Task.objects.create(
                ticket=ticket, phase_id=ticket.phase_id, title="T", status="running", assigned_agent=agent
            )

    hold(0, 2)
    few = count_queries(bob_client, url)
    hold(2, 150)
    assert count_queries(bob_client, url) == few
