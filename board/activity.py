"""A ticket's activity in words: its events, and those of its tasks and discoveries, as sentences people read.

The event log stores what happened as a type, an actor and a payload made for
programs (`{"from": "PHASE_DESIGN", "to": "PHASE_IMPLEMENTATION"}`); the
ticket page says it as a person would: "admin moved it from Design to
Implementation". Phase and column keys become their names, task ids their
titles. An event type this module does not know still gets a line, so an
event added later never breaks the page.
"""

from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import FieldDoesNotExist
from django.db.models import CharField, Q
from django.db.models.functions import Cast

from phases.models import BoardColumn, Phase

from .events import EventType
from .models import Event, Priority, Task

# The newest events shown on a ticket page; older ones stay in the log (and the admin).
ACTIVITY_LIMIT = 100


@dataclass(frozen=True)
class Activity:
    """One event in words: `actor` did `text` at `at`; `detail` is what they wrote or what went wrong."""

    id: int
    type: str
    actor: str
    text: str
    at: datetime
    detail: str = ""
    anchor: str = ""  # the part of the ticket page it is about, such as "task-12"
    tone: str = "neutral"  # neutral, ok, warn, danger or info: a hint for the eye; the words say it all

    @property
    def sentence(self):
        return f"{self.actor} {self.text}"


@dataclass
class Names:
    """What the sentences name things by: phase and column names by key, task titles by id."""

    phases: dict
    columns: dict
    tasks: dict

    def phase(self, key):
        return self.phases.get(key) or key or "no phase"

    def column(self, key):
        return self.columns.get(key) or key or "its column"

    def task(self, task_id, title=None):
        title = title or self.tasks.get(task_id)
        return f"task “{title}”" if title else f"task #{task_id}"


def _quote(text, limit=300):
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _listed(parts):
    """The parts as a phrase: "a", "a and b", "a, b and c"."""
    parts = [part for part in parts if part]
    if len(parts) < 2:
        return "".join(parts)
    return f"{', '.join(parts[:-1])} and {parts[-1]}"


def _priority(value):
    return Priority(value).label if value in Priority.values else str(value)


def _discovery_kind(key):
    return str(key or "discovery").replace("_", " ").lower()


# Each describer returns (text, detail, anchor, tone) for the payload `p` of one event.


def _ticket_created(event, p, names):
    return f"created the ticket in {names.phase(p.get('phase'))}", "", "", "info"


def _ticket_updated(event, p, names):
    changes = p.get("changes") or {}
    parts, detail = [], ""
    if "title" in changes:
        old, new = changes["title"]
        parts.append(f"renamed it from “{_quote(old, 120)}” to “{_quote(new, 120)}”")
    if "description" in changes:
        parts.append("edited the description")
    if "priority" in changes:
        old, new = changes["priority"]
        parts.append(f"changed the priority from {_priority(old)} to {_priority(new)}")
    if "is_blocked" in changes:
        blocked = changes["is_blocked"][1]
        parts.append("marked it blocked" if blocked else "unblocked it")
        if blocked and "blocked_reason" in changes:
            detail = changes["blocked_reason"][1]
    elif "blocked_reason" in changes:
        parts.append("changed what blocks it")
        detail = changes["blocked_reason"][1]
    return _listed(parts) or "edited the ticket", _quote(detail), "", "neutral"


def _ticket_moved(event, p, names):
    return f"reordered it in {names.column(p.get('column'))}", "", "", "neutral"


def _ticket_transitioned(event, p, names):
    text = f"moved it from {names.phase(p.get('from'))} to {names.phase(p.get('to'))}"
    tone = "info"
    kind = p.get("kind")
    if kind == "override":
        text, tone = f"{text}, overriding the workflow as staff", "warn"
    elif kind == "jump":
        text, tone = f"{text}, outside the workflow's transitions", "warn"
    wip = p.get("wip") or {}
    if wip.get("exceeded"):
        limit = f"{names.column(wip.get('column'))} ({wip.get('count')}/{wip.get('limit')})"
        text, tone = f"{text}, over the WIP limit of {limit}", "warn"
    return text, _quote(p.get("reason")), "", tone


def _ticket_commented(event, p, names):
    comment = p.get("comment")
    return "commented", "", f"comment-{comment}" if comment else "", "neutral"


def _result_submitted(event, p, names):
    result = p.get("result")
    return "submitted a result", _quote(p.get("summary")), f"result-{result}" if result else "", "info"


def _result_reviewed(event, p, names):
    result = p.get("result")
    anchor = f"result-{result}" if result else ""
    if p.get("status") == "accepted":
        return "accepted the result", _quote(p.get("note")), anchor, "ok"
    if p.get("status") == "rejected":
        return "rejected the result", _quote(p.get("note")), anchor, "danger"
    return "reviewed the result", _quote(p.get("note")), anchor, "neutral"


