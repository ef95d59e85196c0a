"""An agent that never finishes, and ignores SIGTERM: only SIGKILL ends it.

With `--chatty` it prints a line every 0.1 s (it is busy, not idle); otherwise it prints one line and falls silent.
"""

import signal
import sys
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("started", flush=True)
while True:
    if "--chatty" in sys.argv:
        print("still working", flush=True)
    time.sleep(0.1)
