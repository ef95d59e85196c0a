"""Agents follow their boards live with their API token; a revoked or removed agent's socket is closed."""

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test.utils import CaptureQueriesContext

from board import consumers
from board.models import Board
from board.services import agent_create, agent_revoke
from omoi_site.asgi import application

from .test_board_consumer import (
    ORIGIN,
    PATH,
    assert_closed_with,
    assert_still_usable,
    browser_headers,
    create,
    live,
    log_quietly,
    receive_events,
    run,
)

# Access is re-checked on every poll: here one comes every 50 ms.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_poll")]


@pytest.fixture
def scout(board, alice):
    """An agent on Alice's board: (agent, token)."""
    return agent_create(name="scout", boards=[board], actor=alice)


def bearer(token):
    return [ORIGIN, (b"authorization", f"Bearer {token}".encode())]


async def assert_refused_with(handshake, code, path=PATH):
    communicator = WebsocketCommunicator(application, path, headers=handshake)
    assert await communicator.connect() == (True, None)
    await assert_closed_with(communicator, code)
    await communicator.disconnect()


def test_an_agent_follows_its_board_with_its_token(board, bob, scout):
    agent, token = scout

    async def scenario():
        async with live(bearer(token)) as communicator:
            ticket = await create(board=board, title="For the agent", actor=bob)
            (created,) = await receive_events(communicator, 1)
            assert (created["type"], created["entity_id"]) == ("ticket.created", str(ticket.pk))
            written = await log_quietly(board, 2)
            assert await receive_events(communicator, 2) == written
            await assert_still_usable(communicator)
        # And catches up after a reconnect, like a page.
        async with live(bearer(token), f"{PATH}?after={created['id']}") as communicator:
            assert await receive_events(communicator, 2) == written

    run(scenario)


@pytest.mark.parametrize(
    "authorization",
    [
        b"Bearer omoi_not-a-token",
        b"Bearer ",
        b"Basic b21vaTpzZWNyZXQ=",
        b"omoi_no-scheme",
        b"Bearer " + b"x" * 5000,
    ],
)
def test_a_bad_token_is_refused_with_4401(board, scout, authorization):
    async def scenario():
        await assert_refused_with([ORIGIN, (b"authorization", authorization)], consumers.CLOSE_UNAUTHENTICATED)

    run(scenario)


def test_a_bad_token_is_refused_even_beside_a_good_session(board, bob):
    # The header decides alone: a wrong token is never rescued by a cookie.
    handshake = [*browser_headers(bob), (b"authorization", b"Bearer omoi_not-a-token")]

    async def scenario():
        await assert_refused_with(handshake, consumers.CLOSE_UNAUTHENTICATED)

    run(scenario)


def test_a_revoked_agent_is_refused_with_4401(board, alice, scout):
    agent, token = scout
    agent_revoke(agent=agent, actor=alice)

    async def scenario():
        await assert_refused_with(bearer(token), consumers.CLOSE_UNAUTHENTICATED)

    run(scenario)


@pytest.mark.parametrize("path", [PATH, "/ws/boards/no-such-board/"])
def test_a_board_not_among_the_agents_boards_is_refused_with_4404(board, alice, path):
    # Agents see only their own boards, whoever else may see this one.
    other = Board.objects.create(name="Other", slug="other", workflow=board.workflow)
    _, token = agent_create(name="elsewhere", boards=[other], actor=alice)

    async def scenario():
        await assert_refused_with(bearer(token), consumers.CLOSE_NOT_FOUND, path)

    run(scenario)


def revoke(board, agent, alice):
    agent_revoke(agent=agent, actor=alice)


def remove_from_board(board, agent, alice):
    agent.boards.remove(board)


def delete_agent(board, agent, alice):
    agent.delete()


@pytest.mark.parametrize(
    ("lose_access", "code"),
    [
        pytest.param(revoke, consumers.CLOSE_UNAUTHENTICATED, id="revoked"),
        pytest.param(delete_agent, consumers.CLOSE_UNAUTHENTICATED, id="deleted"),
        pytest.param(remove_from_board, consumers.CLOSE_NOT_FOUND, id="removed from the board"),
    ],
)
def test_an_agent_that_loses_access_is_closed_on_the_next_poll_and_sent_nothing_more(
    board, alice, scout, lose_access, code
):
    agent, token = scout

    async def scenario():
        async with live(bearer(token)) as communicator:
            written = await log_quietly(board, 1)
            assert await receive_events(communicator, 1) == written
            await database_sync_to_async(lose_access)(board, agent, alice)
            await assert_closed_with(communicator, code)
            await create(board=board, title="Not for the agent", actor=alice)
            assert await communicator.receive_nothing(timeout=0.3)

    run(scenario)


def test_an_agent_access_check_is_one_query_whatever_the_number_of_boards_and_agents(board, alice, scout):
    agent, _ = scout

    def queries_of_a_check():
        with CaptureQueriesContext(connection) as queries:
            code = consumers.agent_access(board_id=board.pk, agent_id=agent.pk)
        return code, len(queries)

    small = queries_of_a_check()
    for n in range(30):
        other = Board.objects.create(name=f"Other {n}", slug=f"other-{n}", workflow=board.workflow)
        agent.boards.add(other)
        agent_create(name=f"helper-{n}", boards=[board, other], actor=alice)
    assert small == queries_of_a_check() == (None, 1)
    agent_revoke(agent=agent, actor=alice)
    assert queries_of_a_check() == (consumers.CLOSE_UNAUTHENTICATED, 1)


def test_an_agent_needs_no_origin_header_but_a_cookie_handshake_does(board, bob, scout):
    """Agents are not browsers and send no Origin; without a token the Origin check still applies."""
    _, token = scout
    cookie_only = [header for header in browser_headers(bob) if header[0] != b"origin"]

    async def scenario():
        async with live([(b"authorization", f"Bearer {token}".encode())]) as communicator:
            await assert_still_usable(communicator)
        communicator = WebsocketCommunicator(application, PATH, headers=cookie_only)
        connected, _ = await communicator.connect()
        assert not connected
        elsewhere = [(b"origin", b"https://evil.example"), *cookie_only]
        communicator = WebsocketCommunicator(application, PATH, headers=elsewhere)
        connected, _ = await communicator.connect()
        assert not connected

    run(scenario)
