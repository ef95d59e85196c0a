"""The shape of a workflow file, as pydantic models.

The field names are those of the workflow files OmoiOS shipped, so existing
files load unchanged. Types are strict: YAML's "3" is not the number 3.
"""

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError


def is_holding_phase(phase_id, configuration):
    """A holding phase parks work and sends it back (Blocked): terminal, yet with transitions out.

    Marked by `configuration.holding: true`, or by an id naming it blocked, as
    the workflow files written before this setting existed do.
    """
    holding = (configuration or {}).get("holding") if isinstance(configuration, dict) else None
    if holding is None:
        return "BLOCKED" in str(phase_id).upper()
    return holding is True


# Column colours by name, with the hex the board renders. A column's colour is
# written into a style attribute, so only these names or a #rrggbb value pass.
PALETTE = {
    "gray": "#6b7280",
    "slate": "#64748b",
    "blue": "#3b82f6",
    "indigo": "#6366f1",
    "violet": "#8b5cf6",
    "pink": "#ec4899",
    "red": "#dc2626",
    "orange": "#ea580c",
    "amber": "#d97706",
    "yellow": "#ca8a04",
    "green": "#16a34a",
    "teal": "#0d9488",
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


def _check_color(value):
    if value and not color_hex(value):
        raise PydanticCustomError("color", "unknown colour; " + COLOR_RULE)
    return value


SLUG_PATTERN = r"^[-a-zA-Z0-9_]+$"

PhaseId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=64)]
ColumnId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ExpectedOutput(_Strict):
    type: Name
    pattern: str = ""
    required: bool = True
    validation_rule: str | None = None


class PhaseConfiguration(BaseModel):
    # Open-ended on purpose: workflows may carry settings of their own; the
    # ones the orchestrator reads are typed.
    model_config = ConfigDict(extra="allow", strict=True)

    timeout_seconds: Annotated[int, Field(gt=0)] | None = None
    max_retries: Annotated[int, Field(ge=0)] | None = None
    retry_backoff_seconds: Annotated[float, Field(ge=0)] | None = None
    holding: bool | None = None


class PhaseDefinition(_Strict):
    id: PhaseId
    name: Name
    description: str = ""
    sequence_order: int = 0
    allowed_transitions: list[str] = []
    is_terminal: bool = False
    done_definitions: list[Line] = []
    expected_outputs: list[ExpectedOutput] = []
    phase_prompt: str = ""
    next_steps_guide: list[Line] = []
    configuration: PhaseConfiguration = PhaseConfiguration()


class ColumnDefinition(_Strict):
    id: ColumnId
    name: Name
    description: str = ""
    sequence_order: int = 0
    phase_mapping: Annotated[list[str], Field(min_length=1)]
    wip_limit: Annotated[int, Field(gt=0)] | None = None
    wip_policy: Literal["warn", "block"] = "warn"
    is_terminal: bool = False
    auto_transition_to: str | None = None
    color_theme: Annotated[str, AfterValidator(_check_color)] = ""


class WorkflowDefinition(_Strict):
    slug: Annotated[str, StringConstraints(pattern=SLUG_PATTERN, max_length=100)] | None = None
    name: Name
    description: str = ""
    phases: Annotated[list[PhaseDefinition], Field(min_length=1)]
    board_columns: list[ColumnDefinition] | None = None

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
        return columns
