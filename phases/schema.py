"""The shape of a workflow file, as pydantic models.

The field names are those of the workflow files OmoiOS shipped, so existing
files load unchanged. Types are strict: YAML's "3" is not the number 3.

Every value is held to what the database columns and the code reading them
accept, not only to its type: a file that validates loads on SQLite and on
PostgreSQL alike, and stays usable afterwards (a phase timeout the task queue
cannot store would fail every task created in that phase).
"""

import json
import math
import re
import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError


def is_holding_phase(phase_id, configuration):
    """A holding phase parks work and sends it back (Blocked): terminal, yet with transitions out.

    Marked by `configuration.holding: true`, or by an id naming it blocked, as
    the workflow files written before this setting existed do.
    """
    holding = (configuration or {}).get("holding") if isinstance(configuration, dict) else None
    if holding is None:
        return "BLOCKED" in str(phase_id).upper()
    return holding is True


# Column colours by name. The board draws a palette name with the stylesheet's variable of that name
# (`var(--slate)`), which has a light and a dark value; the hex here is the light one, for the places
# that need a plain colour. A column's colour is written into a style attribute, so only these names or
# a #rrggbb value pass.
PALETTE = {
    "gray": "#646b78",
    "slate": "#4f6079",
    "blue": "#2360d8",
    "indigo": "#4c45d9",
    "violet": "#7436d6",
    "pink": "#b72573",
    "red": "#c52a2a",
    "orange": "#b6460f",
    "amber": "#9b5a06",
    "yellow": "#876a04",
    "green": "#1c7a3f",
    "teal": "#0e7168",
}
_HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
COLOR_RULE = f"use one of the palette colours ({', '.join(PALETTE)}) or a #rrggbb value"


def color_hex(value):
    """The CSS colour a column's colour setting stands for, or "" when it is empty or not a valid colour."""
    if not isinstance(value, str):
        return ""
    if value in PALETTE:
        return PALETTE[value]
    return value.lower() if _HEX_COLOR.fullmatch(value) else ""


def color_css(value):
    """The CSS value to draw a column's colour with: `var(--name)` for a palette name (it follows the
    light or dark theme), the #rrggbb itself otherwise, "" when it is empty or not a valid colour."""
    if isinstance(value, str) and value in PALETTE:
        return f"var(--{value})"
    return color_hex(value)


def _check_color(value):
    if value and not color_hex(value):
        raise PydanticCustomError("color", "unknown colour; " + COLOR_RULE)
    return value


# What a column means for flow analytics, so that cycle time means the same on every workflow: tickets
# queue in waiting columns, are worked on in working ones (cycle time starts at the first), and are
# finished in done ones (lead and cycle time end at the first).
COLUMN_CATEGORIES = {
    "waiting": "Waiting (queued, nobody works on it)",
    "working": "Working (in progress)",
    "done": "Done (finished)",
}


def default_category(*, is_terminal, first):
    """A column's category when the file gives none: terminal columns are done, the first one waits, others work."""
    if is_terminal:
        return "done"
    return "waiting" if first else "working"


# Limits. Text lengths are those of the database columns where one exists
# (PostgreSQL refuses longer values that SQLite would store); the others keep
# a workflow something a person and an agent can read.
MAX_NAME = 200
MAX_KEY = 64
MAX_DESCRIPTION = 10_000
MAX_PROMPT = 50_000
MAX_LINE = 1_000
MAX_PATTERN = 500
MAX_RULE = 2_000
MAX_PHASES = 100
MAX_LINES = 100
MAX_OUTPUTS = 50
MAX_SEQUENCE_ORDER = 1_000_000
MAX_WIP_LIMIT = 10_000
# The same bounds as a task the agent API creates: a phase's defaults become its tasks' values.
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
MAX_RETRIES = 100
MAX_RETRY_BACKOFF_SECONDS = 24 * 3600
MAX_CONFIGURATION_BYTES = 64 * 1024
MAX_CONFIGURATION_DEPTH = 16
# Integers beyond 2**53 lose digits in JavaScript and in most JSON readers.
JSON_SAFE_INTEGER = 2**53
# Tasks the orchestrator creates when a ticket enters a phase: a handful, not a backlog.
MAX_DEFAULT_TASKS = 20
# Column sizes of a task (board.models.Task); capabilities as the agent API takes them.
MAX_TASK_TYPE = 64
MAX_CAPABILITY = 64
MAX_CAPABILITIES = 50
PRIORITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
# An agent reports at most 100 artifacts with a task, so no output can ask for more copies than that.
MAX_OUTPUT_COUNT = 100
MAX_PASSING_TESTS = 1_000_000


