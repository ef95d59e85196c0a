"""The discoveries' MCP tools: record a discovery, and branch the work with one.

As in `board.mcp`: the API's body schemas, the same lookups and services, the API's answers.
"""

from pydantic import ConfigDict

from board.mcp import Toolbox

from .api import BranchIn, BranchOut, DiscoveryOut, RecordIn, discovery_branched, discovery_recorded

toolbox = Toolbox()


class RecordArgs(RecordIn):
    model_config = ConfigDict(extra="forbid")


class BranchArgs(BranchIn):
    model_config = ConfigDict(extra="forbid")


@toolbox.tool(title="Record a discovery", arguments=RecordArgs, answer=DiscoveryOut)
def record_discovery(agent, arguments):
    """Record what was found while working on a task (a bug, a missing requirement, ...) without branching the work.

    The source task need not be held by this agent; the description and metadata are stored as given.
    """
    return discovery_recorded(agent, arguments)


@toolbox.tool(title="Branch the work with a discovery", arguments=BranchArgs, answer=BranchOut)
def branch_discovery(agent, arguments):
    """Record a discovery and spawn exactly one new task for it, in any phase of the ticket's workflow.

    The new task's phase defaults to the source task's; allowed transitions do not apply to branching.
    """
    return discovery_branched(agent, arguments)