def _gate_evaluated(event, p, names):
    phase = names.phase(p.get("phase"))
    tasks = p.get("tasks") or {}
    facts = []
    if tasks.get("total"):
        facts.append(f"{tasks.get('done', 0)}/{tasks['total']} tasks completed")
    if tasks.get("failed"):
        facts.append(f"{len(tasks['failed'])} failed after their retries")
    if p.get("missing"):
        facts.append("not met yet: " + "; ".join(map(str, p["missing"])))
    if p.get("outputs_missing"):
        facts.append("outputs missing: " + "; ".join(map(str, p["outputs_missing"])))
    if p.get("awaiting_entry"):
        facts.append("the phase's own tasks are still being created")
    if p.get("hold"):
        facts.append(str(p["hold"]))
    detail = _quote(". ".join(fact[0].upper() + fact[1:] for fact in facts) + ("." if facts else ""), 500)
    if p.get("passed"):
        return f"checked the phase gate of {phase}: passed, but the ticket is held", detail, "gate", "warn"
    return f"checked the phase gate of {phase}: not passed yet", detail, "gate", "neutral"


def _task_anchor(event):
    return f"task-{event.entity_id}"


def _task(event, p, names):
    return names.task(int(event.entity_id) if event.entity_id.isdigit() else event.entity_id, p.get("title"))


def _task_created(event, p, names):
    text = f"added {_task(event, p, names)} in {names.phase(p.get('phase'))}"
    if p.get("parent"):
        text += f", following up {names.task(p['parent'])}"
    return text, "", _task_anchor(event), "neutral"


def _task_assigned(event, p, names):
    agent = p.get("agent")
    if not agent or agent == shown_actor(event.actor):
        return f"claimed {_task(event, p, names)}", "", _task_anchor(event), "info"
    return f"assigned {_task(event, p, names)} to {agent}", "", _task_anchor(event), "info"


def _task_started(event, p, names):
    return f"started {_task(event, p, names)}", "", _task_anchor(event), "info"


def _task_completed(event, p, names):
    missing = p.get("missing_criteria") or []
    detail = ("Did not report: " + "; ".join(map(str, missing))) if missing else ""
    return f"completed {_task(event, p, names)}", _quote(detail), _task_anchor(event), "ok"


def _task_failed(event, p, names):
    task = _task(event, p, names)
    held_by = p.get("held_by")
    if p.get("timed_out"):
        text = f"timed out {task}" + (f" held by {held_by}" if held_by else "")
    elif held_by and held_by != shown_actor(event.actor):
        text = f"failed {task} held by {held_by}"
    else:
        text = f"reported {task} failed"
    if p.get("will_retry"):
        text, tone = f"{text}; it will be retried (retry {p.get('retry_count')})", "warn"
    else:
        text, tone = f"{text}; no retries are left", "danger"
    return text, _quote(p.get("error")), _task_anchor(event), tone


def _task_released(event, p, names):
    return f"put {_task(event, p, names)} back in the queue", _quote(p.get("reason")), _task_anchor(event), "neutral"


def _task_cancelled(event, p, names):
    return f"cancelled {_task(event, p, names)}", _quote(p.get("reason")), _task_anchor(event), "neutral"


def _discovery_recorded(event, p, names):
    text = f"recorded a discovery ({_discovery_kind(p.get('discovery_type'))}) in {names.task(p.get('source_task'))}"
    return text, _quote(p.get("summary")), f"discovery-{event.entity_id}", "info"


def _discovery_branched(event, p, names):
    text = (
        f"branched the work: {names.task(p.get('spawned_task'))} in {names.phase(p.get('spawn_phase'))}, "
        f"for a discovery ({_discovery_kind(p.get('discovery_type'))}) in {names.task(p.get('source_task'))}"
    )
    return text, _quote(p.get("summary")), f"task-{p.get('spawned_task')}", "info"


def _discovery_resolved(event, p, names):
    source = names.task(p.get("source_task"))
    if p.get("status") == "invalid":
        text = f"closed a discovery in {source} as invalid"
    else:
        text = f"resolved a discovery in {source}"
    return text, _quote(p.get("reason")), f"discovery-{event.entity_id}", "ok"


def _agent_registered(event, p, names):
    return f"registered agent {p.get('name') or event.entity_id}", "", "", "neutral"


def _agent_updated(event, p, names):
    changed = _listed([str(name).replace("_", " ") for name in p if name != "name"])
    return f"changed agent #{event.entity_id}" + (f": {changed}" if changed else ""), "", "", "neutral"


def _agent_online(event, p, names):
    return "came back online", "", "", "ok"


def _agent_offline(event, p, names):
    released = len(p.get("tasks") or [])
    text = f"took agent {p.get('name') or event.entity_id} off the queue: it went silent"
    if released:
        text += f"; {released} task{'s' if released != 1 else ''} went back to the queue"
    return text, "", "", "warn"


def _board_created(event, p, names):
    return f"created the board {p.get('name') or ''}".rstrip(), "", "", "info"


def _member_added(event, p, names):
    role = " as an owner" if p.get("owner") else ""
    return f"added {p.get('user') or 'someone'} to the board{role}", "", "", "neutral"


def _member_updated(event, p, names):
    user = p.get("user") or "someone"
    if p.get("owner"):
        return f"made {user} an owner of the board", "", "", "neutral"
    return f"made {user} a member, no longer an owner", "", "", "neutral"


