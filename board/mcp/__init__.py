"""MCP for agent CLIs: the Toolbox every app registers its tools on, and the board's tools."""

from .toolbox import Toolbox, authenticate, run_tool
from .tools import ObjectId, toolbox

__all__ = ["ObjectId", "Toolbox", "authenticate", "run_tool", "toolbox"]
