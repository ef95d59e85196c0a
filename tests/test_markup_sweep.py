"""No answer echoes markup it was sent: every URL pattern, with markup in each parameter, as each kind of visitor.

A value that comes back in an HTML page must come back escaped; an error
body is plain text or JSON, which a browser never runs (Django sends
`X-Content-Type-Options: nosniff`).
"""

import re
from urllib.parse import quote, urlencode

import pytest
from django.urls import URLResolver, get_resolver

from board.models import Task
from board.services import agent_create, task_claim, task_create, ticket_comment, ticket_create
from discoveries.services import discovery_branch

pytestmark = pytest.mark.django_db

MARKUP = (
    "<img src=x onerror=alert(1)>",
    '"><script>alert(1)</script>',
    "'><svg onload=alert(1)>",
)
# Every query parameter a page of the site reads, Django's admin included, and a few nobody reads.
QUERY_NAMES = (
    "after",
    "lane",
    "column",
    "priority",
    "phase",
    "q",
    "blocked",
    "lanes",
    "next",
    "board",
    "ticket",
    "type",
    "status",
    "limit",
    "o",
    "p",
    "e",
    "_changelist_filters",
    "_popup",
    "_to_field",
    "all",
    "unknown",
)
_PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")


def url_patterns(resolver=None, prefix=""):
    """(route, name) of every URL pattern of the site, with the routes of included URLconfs joined."""
    resolver = resolver or get_resolver()
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            yield from url_patterns(pattern, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern), pattern.name


def urls_for(route, markup, valid):
    """URLs for `route`: each parameter in turn carries the markup (where its converter lets it), the others are valid.

    `valid` maps a parameter name to a value that finds an object, so the
    request gets past the lookup to where the other parameters are used.
    """
    route = route.replace("^", "").replace("$", "")
    # The admin's two regex routes: an app label from a fixed list, and a catch-all.
    route = route.replace("(?P<app_label>auth|phases|board|discoveries)", "<app_label>")
    route = route.replace("(?P<url>.*)", "<path:url>")
    parameters = [(m["converter"] or "str", m["name"]) for m in _PARAMETER.finditer(route)]

    def build(marked):
        def value(match):
            converter, name = match["converter"] or "str", match["name"]
            if name == marked and converter in ("str", "path"):
                return quote(markup, safe="")
            return str(valid.get(name, valid["<int>"] if converter == "int" else valid["<slug>"]))

        return "/" + _PARAMETER.sub(value, route)

    urls = {build(None)}
    urls.update(build(name) for converter, name in parameters if converter in ("str", "path"))
    return sorted(urls)


def assert_not_echoed(response, markup, where):
    content_type = response.get("Content-Type", "")
    if response.streaming or "html" not in content_type and "xml" not in content_type:
        assert content_type.split(";")[0] in (
            "application/json",
            "text/plain",
            "application/yaml",
            "text/javascript",
            "",
        ), f"{where}: answered {content_type}"
        return
    body = response.content.decode(errors="replace")
    assert markup not in body, f"{where}: the markup came back unescaped ({response.status_code})"


@pytest.fixture
def world(board, alice, bob):
    """A board with a ticket, a task held by an agent, a comment and a discovery, so that lookups find objects."""
    ticket = ticket_create(board=board, title="Login form", actor=alice)
    ticket_comment(ticket=ticket, body="First look", actor=bob)
    agent, token = agent_create(name="builder", boards=[board], actor=alice)
    task = task_create(ticket=ticket, title="Build the form", actor=alice)
    task_claim(agent=agent, board=board)
    discovery, _ = discovery_branch(
        source_task=Task.objects.get(pk=task.pk), discovery_type="bug", description="A bug", actor=agent
    )
    valid = {
        "slug": board.slug,
        "key": "backlog",
        "pk": ticket.pk,
        "task_id": task.pk,
        "ticket_id": ticket.pk,
        "discovery_id": discovery.pk,
        "object_id": ticket.pk,
        "id": bob.pk,
        "content_type_id": 1,
        "app_label": "board",
        "url": "board/ticket/",
        "<int>": ticket.pk,
        "<slug>": board.slug,
    }
    return {"valid": valid, "token": token, "ticket": ticket}


