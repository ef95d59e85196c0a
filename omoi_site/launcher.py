"""`make run`: the web server, one orchestrator and the demo's simulated agents, as one process tree.

    python -m omoi_site.launcher --bind 127.0.0.1 --port 8000

Each part is a child process in a process group of its own, so Ctrl-C
reaches only this launcher, which stops the parts in the reverse order of
their start (the agents while the server can still hear their last report,
the server last): gently first (SIGTERM, so a step or task under way
finishes), then for good after a grace period. On Linux a part also gets
SIGTERM should the launcher itself be killed. When one part dies on its own the others are stopped
too, and the exit status says which failed. OMOI_DEMO_AGENTS (default 2)
simulated agents work on the demo board; 0 turns them off.
"""

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRACE_SECONDS = 10
# Livelier than the simulator's defaults, so a visitor sees a branch and a retry within the first minute.
DEMO_PACE = ["--discovery-rate", "0.3", "--failure-rate", "0.15"]
DEMO_WORK_IN_PROGRESS = 6


def demo_agent_count():
    value = os.environ.get("OMOI_DEMO_AGENTS", "2").strip() or "2"
    if not value.isdigit():
        sys.exit(f"OMOI_DEMO_AGENTS must be a whole number of agents, not {value!r}.")
    return int(value)


def demo_speed():
    value = os.environ.get("OMOI_DEMO_SPEED", "1").strip() or "1"
    try:
        speed = float(value)
    except ValueError:
        speed = 0
    if not 0 < speed <= 100:
        sys.exit(f"OMOI_DEMO_SPEED must be a number above 0 and at most 100, not {value!r}.")
    return speed


def demo_agents(count):
    """(name, token) for `count` simulated agents on the demo board, each with a new token; none without the board."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omoi_site.settings")
    django.setup()
    from board.demo import demo_agent_tokens

    return demo_agent_tokens(count)


PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """Runs in the child before exec: ask Linux to send SIGTERM when the launcher dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the parts outlive a killed launcher
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Children:
    def __init__(self):
        self.processes = []  # (name, Popen)

    def start(self, name, command, env=None):
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            process_group=0,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self.processes.append((name, process))
        return process

    def first_exited(self):
        return next(((name, p) for name, p in self.processes if p.poll() is not None), None)

    def stop(self):
        """Newest first: SIGTERM, then SIGKILL for a part still running after the grace period."""
        for _, process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_server(url, server, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/health", timeout=2):
                return True
        except OSError:
            time.sleep(0.3)
    return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    options = parser.parse_args(argv)

    speed = demo_speed()
    agents = demo_agents(demo_agent_count())
    python = sys.executable
    url = f"http://{options.bind}:{options.port}"
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    children = Children()
    server = children.start(
        "web server",
        [
            python,
            "-m",
            "omoi_site.server",
            "--bind",
            options.bind,
            "--port",
            str(options.port),
            # No access log: the agents' calls would bury the orchestrator's and the agents' own lines.
            "--verbosity",
            "0",
            "omoi_site.asgi:application",
        ],
    )
    children.start("orchestrator", [python, "manage.py", "orchestrate"])
    if agents and wait_for_server(url, server):
        for number, (name, token) in enumerate(agents, start=1):
            # The token goes through the environment, never the command line, where `ps` would show it.
            children.start(
                name,
                [
                    python,
                    "manage.py",
                    "run_agent",
                    "--simulate",
                    "--board",
                    "demo",
                    "--seed",
                    str(number),
                    "--speed",
                    f"{speed:g}",
                    *DEMO_PACE,
                    # The first agent also files new work, so the demo keeps moving once its tickets are done.
                    *(["--new-work", str(DEMO_WORK_IN_PROGRESS)] if number == 1 else []),
                ],
                env={"OMOI_URL": url, "OMOI_TOKEN": token},
            )
        print(f"{len(agents)} simulated agents work on the demo board (OMOI_DEMO_AGENTS=0 turns them off).")

    status = 0
    while not stopping:
        exited = children.first_exited()
        if exited:
            name, process = exited
            print(f"The {name} stopped (exit status {process.returncode}); stopping the rest.", file=sys.stderr)
            status = process.returncode or 1
            break
        time.sleep(0.2)
    children.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
