"""The agent side of Omoi: an API client, a simulated agent and a runner for command-line agents.

It talks to the server over HTTP only, exactly as an agent on another
machine would, and imports nothing from Django: `manage.py run_agent` and
`python -m board.runner` both only parse options and call `cli.run`.
"""

from .client import ApiError, KeepAliveTransport, Omoi, describe, urllib_transport
from .command import PRESETS, CommandAgent, read_result, render_prompt
from .loop import Heartbeat, Stop, run_agent
from .simulate import SimulatedAgent, outputs_for

__all__ = [
    "PRESETS",
    "ApiError",
    "CommandAgent",
    "Heartbeat",
    "KeepAliveTransport",
    "Omoi",
    "SimulatedAgent",
    "Stop",
    "describe",
    "outputs_for",
    "read_result",
    "render_prompt",
    "run_agent",
    "urllib_transport",
]
