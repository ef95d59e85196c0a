"""Phase endpoints: the phases of the agent's workflows, their instructions, and which done-definitions are met."""

from ninja import Router

from phases.models import Phase

from ..selectors import agent_board, agent_phase
from .schemas import BoardSlug, InstructionsOut, PhaseOut, ValidateDoneIn, ValidateDoneOut, phase_out

router = Router(tags=["phases"])


@router.get("", response=list[PhaseOut], summary="The phases of the agent's boards' workflows")
def list_phases(request, board: BoardSlug | None = None):
    return agent_phases(request.auth, board)


def agent_phases(agent, board_slug=None):
    """The phases of the agent's boards' workflows (of one board's, by slug), as PhaseOut answers them."""
    found = Phase.objects.filter(workflow__boards__agents=agent)
    if board_slug:
        found = found.filter(workflow__boards=agent_board(agent, board_slug))
    found = found.distinct().select_related("workflow").with_transitions().order_by("workflow__slug", "sequence_order")
    return [phase_out(phase) for phase in found]


@router.get("/{key}", response=PhaseOut, summary="A phase")
def get_phase(request, key: str, board: BoardSlug | None = None):
    phase = agent_phase(request.auth, key, board)
    return phase_out(phase)


@router.get(
    "/{key}/instructions", response=InstructionsOut, summary="The phase's instructions for an agent, in Markdown"
)
def get_instructions(request, key: str, board: BoardSlug | None = None):
    return instructions_out(agent_phase(request.auth, key, board))


def instructions_out(phase):
    return {"phase": phase.key, "format": "markdown", "instructions": phase.agent_instructions()}


@router.post("/{key}/validate-done", response=ValidateDoneOut, summary="Which done-definitions are met")
def validate_done(request, key: str, payload: ValidateDoneIn, board: BoardSlug | None = None):
    phase = agent_phase(request.auth, key, board)
    missing = phase.missing_done_criteria(payload.completed_criteria)
    met = [item for item in phase.done_definitions if item not in missing]
    return {"phase": phase.key, "done": not missing, "met": met, "missing": missing}
