"""The one error type every app raises, and its one mapping to the wire error shape."""

from typing import Any

from django.http import JsonResponse


class AppError(Exception):
    """An error a client caused or must be told about; each app subclasses it once."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        status: int = 400,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status
        self.extra = extra or {}


def error_body(err: AppError) -> dict[str, Any]:
    """The HTTP error shape: {"error": {"code", "message", "field"?, ...extra}}."""
    body: dict[str, Any] = {"code": err.code, "message": err.message}
    if err.field:
        body["field"] = err.field
    body.update(err.extra)
    return {"error": body}


def error_response(err: AppError) -> JsonResponse:
    """An HTTP JSON response carrying the error shape and the error's status."""
    response = JsonResponse(error_body(err), status=err.status)
    if "retry_after" in err.extra:
        response["Retry-After"] = str(max(1, round(err.extra["retry_after"])))
    return response


def error_event(err: AppError) -> dict[str, Any]:
    """The WebSocket error frame: {"type": "error", "code", "message", "field"?, ...}."""
    event: dict[str, Any] = {"type": "error", "code": err.code, "message": err.message}
    if err.field:
        event["field"] = err.field
    event.update(err.extra)
    return event
