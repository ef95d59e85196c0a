"""Calling /mcp the way an agent CLI does: the official MCP client, a bearer token, one connection per call.

Each call opens its own client (discovery or the initialize handshake, then
the request): the server keeps no session, so nothing may depend on one.
The tests are synchronous (the database is), so each call runs its own loop.
"""

import asyncio
import json
import urllib.error
import urllib.request

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


class McpAgent:
    """The MCP endpoint of `url` as the holder of `token` (None sends no Authorization)."""

    def __init__(self, url, token, *, mode="auto"):
        self.endpoint = url.rstrip("/") + "/mcp"
        self.token = token
        self.mode = mode

    def _headers(self):
        return {"Authorization": f"Bearer {self.token}"} if self.token is not None else {}

    async def _with_client(self, work):
        async with httpx2.AsyncClient(headers=self._headers(), timeout=30) as http:
            transport = streamable_http_client(self.endpoint, http_client=http)
            async with Client(transport, mode=self.mode) as client:
                return await work(client)

    def run(self, work):
        """`await work(client)` with a connected client; an error inside the client's task groups is raised alone."""
        try:
            return asyncio.run(self._with_client(work))
        except BaseExceptionGroup as group:
            while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
                group = group.exceptions[0]
            raise group from None

    def tools(self):
        """The tools listed, by name."""
        listed = self.run(lambda client: client.list_tools())
        return {tool.name: tool for tool in listed.tools}

    def call(self, name, arguments=None):
        """The CallToolResult of `name`."""
        return self.run(lambda client: client.call_tool(name, arguments or {}))

    def answer(self, name, arguments=None):
        """The JSON a successful call answers (its text, parsed)."""
        result = self.call(name, arguments)
        assert not result.is_error, text_of(result)
        return json.loads(text_of(result))

    def refusal(self, name, arguments=None):
        """The message of a call that must be refused as a tool error."""
        result = self.call(name, arguments)
        assert result.is_error, text_of(result)
        return text_of(result)


def text_of(result):
    return "".join(block.text for block in result.content if block.type == "text")


def post(url, body, *, token=None, headers=None, method="POST"):
    """One raw request to /mcp: (status, headers, JSON body or None), for what a client library would not send."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url.rstrip("/") + "/mcp", data=data, headers=sent, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, answer_headers, content = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            status, answer_headers, content = error.code, error.headers, error.read()
    return status, answer_headers, json.loads(content) if content.strip() else None
