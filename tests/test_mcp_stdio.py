"""The stdio bridge: the official MCP client starts it as a command, and it speaks to a live server's /mcp."""

import asyncio
import json
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from board.models import TicketComment
from board.runner.mcp_stdio import Bridge, header_value
from board.services import ticket_create

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent


def through_bridge(command, url, token, work, *, mode="auto"):
    """`await work(client)` with the official client talking to the bridge started as `command`."""
    parameters = StdioServerParameters(
        command=command[0],
        args=command[1:],
        env={"OMOI_URL": url, "OMOI_TOKEN": token, "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
    )

    async def session():
        async with Client(parameters, mode=mode) as client:
            return await work(client)

    return asyncio.run(session())


MODULE = [sys.executable, "-m", "board.runner.mcp_stdio"]
COMMAND = [sys.executable, "manage.py", "mcp_stdio"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_the_bridge_lists_and_calls_the_tools(live_server, builder, board, alice, mode):
    ticket = ticket_create(board=board, title="Bridge", actor=alice)

    async def work(client):
        tools = await client.list_tools()
        me = await client.call_tool("whoami", {})
        comment = await client.call_tool("comment_on_ticket", {"ticket_id": ticket.pk, "body": "<i>via</i> stdio"})
        missing = await client.call_tool("get_ticket", {"ticket_id": 999999})
        return tools, me, comment, missing

    tools, me, comment, missing = through_bridge(MODULE, live_server.url, builder[1], work, mode=mode)
    assert "complete_task" in {tool.name for tool in tools.tools}
    assert me.structured_content["name"] == "builder"
    assert not comment.is_error and TicketComment.objects.get().body == "<i>via</i> stdio"
    assert missing.is_error and missing.content[0].text == "No ticket 999999 on this agent's boards."


def test_the_management_command_is_the_same_bridge(live_server, builder):
    async def work(client):
        return await client.call_tool("whoami", {})

    assert through_bridge(COMMAND, live_server.url, builder[1], work).structured_content["name"] == "builder"


def test_a_refused_token_is_the_answer_to_the_request_that_sent_it(live_server):
    bridge = Bridge(live_server.url, "omoi_not-a-real-token")
    answer = json.loads(bridge.forward(json.dumps({"jsonrpc": "2.0", "id": 7, "method": "ping"})))
    assert answer["id"] == 7 and answer["error"]["message"].startswith("Unauthorized")
    assert bridge.forward(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})) is None


def test_an_unreachable_server_is_an_error_answer_not_a_crash():
    bridge = Bridge("http://127.0.0.1:9", "omoi_x")
    answer = json.loads(bridge.forward(json.dumps({"jsonrpc": "2.0", "id": "a", "method": "ping"})))
    assert answer["id"] == "a" and answer["error"]["message"].startswith(
        "Could not reach Omoi at http://127.0.0.1:9/mcp"
    )


def test_the_headers_come_from_the_message():
    bridge = Bridge("http://omoi.example", "omoi_x")
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "whoami", "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}},
    }
    headers = bridge.headers(call)
    assert headers["MCP-Protocol-Version"] == "2026-07-28"
    assert (headers["Mcp-Method"], headers["Mcp-Name"]) == ("tools/call", "whoami")
    assert header_value("é") == "=?base64?w6k=?="


def test_the_bridge_needs_the_server_and_the_token():
    import subprocess

    done = subprocess.run(MODULE, cwd=ROOT, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "OMOI_URL and OMOI_TOKEN" in done.stderr
