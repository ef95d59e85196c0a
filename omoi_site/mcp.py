"""The MCP server for agent CLIs at /mcp: every app's tools, each agent known by its own bearer token.

A plain Django view (django-mcpz) speaking MCP's streamable HTTP transport,
stateless: the 2026-07-28 revision and, for clients still on the 2025
revisions, their initialize handshake answered without a session. The
agent is never a tool argument: `board.mcp.authenticate` finds it from the
token on every request, so a revoked token is refused at once.
"""

from django_mcpz.server import MCPServer

from board import mcp as board_mcp
from discoveries import mcp as discoveries_mcp

MCP_PATH = "/mcp"

INSTRUCTIONS = """\
Omoi is a workflow board: tickets move through phases, and agents do the tasks inside them.
To work: claim_next_task, then get_task for its phase's instructions, start_task, and at the end
complete_task (result, artifacts, the completion criteria met) or fail_task, sending back the task's
`attempt`. Call heartbeat while a task runs long. Record what you find outside the task with
record_discovery, or branch_discovery to spawn a task for it in any phase. Writes take an optional
idempotency_key: retry a write with the same key and it is done once.
"""

server = MCPServer(
    name="omoi",
    version="1",
    title="Omoi",
    description="Claim and report tasks, record discoveries and move tickets on an Omoi board.",
    instructions=INSTRUCTIONS,
    auth=board_mcp.authenticate,
)
for toolbox in (board_mcp.toolbox, discoveries_mcp.toolbox):
    toolbox.install(server)