@pytest.fixture
def visitors(client, alice, bob, world):
    """Who asks: nobody logged in, a member, staff, and an agent with its token."""
    from django.test import Client

    member, staff = Client(), Client()
    member.force_login(bob)
    staff.force_login(alice)
    return {
        "anonymous": (client, {}),
        "member": (member, {}),
        "staff": (staff, {}),
        "agent": (Client(), {"Authorization": f"Bearer {world['token']}"}),
    }


@pytest.mark.slow
@pytest.mark.parametrize("markup", MARKUP)
def test_no_get_answer_echoes_markup_from_the_path_or_the_query(world, visitors, markup):
    checked = 0
    for route, name in url_patterns():
        if name in ("logout",):
            continue  # a GET there is refused before anything is read (405)
        for url in urls_for(route, markup, world["valid"]):
            query_each = [urlencode({name: markup}) for name in QUERY_NAMES]
            query_all = urlencode(dict.fromkeys(QUERY_NAMES, markup))
            for who, (client, headers) in visitors.items():
                for query in (query_all, *(query_each if url.startswith("/boards/") else ())):
                    response = client.get(f"{url}?{query}", headers={**headers, "HX-Request": "true"})
                    assert response.status_code < 500, f"{who} GET {url}?{query}: {response.status_code}"
                    assert_not_echoed(response, markup, f"{who} GET {url}?{query}")
                    checked += 1
    # The sweep must reach the routes it claims to: the board's, the API's and the admin's.
    assert checked > 500


@pytest.mark.parametrize("markup", MARKUP)
def test_no_board_form_echoes_markup_it_was_posted(world, visitors, markup):
    ticket = world["ticket"]
    slug = world["valid"]["slug"]
    posts = {
        f"/boards/{slug}/tickets/new/": {"title": markup * 40, "description": markup, "priority": markup},
        f"/boards/{slug}/tickets/{ticket.pk}/edit/": {
            "title": "",
            "description": markup,
            "priority": markup,
            "blocked_reason": markup,
            "is_blocked": markup,
        },
        f"/boards/{slug}/tickets/{ticket.pk}/move/": {
            "column": markup,
            "previous": markup,
            "next": markup,
            "direction": markup,
            "reason": markup,
            "force": markup,
        },
        "/accounts/login/": {"username": markup, "password": markup, "next": markup},
    }
    for who in ("member", "staff"):
        client, headers = visitors[who]
        for url, data in posts.items():
            for htmx in ({}, {"HX-Request": "true"}):
                response = client.post(f"{url}?q={quote(markup)}", data, headers={**headers, **htmx})
                assert response.status_code < 500, f"{who} POST {url}: {response.status_code}"
                assert_not_echoed(response, markup, f"{who} POST {url}")


def test_a_refused_load_more_is_plain_text_that_names_the_bad_value(world, visitors):
    client, _ = visitors["member"]
    slug = world["valid"]["slug"]
    for query in ("after=<b>1</b>", "lane=<b>x</b>"):
        response = client.get(f"/boards/{slug}/columns/backlog/cards/?{query}")
        assert response.status_code == 400
        assert response["Content-Type"] == "text/plain; charset=utf-8"
        assert b"<b>" in response.content  # named as sent, in a body no browser renders


def test_the_sweep_finds_markup_that_comes_back_raw():
    """The check itself is not vacuous: a page that echoes a parameter fails it."""
    from django.http import HttpResponse

    response = HttpResponse(f"<p>{MARKUP[0]}</p>")
    with pytest.raises(AssertionError, match="unescaped"):
        assert_not_echoed(response, MARKUP[0], "a page that echoes")


def test_a_board_name_with_markup_is_escaped_in_every_message(world, visitors, board):
    board.name = MARKUP[0]
    board.save()
    staff, _ = visitors["staff"]
    for url in (f"/boards/{board.slug}/", f"/boards/{board.slug}/columns/nowhere/cards/", "/"):
        assert_not_echoed(staff.get(url), MARKUP[0], url)
