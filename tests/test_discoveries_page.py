"""The discoveries page of a board: who sees it, what rows show, filters, pages, resolving, markup and query counts."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from board.models import Board, Event, Task
from board.services import agent_create, task_create, ticket_create
from discoveries.models import Discovery
from discoveries.services import discovery_branch, discovery_record
from discoveries.views.listing import PAGE_SIZE

pytestmark = pytest.mark.django_db

MARKUP = '<img src=x onerror="alert(1)">'
ESCAPED = "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"


@pytest.fixture
def bob_client(client, bob):
    client.force_login(bob)
    return client


@pytest.fixture
def list_url(board):
    return reverse("discoveries:list", args=[board.slug])


@pytest.fixture
def ticket(board, alice):
    return ticket_create(board=board, title="Login page", actor=alice, phase="PHASE_IMPLEMENTATION")


@pytest.fixture
def task(ticket, alice):
    return task_create(ticket=ticket, title="Write the form", actor=alice)


@pytest.fixture
def found(task, builder):
    """A bug Builder recorded while doing `task`."""
    agent, _ = builder
    return discovery_record(source_task=task, discovery_type="bug", description="Crash on empty password", actor=agent)


def resolve_url(board, discovery, query=""):
    url = reverse("discoveries:resolve", args=[board.slug, discovery.pk])
    return f"{url}?{query}" if query else url


def row_of(html, discovery):
    row = html[html.index(f'id="discovery-{discovery.pk}"') :]
    return row[: row.index("</tr>")]


def listed(response):
    """The ids of the rows in a page or fragment, in order."""
    return [int(pk) for pk in re.findall(r'<tr id="discovery-(\d+)"', response.content.decode())]


def bulk_discoveries(task, count, discovery_type="bug"):
    Discovery.objects.bulk_create(
        Discovery(source_task=task, discovery_type=discovery_type, description=f"Found {n}", discovered_by="x")
        for n in range(count)
    )


# Who sees it


def test_anonymous_visitors_are_asked_to_log_in(client, board, found, list_url):
    for response in (client.get(list_url), client.post(resolve_url(board, found), {"status": "resolved"})):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_an_outsider_gets_404_and_cannot_resolve(client, charlie, board, found, list_url):
    client.force_login(charlie)
    assert client.get(list_url).status_code == 404
    response = client.post(resolve_url(board, found), {"status": "resolved", "reason": "Mine now"})
    assert response.status_code == 404
    found.refresh_from_db()
    assert found.resolution_status == "open"


def test_a_member_sees_the_discoveries_of_the_board_only(bob_client, board, found, workflow, alice, list_url):
    other = Board.objects.create(name="Other", slug="other", workflow=workflow)
    elsewhere = ticket_create(board=other, title="Elsewhere", actor=alice, phase="PHASE_IMPLEMENTATION")
    secret = task_create(ticket=elsewhere, title="Secret task", actor=alice)
    discovery_record(source_task=secret, discovery_type="bug", description="Secret finding", actor=alice)
    response = bob_client.get(list_url)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Crash on empty password" in html
    assert "Secret finding" not in html
    assert "HX-Request" in response["Vary"]


def test_a_discovery_from_another_board_cannot_be_resolved_from_this_one(alice_client, board, workflow, alice):
    other = Board.objects.create(name="Other", slug="other", workflow=workflow)
    elsewhere = ticket_create(board=other, title="Elsewhere", actor=alice, phase="PHASE_IMPLEMENTATION")
    secret = discovery_record(
        source_task=task_create(ticket=elsewhere, title="T", actor=alice),
        discovery_type="bug",
        description="Secret",
        actor=alice,
    )
    response = alice_client.post(resolve_url(board, secret), {"status": "resolved", "reason": "x"})
    assert response.status_code == 404


# What a row shows


def test_a_row_shows_type_source_task_phase_spawned_tasks_age_and_status(bob_client, board, task, ticket, builder):
    agent, _ = builder
    discovery, spawned = discovery_branch(
        source_task=task, discovery_type="missing_requirement", description="No reset flow", actor=agent, phase=None
    )
    html = bob_client.get(reverse("discoveries:list", args=[board.slug])).content.decode()
    row = row_of(html, discovery)
    ticket_url = reverse("board:ticket", args=[board.slug, ticket.pk])
    assert "Missing requirement" in row
    assert "No reset flow" in row
    assert f'href="{ticket_url}#task-{task.pk}"' in row
    assert f'href="{ticket_url}#task-{spawned.pk}"' in row
    assert task.phase.name in row
    assert "by builder" in row and "agent:builder" not in row
    assert "<time datetime=" in row
    assert "Open" in row


def test_discoveries_come_newest_first(bob_client, task, alice, list_url):
    first = discovery_record(source_task=task, discovery_type="bug", description="First", actor=alice)
    second = discovery_record(source_task=task, discovery_type="bug", description="Second", actor=alice)
    assert listed(bob_client.get(list_url)) == [second.pk, first.pk]


def test_a_closed_discovery_shows_who_closed_it_and_why(bob_client, found, bob, list_url):
    from discoveries.services import discovery_resolve

    discovery_resolve(discovery=found, status="invalid", reason="Works as designed", actor=bob)
    row = row_of(bob_client.get(list_url).content.decode(), found)
    assert "Invalid" in row
    assert "by bob" in row
    assert "Works as designed" in row
    assert "Resolve…" not in row


def test_markup_in_agent_sent_text_is_shown_escaped(bob_client, board, alice, list_url):
    agent, _ = agent_create(name=MARKUP, boards=[board], actor=alice)
    ticket = ticket_create(board=board, title=MARKUP, actor=alice, phase="PHASE_IMPLEMENTATION")
    task = task_create(ticket=ticket, title=MARKUP, actor=alice)
    discovery, _ = discovery_branch(
        source_task=task, discovery_type="bug", description=MARKUP, actor=agent, title=MARKUP
    )
    from discoveries.services import discovery_resolve

    other = discovery_record(source_task=task, discovery_type="bug", description="x", actor=agent)
    discovery_resolve(discovery=other, status="resolved", reason=MARKUP, actor=agent)
    html = bob_client.get(list_url).content.decode()
    assert MARKUP not in html
    assert ESCAPED in row_of(html, discovery)
    assert ESCAPED in row_of(html, other)


def test_the_page_has_the_boards_tabs_with_discoveries_current(bob_client, board, list_url):
    html = bob_client.get(list_url).content.decode()
    assert f'<a href="{list_url}" aria-current="page">Discoveries</a>' in html
    for name in ("board:detail", "discoveries:board-graph", "board:agents", "discoveries:analytics"):
        assert f'<a href="{reverse(name, args=[board.slug])}">' in html


def test_an_empty_board_says_so(bob_client, board, list_url):
    html = bob_client.get(list_url).content.decode()
    assert "0 discoveries on this board" in html
    assert "No discoveries yet" in html


# Filters


@pytest.fixture
def assorted(board, alice, ticket, phase):
    """Discoveries of each kind: a bug found in implementation (open), an optimisation found in testing
    (resolved), and a bug on another ticket (invalid)."""
    testing = task_create(ticket=ticket, title="Test it", actor=alice, phase=phase("PHASE_TESTING"))
    other_ticket = ticket_create(board=board, title="Other", actor=alice, phase="PHASE_IMPLEMENTATION")
    other_task = task_create(ticket=other_ticket, title="Other task", actor=alice)
    implementation = task_create(ticket=ticket, title="Build it", actor=alice)
    bug = discovery_record(source_task=implementation, discovery_type="bug", description="Bug", actor=alice)
    faster = discovery_record(source_task=testing, discovery_type="optimization", description="Faster", actor=alice)
    Discovery.objects.filter(pk=faster.pk).update(resolution_status="resolved")
    elsewhere = discovery_record(source_task=other_task, discovery_type="bug", description="Elsewhere", actor=alice)
    Discovery.objects.filter(pk=elsewhere.pk).update(resolution_status="invalid")
    return {"bug": bug, "faster": faster, "elsewhere": elsewhere, "ticket": ticket, "other_ticket": other_ticket}


@pytest.mark.parametrize(
    "query, expected",
    [
        ("", ["elsewhere", "faster", "bug"]),
        ("type=bug", ["elsewhere", "bug"]),
        ("status=open", ["bug"]),
        ("status=resolved", ["faster"]),
        ("phase=PHASE_TESTING", ["faster"]),
        ("type=bug&phase=PHASE_IMPLEMENTATION&status=invalid", ["elsewhere"]),
    ],
)
def test_filters_narrow_the_list(bob_client, list_url, assorted, query, expected):
    response = bob_client.get(f"{list_url}?{query}")
    assert listed(response) == [assorted[name].pk for name in expected]
    assert f"{len(expected)} discover" in response.content.decode()


def test_the_ticket_filter_takes_a_number_with_or_without_the_hash(bob_client, list_url, assorted):
    for value in (str(assorted["ticket"].pk), f"%23{assorted['ticket'].pk}"):
        response = bob_client.get(f"{list_url}?ticket={value}")
        assert listed(response) == [assorted["faster"].pk, assorted["bug"].pk]


def test_the_filters_stay_in_the_form_and_the_links(bob_client, board, list_url, assorted):
    html = bob_client.get(f"{list_url}?type=bug&status=open").content.decode()
    assert '<option value="bug" selected>' in html
    assert '<option value="open" selected>' in html
    assert f'action="{resolve_url(board, assorted["bug"], "type=bug&amp;status=open")}"' in html
    assert "match the filters" in html


@pytest.mark.parametrize(
    "query, message",
    [
        ("type=spaceship", "Type: Select a valid choice. spaceship is not one of the available choices."),
        ("status=maybe", "Status: Select a valid choice."),
        ("phase=PHASE_NOPE", "Found in phase: Select a valid choice."),
        ("ticket=abc", "Ticket: Give a ticket number, such as 12 or #12."),
        ("ticket=99999999", "Ticket: Ticket #99999999 is not on this board."),
        ("ticket=" + "9" * 30, "Ticket: Ensure this value has at most 20 characters"),
        ("after=-3", "After: Ensure this value is greater than or equal to 1."),
        ("after=soon", "After: Enter a whole number."),
    ],
)
def test_a_bad_filter_value_is_reported_and_ignored(bob_client, list_url, assorted, query, message):
    response = bob_client.get(f"{list_url}?{query}")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'role="alert"' in html
    assert message in html
    assert "This filter is ignored." in html
    assert len(listed(response)) == 3


def test_a_ticket_of_another_board_is_not_on_this_one(bob_client, list_url, workflow, alice, assorted):
    other = Board.objects.create(name="Other", slug="other", workflow=workflow)
    elsewhere = ticket_create(board=other, title="Elsewhere", actor=alice)
    html = bob_client.get(f"{list_url}?ticket={elsewhere.pk}").content.decode()
    assert f"Ticket #{elsewhere.pk} is not on this board." in html


def test_markup_in_a_filter_value_comes_back_escaped(bob_client, list_url, assorted):
    html = bob_client.get(list_url, {"type": MARKUP, "ticket": MARKUP, "phase": MARKUP}).content.decode()
    assert MARKUP not in html
    assert "&lt;img" in html


def test_an_htmx_filter_request_gets_the_list_alone(bob_client, list_url, assorted):
    response = bob_client.get(f"{list_url}?type=bug", headers={"HX-Request": "true", "HX-Target": "discovery-list"})
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="discovery-list"')
    assert "<html" not in html
    assert listed(response) == [assorted["elsewhere"].pk, assorted["bug"].pk]


# Pages


def test_a_long_list_shows_a_page_and_loads_more_after_the_last_row(bob_client, list_url, task):
    bulk_discoveries(task, PAGE_SIZE + 7)
    newest = list(Discovery.objects.order_by("-pk").values_list("pk", flat=True))
    response = bob_client.get(list_url)
    assert listed(response) == newest[:PAGE_SIZE]
    html = response.content.decode()
    more = f"{list_url}?after={newest[PAGE_SIZE - 1]}"
    assert f'href="{more}"' in html and f'hx-get="{more}"' in html
    assert f"{PAGE_SIZE + 7} discoveries on this board" in html

    rows = bob_client.get(more, headers={"HX-Request": "true"})
    assert listed(rows) == newest[PAGE_SIZE:]
    fragment = rows.content.decode()
    assert fragment.lstrip().startswith("<tr")
    assert "Load more" not in fragment

    # Without JavaScript the link is a page of its own, with a way back.
    page = bob_client.get(more).content.decode()
    assert "Back to the newest" in page
    assert f'id="discovery-{newest[-1]}"' in page


def test_load_more_keeps_the_filters(bob_client, list_url, task):
    bulk_discoveries(task, PAGE_SIZE + 3)
    bulk_discoveries(task, 10, discovery_type="optimization")
    response = bob_client.get(f"{list_url}?type=bug")
    last = listed(response)[-1]
    assert f"?after={last}&amp;type=bug" in response.content.decode()
    rest = bob_client.get(f"{list_url}?after={last}&type=bug", headers={"HX-Request": "true"})
    assert set(Discovery.objects.filter(pk__in=listed(rest)).values_list("discovery_type", flat=True)) == {"bug"}
    assert len(listed(response)) + len(listed(rest)) == PAGE_SIZE + 3


# Resolving


@pytest.mark.parametrize("who", ["bob", "alice"])
def test_members_and_staff_resolve_what_an_agent_recorded(client, board, found, who, request, list_url):
    user = request.getfixturevalue(who)
    client.force_login(user)
    response = client.post(resolve_url(board, found), {"status": "resolved", "reason": "Fixed in #12"}, follow=True)
    assert response.redirect_chain[-1][0] == f"{list_url}#discovery-{found.pk}"
    found.refresh_from_db()
    assert found.resolution_status == "resolved"
    assert found.resolution_note == "Fixed in #12"
    assert found.resolved_by == who
    assert f"Discovery #{found.pk} resolved." in response.content.decode()
    assert Event.objects.filter(type="discovery.resolved", entity_id=str(found.pk)).count() == 1


def test_staff_who_are_not_members_may_resolve(client, board, found):
    dana = get_user_model().objects.create_user("dana", password="x", is_staff=True)
    client.force_login(dana)
    client.post(resolve_url(board, found), {"status": "invalid", "reason": "Duplicate"})
    found.refresh_from_db()
    assert found.resolution_status == "invalid"


def test_marking_invalid_says_so_and_keeps_the_filters(bob_client, board, found, list_url):
    url = resolve_url(board, found, "type=bug&status=open&after=3&junk=1")
    response = bob_client.post(url, {"status": "invalid", "reason": "Not a bug"})
    assert response["Location"] == f"{list_url}?type=bug&status=open#discovery-{found.pk}"
    found.refresh_from_db()
    assert found.resolution_status == "invalid"
    page = bob_client.get(response["Location"]).content.decode()
    assert f"Discovery #{found.pk} marked invalid." in page


def test_a_closed_discovery_stays_closed_and_the_refusal_is_shown(bob_client, alice_client, board, found):
    alice_client.post(resolve_url(board, found), {"status": "resolved", "reason": "Fixed"})
    response = bob_client.post(resolve_url(board, found), {"status": "invalid", "reason": "No"}, follow=True)
    html = response.content.decode()
    assert "already resolved (by alice)" in html
    assert "message-error" in html
    found.refresh_from_db()
    assert found.resolution_status == "resolved" and found.resolved_by == "alice"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"status": "resolved"}, "Reason: This field is required."),
        ({"status": "resolved", "reason": "   "}, "This field cannot be blank."),
        ({"status": "open", "reason": "x"}, "Status: Select a valid choice. open is not one of the available choices."),
        ({"status": MARKUP, "reason": "x"}, "Status: Select a valid choice."),
        ({"status": "resolved", "reason": "x" * 20_001}, "Reason: Ensure this value has at most 20000 characters"),
    ],
)
def test_a_bad_resolution_is_refused_with_a_message(bob_client, board, found, data, message):
    response = bob_client.post(resolve_url(board, found), data, follow=True)
    assert response.status_code == 200
    html = response.content.decode()
    assert message in html
    assert f"Discovery #{found.pk} was not changed." in html
    assert MARKUP not in html
    found.refresh_from_db()
    assert found.resolution_status == "open"


def test_resolve_takes_only_a_post_with_its_csrf_token(board, found, bob):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    assert client.get(resolve_url(board, found)).status_code == 405
    assert client.post(resolve_url(board, found), {"status": "resolved", "reason": "x"}).status_code == 403
    found.refresh_from_db()
    assert found.resolution_status == "open"


def test_resolving_an_unknown_discovery_is_a_404(bob_client, board):
    url = reverse("discoveries:list", args=[board.slug]) + "999999/resolve/"
    assert bob_client.post(url, {"status": "resolved", "reason": "x"}).status_code == 404


def test_an_open_discovery_offers_the_resolve_step(bob_client, board, found, list_url):
    row = row_of(bob_client.get(list_url).content.decode(), found)
    assert f'action="{resolve_url(board, found)}"' in row
    assert 'name="csrfmiddlewaretoken"' in row
    assert '<label for="reason-' in row
    assert 'value="resolved"' in row and 'value="invalid"' in row


# Query counts


def count_queries(client, url, **kwargs):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, **kwargs)
    assert response.status_code == 200
    return len(queries)


def add_many(board, alice, count, start=0):
    """`count` discoveries over several tickets and tasks, half of them with a spawned task."""
    for n in range(start, start + count, 10):
        ticket = ticket_create(board=board, title=f"Ticket {n}", actor=alice, phase="PHASE_IMPLEMENTATION")
        task = task_create(ticket=ticket, title=f"Task {n}", actor=alice)
        for m in range(10):
            if m % 2:
                discovery_branch(source_task=task, discovery_type="bug", description=f"Bug {n + m}", actor=alice)
            else:
                discovery_record(source_task=task, discovery_type="optimization", description=f"{n + m}", actor=alice)


@pytest.mark.parametrize(
    "query", ["", "type=bug&status=open&phase=PHASE_IMPLEMENTATION", "ticket={ticket}", "after={after}"]
)
def test_the_page_costs_the_same_queries_with_10_or_200_discoveries(bob_client, board, alice, list_url, query):
    add_many(board, alice, 10)
    ticket = board.tickets.order_by("pk").first()
    values = {"ticket": ticket.pk, "after": 10**9}
    url = f"{list_url}?{query.format(**values)}"
    few = count_queries(bob_client, url)
    few_htmx = count_queries(bob_client, url, headers={"HX-Request": "true"})
    add_many(board, alice, 190, start=10)
    assert Discovery.objects.count() == 200
    assert Task.objects.filter(spawned_by__isnull=False).count() == 100
    assert count_queries(bob_client, url) == few
    assert count_queries(bob_client, url, headers={"HX-Request": "true"}) == few_htmx
    assert few <= 9


# Live, in a real browser: Chromium on a Daphne server of the test database (see tests/browser.py)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("server_log", "no_broadcasts_from_the_test_process")
def test_the_list_shows_new_and_resolved_discoveries_as_they_happen(open_as, board, bob, alice, builder):
    from playwright.sync_api import expect

    agent, _ = builder
    ticket = ticket_create(board=board, title="Login page", actor=alice, phase="PHASE_IMPLEMENTATION")
    task = task_create(ticket=ticket, title="Write the form", actor=alice)
    old = discovery_record(source_task=task, discovery_type="bug", description="Old bug", actor=agent)
    page = open_as(bob, reverse("discoveries:list", args=[board.slug]) + "?type=bug", live=True)
    expect(page.locator("tbody tr")).to_have_count(1)

    new = discovery_record(source_task=task, discovery_type="bug", description="Fresh <b>bug</b>", actor=agent)
    discovery_record(source_task=task, discovery_type="optimization", description="Not a bug", actor=agent)
    expect(page.locator(f"#discovery-{new.pk}")).to_contain_text("Fresh <b>bug</b>")
    expect(page.locator("tbody tr")).to_have_count(2)  # the filter holds: no optimisation
    expect(page.locator(".list-summary")).to_contain_text("2 discoveries match the filters")

    from discoveries.services import discovery_resolve

    discovery_resolve(discovery=old, status="invalid", reason="Duplicate", actor=alice)
    expect(page.locator(f"#discovery-{old.pk}")).to_contain_text("Invalid")
    assert page.evaluate("window.sameDocument === true"), "the page reloaded instead of swapping its list"


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("server_log", "no_broadcasts_from_the_test_process")
def test_a_reason_being_typed_survives_news_and_resolves(open_as, board, bob, alice, builder):
    from playwright.sync_api import expect

    agent, _ = builder
    ticket = ticket_create(board=board, title="Login page", actor=alice, phase="PHASE_IMPLEMENTATION")
    task = task_create(ticket=ticket, title="Write the form", actor=alice)
    found = discovery_record(source_task=task, discovery_type="bug", description="Crash", actor=agent)
    page = open_as(bob, reverse("discoveries:list", args=[board.slug]), live=True)
    row = page.locator(f"#discovery-{found.pk}")
    row.get_by_text("Resolve…").click()
    row.get_by_label("Reason").fill("Fixed by the new form")

    later = discovery_record(source_task=task, discovery_type="bug", description="Another", actor=agent)
    # News waits while the form is open: the typed reason is still there after a poll or two.
    page.wait_for_timeout(2_500)
    expect(row.get_by_label("Reason")).to_have_value("Fixed by the new form")
    expect(page.locator(f"#discovery-{later.pk}")).to_have_count(0)

    row.get_by_label("Invalid").check()
    row.get_by_role("button", name=f"Close #{found.pk}").click()
    expect(page.locator("#messages")).to_contain_text(f"Discovery #{found.pk} marked invalid.")
    expect(page.locator(f"#discovery-{found.pk}")).to_contain_text("Fixed by the new form")
    expect(page.locator(f"#discovery-{later.pk}")).to_be_visible()
    found.refresh_from_db()
    assert found.resolution_status == "invalid" and found.resolved_by == "bob"
