"""The agent API object: every app's routers under /api/v1/, bearer-token auth, one error format."""

from ninja import NinjaAPI

from board import api as board_api
from discoveries import api as discoveries_api


class OmoiAPI(NinjaAPI):
    def get_openapi_schema(self, **kwargs):
        # Errors are answered by handlers and middleware, not by the operations: documented here, once.
        return board_api.document_errors(super().get_openapi_schema(**kwargs))


api = OmoiAPI(
    title="Omoi agent API",
    version="1",
    description=(
        "The contract agent runtimes code against. Authenticate with `Authorization: Bearer <token>`; "
        "a POST may carry an `Idempotency-Key` header to make retries safe."
    ),
    urls_namespace="api",
    auth=board_api.AgentAuth(),
)
board_api.install_error_handlers(api)

api.add_router("/agents", board_api.agents.router)
api.add_router("/tasks", board_api.tasks.router)
api.add_router("/tickets", board_api.tickets.router)
api.add_router("/phases", board_api.phases.router)
api.add_router("/boards", board_api.boards.router)
api.add_router("/discoveries", discoveries_api.router)


@api.get("/health", auth=None, tags=["health"], summary="Liveness: a trivial JSON answer, no database")
def health(request):
    return {"status": "ok"}
