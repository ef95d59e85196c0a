"""An agent that prints MEGABYTES (argument 1) of output on each of standard output and error, then exits 0 without a result.

Each stream ends with the same last line, so whichever the runner reads last, the tail of the output ends with it.
"""

import sys

megabytes = int(sys.argv[1])
line = b"x" * 1023 + b"\n"
for _ in range(megabytes * 1024):
    sys.stdout.buffer.write(line)
    sys.stderr.buffer.write(line)
for stream in (sys.stdout.buffer, sys.stderr.buffer):
    stream.write(b"THE END OF THE FLOOD\n")
    stream.flush()