def _member_removed(event, p, names):
    user = p.get("user") or "someone"
    if user == shown_actor(event.actor):
        return "left the board", "", "", "neutral"
    return f"removed {user} from the board", "", "", "neutral"


DESCRIBERS = {
    EventType.TICKET_CREATED: _ticket_created,
    EventType.TICKET_UPDATED: _ticket_updated,
    EventType.TICKET_MOVED: _ticket_moved,
    EventType.TICKET_TRANSITIONED: _ticket_transitioned,
    EventType.TICKET_COMMENTED: _ticket_commented,
    EventType.TICKET_RESULT_SUBMITTED: _result_submitted,
    EventType.TICKET_RESULT_REVIEWED: _result_reviewed,
    EventType.PHASE_GATE_EVALUATED: _gate_evaluated,
    EventType.TASK_CREATED: _task_created,
    EventType.TASK_ASSIGNED: _task_assigned,
    EventType.TASK_STARTED: _task_started,
    EventType.TASK_COMPLETED: _task_completed,
    EventType.TASK_FAILED: _task_failed,
    EventType.TASK_RELEASED: _task_released,
    EventType.TASK_CANCELLED: _task_cancelled,
    EventType.DISCOVERY_RECORDED: _discovery_recorded,
    EventType.DISCOVERY_BRANCH_CREATED: _discovery_branched,
    EventType.DISCOVERY_RESOLVED: _discovery_resolved,
    EventType.AGENT_REGISTERED: _agent_registered,
    EventType.AGENT_UPDATED: _agent_updated,
    EventType.AGENT_ONLINE: _agent_online,
    EventType.AGENT_OFFLINE: _agent_offline,
    EventType.BOARD_CREATED: _board_created,
    EventType.BOARD_MEMBER_ADDED: _member_added,
    EventType.BOARD_MEMBER_UPDATED: _member_updated,
    EventType.BOARD_MEMBER_REMOVED: _member_removed,
}


def shown_actor(label):
    """An actor as people call it: agents by their name (the log writes "agent:builder"), nobody as "system"."""
    return (label or "system").removeprefix("agent:")


def describe(event, names):
    """One event as an Activity. An unknown type, or a payload not shaped as expected, still gets a plain line."""
    describer = DESCRIBERS.get(event.type)
    payload = event.payload if isinstance(event.payload, dict) else {}
    text = None
    if describer is not None:
        try:
            text, detail, anchor, tone = describer(event, payload, names)
        except (AttributeError, KeyError, TypeError, ValueError):
            # An old or hand-made row: say what is known rather than fail the page.
            text = None
    if text is None:
        text, detail, anchor, tone = f"recorded “{event.type}” on {event.entity_type} #{event.entity_id}", "", "", ""
    return Activity(
        id=event.pk,
        type=event.type,
        actor=shown_actor(event.actor),
        text=text,
        at=event.created_at,
        detail=detail,
        anchor=anchor,
        tone=tone or "neutral",
    )


def _ids_as_text(queryset):
    """The primary keys of `queryset` as text, as `Event.entity_id` holds them, for a subquery."""
    return queryset.annotate(entity_key=Cast("pk", CharField(max_length=64))).values("entity_key")


def _discovery_model():
    """The discoveries app's model, through the relation it adds to Task: this app does not import the one above."""
    try:
        return Task._meta.get_field("discoveries").related_model
    except FieldDoesNotExist:
        return None


def ticket_events(ticket):
    """The events of the ticket and of its tasks and their discoveries, newest first, in one query."""
    about = Q(entity_type="ticket", entity_id=str(ticket.pk)) | Q(
        entity_type="task", entity_id__in=_ids_as_text(Task.objects.filter(ticket_id=ticket.pk))
    )
    discovery = _discovery_model()
    if discovery is not None:
        about |= Q(
            entity_type=discovery._meta.model_name,
            entity_id__in=_ids_as_text(discovery.objects.filter(source_task__ticket_id=ticket.pk)),
        )
    return Event.objects.filter(board_id=ticket.board_id).filter(about).order_by("-id")


def ticket_activity(ticket, *, tasks=None, phases=None, columns=None, limit=ACTIVITY_LIMIT):
    """The ticket's latest `limit` events in words, newest first, and whether older ones exist.

    A fixed number of queries whatever the number of events: one for the
    events, and one each for the phase names, column names and task titles
    that the caller has not already loaded (`phases`, `columns`, `tasks`).
    """
    events = list(ticket_events(ticket)[: limit + 1])
    workflow_id = ticket.board.workflow_id
    if phases is None:
        phases = Phase.objects.filter(workflow_id=workflow_id)
    if columns is None:
        columns = BoardColumn.objects.filter(workflow_id=workflow_id)
    if tasks is None:
        tasks = Task.objects.filter(ticket_id=ticket.pk).only("pk", "title")
    names = Names(
        phases={phase.key: phase.name for phase in phases},
        columns={column.key: column.name for column in columns},
        tasks={task.pk: task.title for task in tasks},
    )
    return [describe(event, names) for event in events[:limit]], len(events) > limit
