"""An agent that does its task: reads the prompt, says what it saw, and prints its result as the last JSON line.

With an argument, the prompt is read from that file (the runner's --prompt-file) instead of standard input.
"""

import json
import os
import sys
from pathlib import Path

prompt = Path(sys.argv[1]).read_text(encoding="utf-8") if len(sys.argv) > 1 else sys.stdin.read()
print("Working on it...")
print("progress: {not json}", file=sys.stderr)
seen = {name: value for name, value in os.environ.items() if name.startswith("OMOI_")}
result = {
    "summary": f"Did task {os.environ['OMOI_TASK_ID']}.",
    "artifacts": [{"type": "file", "path": f"src/{os.environ['OMOI_TICKET_ID']}.py"}],
    "completed_criteria": ["It works"],
    "prompt": prompt,
    "stdin_after_file": sys.stdin.read() if len(sys.argv) > 1 else None,
    "environment": seen,
}
print(json.dumps(result))
