"""An agent that leaves a grandchild running: it would outlive the agent, holding its output pipe open.

The grandchild's pid goes to the file named by argument 1; the agent then reports its result and exits 0.
"""

import json
import subprocess
import sys

grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with open(sys.argv[1], "w") as pid_file:
    pid_file.write(str(grandchild.pid))
print(json.dumps({"summary": "Done, and a helper is still running."}))
