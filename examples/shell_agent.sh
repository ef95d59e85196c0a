#!/bin/sh
# The smallest command-line agent: `run_agent --command 'sh examples/shell_agent.sh'` runs it once per task.
# The task's prompt arrives on standard input; the last JSON line printed is the result. A real agent would
# do the work the prompt describes here, and could call the API itself with $OMOI_URL and $OMOI_TOKEN.
words=$(wc -w)
printf 'Read a prompt of %s words for task %s of ticket %s (%s).\n' "$words" "$OMOI_TASK_ID" "$OMOI_TICKET_ID" "$OMOI_PHASE"
printf '{"summary": "Task %s read (%s words); nothing was changed.", "artifacts": []}\n' "$OMOI_TASK_ID" "$words"
