"""Run a child program under watch: its output drained and bounded, a wall clock and an idle watchdog, its whole group killed.

The child is started in a session (and so a process group) of its own, so
everything it spawns can be stopped together: a coding agent starts shells,
test runners and language servers that would otherwise outlive it. Standard
output and standard error are read by two threads at once, so a child that
fills one pipe while the runner waits on the other cannot deadlock, and only a
bounded tail of each is kept, so a child printing gigabytes costs no memory.
"""

import collections
import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

# Why a child ended, as the log says it: "the command <reason> after 3.2 s".
EXITED = "exited"
TIMED_OUT = "was stopped at its time-out"
IDLE = "was stopped for printing nothing"
STOPPED = "was stopped with the runner"
READ_CHUNK = 64 * 1024
# Enough for the largest result object an agent prints last (Claude Code's carries its whole answer).
STDOUT_TAIL_BYTES = 1024 * 1024
OUTPUT_TAIL_BYTES = 64 * 1024
# How often the wait loop looks at the child, the clocks and the heartbeat.
TICK_SECONDS = 0.05


class Tail:
    """The last `limit` bytes written to it, and how many were written in all. Safe to share between threads."""

    def __init__(self, limit):
        self.limit = limit
        self.total = 0
        self._chunks = collections.deque()
        self._size = 0
        self._lock = threading.Lock()

    def add(self, data):
        with self._lock:
            self.total += len(data)
            self._chunks.append(data)
            self._size += len(data)
            while self._chunks and self._size - len(self._chunks[0]) >= self.limit:
                self._size -= len(self._chunks.popleft())
            if self._chunks and self._size > self.limit:
                first = self._chunks[0]
                self._chunks[0] = first[self._size - self.limit :]
                self._size = self.limit

    def bytes(self):
        with self._lock:
            return b"".join(self._chunks)

    def text(self):
        return self.bytes().decode("utf-8", errors="replace")


@dataclass
class ProcessRun:
    """What became of a child: why it ended, its exit status, and the tails of what it printed."""

    reason: str
    returncode: int
    seconds: float
    stdout: Tail
    output: Tail  # standard output and standard error together, in the order they arrived
    stderr_bytes: int

    def output_tail(self, chars=2000):
        text = self.output.text()
        return text[-chars:]


def run_watched(
    args,
    *,
    stdin_data=None,
    env=None,
    cwd=None,
    timeout=None,
    idle_timeout=None,
    kill_grace=10.0,
    tick=None,
    should_abandon=None,
    clock=time.monotonic,
):
    """Run `args` to its end, or until a limit; a ProcessRun.

    `timeout` is wall-clock seconds, `idle_timeout` seconds without a byte of
    output; past either, or when `should_abandon()` says so, the child's group
    gets SIGTERM, then SIGKILL after `kill_grace` seconds. Whatever the child
    left running in its group when it exited is stopped the same way. `tick()`
    is called every few milliseconds while the child runs (the heartbeat).
    `stdin_data` (bytes) is written to standard input, which is then closed;
    without it the child's standard input is empty.
    """
    started = clock()
    stdout_tail, output_tail, stderr_tail = Tail(STDOUT_TAIL_BYTES), Tail(OUTPUT_TAIL_BYTES), Tail(0)
    last_output = [started]
    process = subprocess.Popen(
        args,
        stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    group = process.pid  # the session leader's pid is its group's id

    def drain(stream, tails):
        while data := stream.read1(READ_CHUNK):
            last_output[0] = clock()
            for tail in tails:
                tail.add(data)

    # Daemon threads: a process outside the group (one that made a session of its own) may hold a
    # pipe open for ever; the runner must not wait on it to exit.
    threads = [
        threading.Thread(target=drain, args=(process.stdout, (stdout_tail, output_tail)), daemon=True),
        threading.Thread(target=drain, args=(process.stderr, (stderr_tail, output_tail)), daemon=True),
    ]
    if stdin_data is not None:
        threads.append(threading.Thread(target=_feed, args=(process.stdin, stdin_data), daemon=True))
    for thread in threads:
        thread.start()

    reason = EXITED
    try:
        while not _has_exited(process):
            now = clock()
            if timeout is not None and now - started >= timeout:
                reason = TIMED_OUT
            elif idle_timeout is not None and now - last_output[0] >= idle_timeout:
                reason = IDLE
            elif should_abandon is not None and should_abandon():
                reason = STOPPED
            if reason != EXITED:
                break
            if tick is not None:
                tick()
            time.sleep(TICK_SECONDS)
    finally:
        # Also when `tick` raised (a revoked token, say): no child outlives the runner's interest in it.
        stop_group(group, grace=kill_grace)
    returncode = process.wait()
    readers = threads[:2]
    for thread in readers:
        thread.join(timeout=2)
    if not any(thread.is_alive() for thread in readers):
        process.stdout.close()
        process.stderr.close()
    return ProcessRun(
        reason=reason,
        returncode=returncode,
        seconds=clock() - started,
        stdout=stdout_tail,
        output=output_tail,
        stderr_bytes=stderr_tail.total,
    )


def _feed(stream, data):
    # A child that does not want (all of) its input closes the pipe: not an error.
    with contextlib.suppress(OSError):
        stream.write(data)
    with contextlib.suppress(OSError):
        stream.close()


def _has_exited(process):
    """Whether the child has exited, without reaping it.

    While the exited leader is not reaped its pid, and so its group id, cannot
    be given to another process: signals sent to the group afterwards reach
    only what the child left behind, never a stranger.
    """
    if process.returncode is not None:
        return True
    if not hasattr(os, "waitid"):
        return process.poll() is not None
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def stop_group(group, *, grace):
    """SIGTERM every process of `group` still running, SIGKILL them after `grace` seconds; wait until they are gone."""
    if not group_alive(group):
        return
    _signal_group(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_alive(group) and time.monotonic() < deadline:
        time.sleep(TICK_SECONDS)
    if group_alive(group):
        _signal_group(group, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while group_alive(group) and time.monotonic() < deadline:
            time.sleep(TICK_SECONDS)


def _signal_group(group, signum):
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(group, signum)


def group_alive(group):
    """Whether a process of `group` is still running (zombies, dead but not yet reaped, do not count)."""
    try:
        entries = os.listdir("/proc")
    except FileNotFoundError:
        # No /proc: ask the kernel, which counts zombies too, so this errs on the side of waiting.
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in entries:
        found = _stat(entry) if entry.isdigit() else None
        if found is not None and found[1] == group and found[0] not in "ZX":
            return True
    return False


def process_running(pid):
    """Whether `pid` is a running process (not gone, not a zombie)."""
    found = _stat(str(pid))
    if found is not None:
        return found[0] not in "ZX"
    if os.path.isdir("/proc"):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stat(pid):
    """(state, process group) from /proc/<pid>/stat, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode(errors="replace")
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces and parentheses: split after the last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], int(fields[2])
