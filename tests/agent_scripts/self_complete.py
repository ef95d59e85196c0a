"""An agent that completes its task itself through the API, then prints a different result the runner must ignore.

Standard library only, as an agent on another machine would be.
"""

import json
import os
import sys
import urllib.request

sys.stdin.read()
body = {"result": {"summary": "Completed by the agent itself."}, "completed_criteria": ["Self-reported"]}
if os.environ["OMOI_ATTEMPT"]:
    body["attempt"] = int(os.environ["OMOI_ATTEMPT"])
request = urllib.request.Request(
    f"{os.environ['OMOI_URL']}/api/v1/tasks/{os.environ['OMOI_TASK_ID']}/complete",
    data=json.dumps(body).encode(),
    headers={"Authorization": f"Bearer {os.environ['OMOI_TOKEN']}", "Content-Type": "application/json"},
    method="POST",
)
with urllib.request.urlopen(request, timeout=30) as answer:
    print(f"The API answered {answer.status}.")
print(json.dumps({"summary": "The runner must not report this."}))
