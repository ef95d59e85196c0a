"""An agent that writes its result to $OMOI_RESULT_FILE and prints only prose (and a decoy JSON line)."""

import json
import os

print('{"summary": "a decoy: the result file wins"}')
print("All done; the result is in the file.")
with open(os.environ["OMOI_RESULT_FILE"], "w", encoding="utf-8") as result:
    json.dump({"summary": "Written to the result file.", "completed_criteria": ["Filed"], "pages": 3}, result)
