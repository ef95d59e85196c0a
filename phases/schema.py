"""The shape of a workflow file, as pydantic models.

The field names are those of the workflow files OmoiOS shipped, so existing
files load unchanged. Types are strict: YAML's "3" is not the number 3.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints


def is_holding_phase(phase_id, configuration):
    """A holding phase parks work and sends it back (Blocked): terminal, yet with transitions out.

    Marked by `configuration.holding: true`, or by an id naming it blocked, as
    the workflow files written before this setting existed do.
    """
    holding = (configuration or {}).get("holding") if isinstance(configuration, dict) else None
    if holding is None:
        return "BLOCKED" in str(phase_id).upper()
    return holding is True


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
    color_theme: str = ""


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
