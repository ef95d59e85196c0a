"""An agent that cannot do its task: says why on standard error and exits with status 3."""

import sys

print("Looked at the task.")
print("error: the repository could not be cloned", file=sys.stderr)
sys.exit(3)
