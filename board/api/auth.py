"""Bearer-token authentication for the agent API: the agent is then `request.auth`."""

from ninja.security import HttpBearer

from ..middleware import request_agent


class AgentAuth(HttpBearer):
    """`Authorization: Bearer <token>`; the agent is then `request.auth`."""

    def authenticate(self, request, token):
        return request_agent(request, token)
