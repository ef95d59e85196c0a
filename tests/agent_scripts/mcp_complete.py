"""An agent CLI that reports through MCP: it reads $OMOI_MCP_CONFIG, connects with the official client, completes its task.

It prints no result of its own: the runner finds the task already completed by the child.
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

prompt = sys.stdin.read()
with open(os.environ["OMOI_MCP_CONFIG"], encoding="utf-8") as config_file:
    server = json.load(config_file)["mcpServers"]["omoi"]
assert server["url"] == os.environ["OMOI_MCP_URL"]


async def report():
    async with (
        httpx2.AsyncClient(headers=server["headers"]) as http,
        Client(streamable_http_client(server["url"], http_client=http)) as client,
    ):
        me = await client.call_tool("whoami", {})
        done = await client.call_tool(
            "complete_task",
            {
                "task_id": int(os.environ["OMOI_TASK_ID"]),
                "attempt": int(os.environ["OMOI_ATTEMPT"]),
                "result": {"summary": f"Reported over MCP by {me.structured_content['name']}."},
                "completed_criteria": ["It works"],
            },
        )
        assert not done.is_error, done.content


asyncio.run(report())
print(f"Task {os.environ['OMOI_TASK_ID']} reported over MCP.")
