"""The API's one translation of refusals into HTTP answers, and the errors each operation documents."""

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from ninja import Field, Schema

from ..errors import Refused

REFUSALS = (Refused, PermissionDenied, DjangoValidationError)


def refusal_answer(exc):
    """(status, detail) for a refusal from a service: the answer every agent interface gives, with its message.

    The detail is the service's sentence, or for invalid values each problem
    with its place (`{"loc": ["body", field], "msg": ..., "type": "value_error"}`).
    """
    if isinstance(exc, Refused):
        return exc.status, str(exc)
    if isinstance(exc, PermissionDenied):
        return 403, str(exc) or "Forbidden."
    if hasattr(exc, "error_dict"):
        errors = [
            {"loc": ["body", field], "msg": message, "type": "value_error"}
            for field, messages in exc.message_dict.items()
            for message in messages
        ]
    else:
        errors = [{"loc": ["body"], "msg": message, "type": "value_error"} for message in exc.messages]
    return 422, errors


def install_error_handlers(api):
    """Map the services' refusals to HTTP statuses, each with the service's message."""

    def refused(request, exc):
        status, detail = refusal_answer(exc)
        return api.create_response(request, {"detail": detail}, status=status)

    for kind in REFUSALS:
        api.add_exception_handler(kind, refused)


class ErrorItem(Schema):
    loc: list[str | int] = Field(description='Where: ["body", "payload", field] for the schema, ["body", field] after.')
    msg: str
    type: str


class ErrorOut(Schema):
    detail: str | list[ErrorItem] = Field(description="A sentence, or for invalid input each problem with its place.")


ERROR_ANSWERS = {
    401: "No token, or an unknown or revoked one.",
    403: "Not allowed for this agent, e.g. closing a discovery it neither recorded nor works on.",
    404: "Nothing of that id or key on this agent's boards, or no such endpoint.",
    409: "The object's state refuses it: a move the workflow does not allow, a task the agent does not hold, "
    "a discovery already closed, a report from a superseded attempt (the task timed out and was claimed again), "
    "a phase key found in several of the agent's workflows.",
    413: "The body is larger than the limit (OMOI_API_MAX_BODY_BYTES, 256 KiB by default).",
    422: "Invalid input: the body is not a JSON object, breaks the schema (or holds NUL, NaN, an infinity or "
    "nesting past 64 levels), or a service refused a value, e.g. an unknown phase key.",
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": "Makes a retry safe: the same key and body get the first answer again (Idempotent-Replayed: "
    "true) for 24 hours; the same key with another body is refused (422).",
}


def document_errors(schema):
    """Add to each operation of the OpenAPI schema the errors it may answer, with their body, and Idempotency-Key."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error.pop("$defs", {}))
    components["Error"] = error
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if not operation.get("security"):
                continue  # the health check answers everyone, always 200
            codes = {401, 404, 422}
            if method == "post":
                codes |= {403, 409, 413}
                operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
            if "{key}" in path:
                codes.add(409)
            for code in sorted(codes):
                operation["responses"].setdefault(code, {"description": ERROR_ANSWERS[code], "content": body})
    return schema
