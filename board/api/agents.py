"""Agent endpoints: who am I, and the status and heartbeat an agent reports."""

from ninja import Router

from ..models import Agent
from ..services import agent_heartbeat
from .schemas import AgentOut, HeartbeatIn

router = Router(tags=["agents"])


@router.get("/me", response=AgentOut, summary="The calling agent")
def get_me(request):
    return agent_me(request.auth)


def agent_me(agent):
    """The agent as AgentOut answers it, read again with its boards and phase."""
    return AgentOut.from_agent(Agent.objects.prefetch_related("boards").select_related("phase").get(pk=agent.pk))


@router.post("/me", response=AgentOut, summary="Report the calling agent's status (capabilities are set by staff)")
def report_status(request, payload: HeartbeatIn):
    agent_heartbeat(agent=request.auth, status=payload.status)
    return get_me(request)


@router.post("/me/heartbeat", response=AgentOut, summary="Tell the orchestrator the agent is alive")
def beat(request, payload: HeartbeatIn):
    agent_heartbeat(agent=request.auth, status=payload.status)
    return get_me(request)
