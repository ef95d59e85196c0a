"""The options of `manage.py run_agent` (and `python -m board.runner`), and the run they start.

Kept apart from the management command so an agent's machine can run the
same thing without Django: `python -m board.runner --simulate`.
"""

import argparse
import os
import random
import threading

from .client import CONNECTION_ERRORS, ApiError, Omoi
from .command import PRESETS, CommandAgent
from .loop import Heartbeat, Stop, install_signal_handlers, log_line, run_agent
from .simulate import SimulatedAgent


class UsageError(Exception):
    """A missing or bad option; the message says which."""


def _fraction(text):
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _positive(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number above 0")
    return value


def _not_negative(text):
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is below 0")
    return value


def _count(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a count of 1 or more")
    return value


def add_arguments(parser):
    where = parser.add_argument_group("where and who")
    where.add_argument("--url", help="The Omoi server, e.g. http://127.0.0.1:8000 (default: $OMOI_URL).")
    where.add_argument("--token", help="The agent's token from create_agent (default: $OMOI_TOKEN).")
    where.add_argument("--board", help="Claim only from this board (a slug; default: $OMOI_BOARD, else any).")

    work = parser.add_argument_group("how long")
    work.add_argument("--max-tasks", type=_count, help="Exit after this many tasks (default: work until stopped).")
    work.add_argument("--poll", type=_not_negative, default=5.0, help="Seconds between claims when there is no work.")
    work.add_argument("--heartbeat", type=_positive, default=30.0, help="Seconds between heartbeats.")

    mode = parser.add_argument_group("what does the work (one of)").add_mutually_exclusive_group()
    mode.add_argument("--simulate", action="store_true", help="A scripted agent, for demos and load.")
    mode.add_argument("--command", help="A shell command run once per task, e.g. 'claude -p --output-format json'.")
    mode.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="A ready-made --command: " + "; ".join(f"{name}: {command}" for name, command in sorted(PRESETS.items())),
    )

    simulated = parser.add_argument_group("--simulate")
    simulated.add_argument("--seed", type=int, help="Make the run repeatable.")
    simulated.add_argument(
        "--speed", type=_positive, default=1.0, help="Think times are divided by this; at 1 a task takes 2-6 s."
    )
    simulated.add_argument("--discovery-rate", type=_fraction, default=0.15, help="Share of tasks with a discovery.")
    simulated.add_argument("--failure-rate", type=_fraction, default=0.10, help="Share of tasks that fail.")
    simulated.add_argument(
        "--new-work",
        type=_count,
        default=0,
        metavar="N",
        help="For a demo: when idle, file a ticket whenever fewer than N are in phases with work (needs --board).",
    )

    command = parser.add_argument_group("--command")
    command.add_argument(
        "--prompt-file",
        action="store_true",
        help="Write the prompt to a file ($OMOI_PROMPT_FILE, {prompt_file} in the command) instead of standard input.",
    )
    command.add_argument(
        "--timeout", type=_positive, help="Stop the command after this many seconds (default: the task's time-out)."
    )
    command.add_argument("--idle-timeout", type=_positive, help="Stop the command after this long without output.")
    command.add_argument(
        "--kill-grace", type=_not_negative, default=10.0, help="Seconds between SIGTERM and SIGKILL when stopping it."
    )
    command.add_argument("--workdir", help="The command's working directory (default: the current one).")


def run(options, *, log=log_line, environ=None):
    """Start the agent the options describe; the number of tasks handled. Raises UsageError or ApiError."""
    environ = os.environ if environ is None else environ
    url = options.get("url") or environ.get("OMOI_URL")
    token = options.get("token") or environ.get("OMOI_TOKEN")
    if not url or not token:
        raise UsageError("Give the server and the agent's token: --url and --token, or OMOI_URL and OMOI_TOKEN.")
    command = options.get("command") or PRESETS.get(options.get("preset") or "")
    if not options.get("simulate") and not command:
        raise UsageError("Say what does the work: --simulate, --command 'CMD' or --preset NAME.")
    board = options.get("board") or environ.get("OMOI_BOARD") or None
    if options.get("new_work") and not board:
        raise UsageError("--new-work files tickets on one board: give it with --board.")
    if options.get("workdir") and not os.path.isdir(options["workdir"]):
        raise UsageError(f"--workdir {options['workdir']} is not a folder.")

    omoi = Omoi(url, token)
    stop = Stop()
    # Before the first request, so a stop asked for while the agent introduces itself is not lost.
    # Signal handlers can only be set from the main thread (a test may run this from another).
    restore = install_signal_handlers(stop, log) if threading.current_thread() is threading.main_thread() else None
    try:
        heartbeat = Heartbeat(omoi, every=options.get("heartbeat") or 30.0, log=log)
        rng = random.Random(options.get("seed"))
        me = omoi.me()
        boards = ", ".join(me["boards"]) or "no boards"
        log(f"Agent {me['name']} on {url} ({boards}), claiming from {board or 'any board'}.")
        if options.get("simulate"):
            worker = SimulatedAgent(
                omoi,
                rng=rng,
                speed=options.get("speed") or 1.0,
                discovery_rate=_given(options.get("discovery_rate"), 0.15),
                failure_rate=_given(options.get("failure_rate"), 0.10),
                stop=stop,
                heartbeat=heartbeat,
                log=log,
                new_work=options.get("new_work") or 0,
            )
        else:
            worker = CommandAgent(
                omoi,
                command,
                token=token,
                agent_name=me["name"],
                prompt_file=bool(options.get("prompt_file")),
                timeout=options.get("timeout"),
                idle_timeout=options.get("idle_timeout"),
                kill_grace=_given(options.get("kill_grace"), 10.0),
                workdir=options.get("workdir"),
                stop=stop,
                heartbeat=heartbeat,
                log=log,
            )
        handled = run_agent(
            omoi,
            worker,
            board=board,
            max_tasks=options.get("max_tasks"),
            poll=_given(options.get("poll"), 5.0),
            stop=stop,
            heartbeat=heartbeat,
            log=log,
            rng=rng,
            idle=(lambda: worker.file_new_work(board)) if options.get("new_work") else None,
        )
    finally:
        if restore is not None:
            restore()
        omoi.transport.close()
    log(f"Stopped after {handled} task(s).")
    return handled


def _given(value, default):
    return default if value is None else value


def main(argv=None):
    """`python -m board.runner`: the same options as `manage.py run_agent`, without Django."""
    parser = argparse.ArgumentParser(prog="python -m board.runner", description="Run an Omoi agent.")
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    try:
        run(options)
    except UsageError as problem:
        parser.error(str(problem))
    except ApiError as error:
        log_line(f"The API refused: {error}")
        return 1
    except CONNECTION_ERRORS as error:
        log_line(f"The server did not answer: {error}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