def _text_problem(value):
    """Why no database stores `value`, or None: PostgreSQL text refuses NUL, and a lone surrogate is not Unicode."""
    if "\x00" in value:
        return "contains a NUL character (\\0), which no database field stores"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "contains an unpaired surrogate (\\ud800-\\udfff), which is not Unicode text"
    return None


def _storable(value):
    # Runs before pydantic reads the string, which would refuse a surrogate in words of its own.
    problem = _text_problem(value) if isinstance(value, str) else None
    if problem:
        raise PydanticCustomError("text_unstorable", problem)
    return value


def _one_line(value):
    # Names and list lines are shown and edited one per line; a line break or tab inside would split them.
    if any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in value):
        raise PydanticCustomError("text_control", "must be one line, without line breaks, tabs or control characters")
    return value


def _text(max_length):
    return Annotated[str, StringConstraints(max_length=max_length), BeforeValidator(_storable)]


def _one_line_text(max_length, *, min_length=0, strip=True):
    return Annotated[
        str,
        StringConstraints(strip_whitespace=strip, min_length=min_length, max_length=max_length),
        AfterValidator(_one_line),
        BeforeValidator(_storable),
    ]


SLUG_PATTERN = r"^[-a-zA-Z0-9_]+$"

# Also the agent API's phase keys (board.api).
PHASE_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
PhaseId = Annotated[str, StringConstraints(pattern=PHASE_ID_PATTERN, max_length=MAX_KEY)]
ColumnId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=MAX_KEY)]
Name = _one_line_text(MAX_NAME, min_length=1)
Line = _one_line_text(MAX_LINE, min_length=1)
Description = _text(MAX_DESCRIPTION)
SequenceOrder = Annotated[int, Field(ge=0, le=MAX_SEQUENCE_ORDER)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ExpectedOutput(_Strict):
    type: Name
    pattern: _one_line_text(MAX_PATTERN, strip=False) = ""
    required: bool = True
    validation_rule: _text(MAX_RULE) | None = None
    # Checked by the phase gate against the artifacts agents report: at least this many matching the
    # pattern, and (for tests) at least this many passing.
    min_count: Annotated[int, Field(ge=1, le=MAX_OUTPUT_COUNT)] | None = None
    min_passing: Annotated[int, Field(ge=1, le=MAX_PASSING_TESTS)] | None = None


class DefaultTask(_Strict):
    """A task the orchestrator creates when a ticket enters the phase, as the agent API would create it."""

    title: Name
    task_type: _one_line_text(MAX_TASK_TYPE, min_length=1) = "work"
    description: Description = ""
    required_capabilities: Annotated[
        list[_one_line_text(MAX_CAPABILITY, min_length=1)], Field(max_length=MAX_CAPABILITIES)
    ] = []
    # None: the ticket's priority.
    priority: Literal[PRIORITIES] | None = None


def _json_problems(value, path, depth):
    """(path, message) for each part of `value` a JSON column cannot store or give back as it was."""
    if depth > MAX_CONFIGURATION_DEPTH:
        yield path, f"is nested more than {MAX_CONFIGURATION_DEPTH} levels deep"
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                yield (*path, str(key)), "keys must be text; quote the key"
                continue
            problem = _text_problem(key)
            if problem:
                yield (*path, key), f"the key {problem}"
                continue
            yield from _json_problems(item, (*path, key), depth + 1)
    elif isinstance(value, list):
        for position, item in enumerate(value):
            yield from _json_problems(item, (*path, position), depth + 1)
    elif isinstance(value, str):
        problem = _text_problem(value)
        if problem:
            yield path, problem
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if abs(value) > JSON_SAFE_INTEGER:
            yield path, f"integers must be within ±2**53 ({JSON_SAFE_INTEGER}); write larger numbers as text"
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield path, "must be a finite number; JSON has no NaN or infinity"
    else:
        yield path, f"a {type(value).__name__} cannot be stored as JSON; quote the value to keep it as text"


def _extra_json_errors(model):
    """Pydantic errors for the keys of an open-ended model that a JSON column cannot store as they are."""
    return [
        InitErrorDetails(type=PydanticCustomError("json_unstorable", message), loc=loc, input=None)
        for loc, message in _json_problems(model.__pydantic_extra__ or {}, (), 0)
    ]


class PhaseConfiguration(BaseModel):
    # Open-ended on purpose: workflows may carry settings of their own; the
    # ones the orchestrator reads are typed, the others must be plain JSON.
    model_config = ConfigDict(extra="allow", strict=True)

    timeout_seconds: Annotated[int, Field(gt=0, le=MAX_TIMEOUT_SECONDS)] | None = None
    max_retries: Annotated[int, Field(ge=0, le=MAX_RETRIES)] | None = None
    retry_backoff_seconds: Annotated[float, Field(ge=0, le=MAX_RETRY_BACKOFF_SECONDS, allow_inf_nan=False)] | None = (
        None
    )
    # The cap of the doubling back-off (the orchestrator's OMOI_RETRY_BACKOFF_MAX when left out).
    retry_backoff_max_seconds: (
        Annotated[float, Field(ge=0, le=MAX_RETRY_BACKOFF_SECONDS, allow_inf_nan=False)] | None
    ) = None
    holding: bool | None = None
    default_tasks: Annotated[list[DefaultTask], Field(max_length=MAX_DEFAULT_TASKS)] | None = None

    @model_validator(mode="after")
    def _storable_as_json(self):
        errors = _extra_json_errors(self)
        low, high = self.retry_backoff_seconds, self.retry_backoff_max_seconds
        if low is not None and high is not None and high < low:
            # A cap below the first delay would make every retry wait the cap: surely a slip.
            message = f"is below retry_backoff_seconds ({low:g}); the cap cannot be shorter than the first delay"
            errors.append(
                InitErrorDetails(
                    type=PydanticCustomError("backoff_cap", message), loc=("retry_backoff_max_seconds",), input=None
                )
            )
        if not errors:
            size = len(json.dumps(self.model_dump(exclude_none=True), ensure_ascii=False).encode())
            if size > MAX_CONFIGURATION_BYTES:
                message = f"is {size} bytes as JSON; at most {MAX_CONFIGURATION_BYTES} are allowed"
                errors.append(InitErrorDetails(type=PydanticCustomError("json_too_large", message), loc=(), input=None))
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


class ValidationCriterion(BaseModel):
    """A check the phase's work is held to, as Hephaestus workflows write them; shown to agents with the phase.

    The phase gate does not run these (a `file_exists` check loaded from a
    Hephaestus folder also becomes an expected output, which the gate checks).
    Keys beyond the usual ones (what a check compares against, its timeout)
    are kept as written, as plain JSON.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    description: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_RULE), BeforeValidator(_storable)
    ]
    check_type: _one_line_text(MAX_TASK_TYPE, min_length=1)
    target: _one_line_text(MAX_PATTERN, strip=False) | None = None
    pattern: _text(MAX_RULE) | None = None
    command: _text(MAX_RULE) | None = None

    @model_validator(mode="after")
    def _storable_as_json(self):
        errors = _extra_json_errors(self)
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


class PhaseDefinition(_Strict):
    id: PhaseId
    name: Name
    description: Description = ""
    # None (left out) everywhere means "in file order"; WorkflowDefinition fills it in.
    sequence_order: SequenceOrder | None = None
    allowed_transitions: Annotated[list[PhaseId], Field(max_length=MAX_PHASES)] = []
    is_terminal: bool = False
    done_definitions: Annotated[list[Line], Field(max_length=MAX_LINES)] = []
    expected_outputs: Annotated[list[ExpectedOutput], Field(max_length=MAX_OUTPUTS)] = []
    phase_prompt: _text(MAX_PROMPT) = ""
    next_steps_guide: Annotated[list[Line], Field(max_length=MAX_LINES)] = []
    validation_criteria: Annotated[list[ValidationCriterion], Field(max_length=MAX_LINES)] = []
    configuration: PhaseConfiguration = PhaseConfiguration()


class ColumnDefinition(_Strict):
    id: ColumnId
    name: Name
    description: Description = ""
    sequence_order: SequenceOrder | None = None
    phase_mapping: Annotated[list[PhaseId], Field(min_length=1, max_length=MAX_PHASES)]
    wip_limit: Annotated[int, Field(gt=0, le=MAX_WIP_LIMIT)] | None = None
    wip_policy: Literal["warn", "block"] = "warn"
    is_terminal: bool = False
    # None (left out): default_category's choice; WorkflowDefinition fills it in.
    category: Literal[tuple(COLUMN_CATEGORIES)] | None = None
    auto_transition_to: ColumnId | None = None
    color_theme: Annotated[str, AfterValidator(_check_color)] = ""


def order_problems(orders, label, ids=None):
    """(position, message) for each item of a list whose sequence_order leaves the order unclear.

    `orders` are the items' sequence_order values, None where an item gives
    none; `ids` name the items in messages. Either every item gives one, each
    its own, or none does and the file's order counts: a mix, or two items in
    one place, would leave the order to the database's ids.
    """

    def item(position):
        ident = ids[position] if ids else None
        named = isinstance(ident, str) and len(ident) <= MAX_KEY
        return f"{label}[{position}]" + (f" ({ident})" if named else "")

    given = [position for position, order in enumerate(orders) if order is not None]
    if not given:
        return []
    if len(given) < len(orders):
        return [
            (
                position,
                f"missing, yet {item(given[0])} gives one: give sequence_order to every item of {label} "
                "or to none (then the order in the file counts)",
            )
            for position, order in enumerate(orders)
            if order is None
        ]
    first, problems = {}, []
    for position, order in enumerate(orders):
        if order in first:
            problems.append(
                (position, f"{order} is also the sequence_order of {item(first[order])}; each needs its own place")
            )
        else:
            first[order] = position
    return problems


def _lines(value):
    # Some workflow files write the result criteria as one text: each of its lines is a criterion.
    if isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    return value


class WorkflowDefinition(_Strict):
    slug: Annotated[str, StringConstraints(pattern=SLUG_PATTERN, max_length=100)] | None = None
    name: Name
    description: Description = ""
    # OmoiOS's result settings: a ticket ends with a result an agent submits and staff review, against
    # these criteria; accepting it with stop_all cancels the ticket's open work.
    has_result: bool = False
    result_criteria: Annotated[list[Line], Field(max_length=MAX_LINES), BeforeValidator(_lines)] = []
    on_result_found: Literal["stop_all", "do_nothing"] = "do_nothing"
    phases: Annotated[list[PhaseDefinition], Field(min_length=1, max_length=MAX_PHASES)]
    board_columns: Annotated[list[ColumnDefinition], Field(max_length=MAX_PHASES)] | None = None

    @model_validator(mode="after")
    def _order_by_file_position(self):
        errors = []
        for label, items in (("phases", self.phases), ("board_columns", self.board_columns or [])):
            orders = [item.sequence_order for item in items]
            for position, message in order_problems(orders, label, [item.id for item in items]):
                errors.append(
                    InitErrorDetails(
                        type=PydanticCustomError("sequence_order", message),
                        loc=(label, position, "sequence_order"),
                        input=None,
                    )
                )
            if all(order is None for order in orders):
                for position, item in enumerate(items):
                    item.sequence_order = position
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        _fill_categories(self.board_columns or [])
        return self

    def columns(self):
        """The board columns, or one column per phase when the file names none."""
        if self.board_columns is not None:
            return self.board_columns
        columns, used = [], set()
        for phase in self.phases:
            base = phase.id.lower().removeprefix("phase_").replace("_", "-") or "phase"
            key, number = base, 1
            while key in used:  # PHASE_TODO and TODO would both be "todo"
                number += 1
                key = f"{base}-{number}"
            used.add(key)
            columns.append(
                ColumnDefinition(
                    id=key,
                    name=phase.name,
                    sequence_order=phase.sequence_order,
                    phase_mapping=[phase.id],
                    is_terminal=phase.is_terminal,
                )
            )
        _fill_categories(columns)
        return columns


def _fill_categories(columns):
    """Give each column without a category its default, the first in sequence order waiting."""
    first = min(columns, key=lambda column: (column.sequence_order is None, column.sequence_order or 0), default=None)
    for column in columns:
        if column.category is None:
            column.category = default_category(is_terminal=column.is_terminal, first=column is first)
