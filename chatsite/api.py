"""Edge helpers for JSON HTTP views: method check, body parsing, errors in the one shape."""

import json
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.defaults import page_not_found
from django.views.defaults import server_error as html_server_error

from chatsite.errors import AppError, error_response

MAX_JSON_BODY_BYTES = 64 * 1024


def reject_constant(name: str) -> None:
    """json.loads hook: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


# Made once: json.loads with a keyword argument builds a new decoder for every call.
_STRICT_DECODER = json.JSONDecoder(parse_constant=reject_constant)


def json_loads_strict(raw: bytes | str) -> Any:
    """json.loads, but NaN and Infinity raise ValueError (Python accepts them by default)."""
    if not isinstance(raw, str):
        raw = raw.decode(json.detect_encoding(raw), "surrogatepass")
    return _STRICT_DECODER.decode(raw)


def parse_json_body(raw: bytes | str, *, allow_list: bool = False) -> Any:
    """Parse a JSON object (or, where allowed, a list) or raise AppError(invalid_json)."""
    try:
        data = json_loads_strict(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AppError("invalid_json", "The body is not valid JSON.") from exc
    if not (isinstance(data, dict) or (allow_list and isinstance(data, list))):
        kinds = "a JSON object or list" if allow_list else "a JSON object"
        raise AppError("invalid_json", f"The body must be {kinds}.")
    return data


def json_api(
    methods: Iterable[str], *, max_bytes: int = MAX_JSON_BODY_BYTES, allow_list: bool = False
) -> Callable:
    """Decorate a view taking (request, data, **kwargs): JSON in, JSON out, AppError mapped."""
    allowed = tuple(methods)

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                if request.method not in allowed:
                    response = error_response(
                        AppError(
                            "method_not_allowed",
                            f"Use {' or '.join(allowed)}.",
                            status=405,
                        )
                    )
                    response["Allow"] = ", ".join(allowed)
                    return response
                data: Any = {}
                if request.method in ("POST", "PUT", "PATCH"):
                    length = request.headers.get("Content-Length") or "0"
                    if not length.isdigit():
                        raise AppError("bad_request", "Content-Length must be a number.")
                    if int(length) > max_bytes:
                        raise AppError("too_large", "The body is too large.", status=413)
                    if request.body.strip():
                        data = parse_json_body(request.body, allow_list=allow_list)
                return view(request, data, *args, **kwargs)
            except AppError as err:
                return error_response(err)

        return wrapper

    return decorator


def client_ip(request: HttpRequest) -> str:
    """The client's address as the server saw it (daphne --proxy-headers sets it)."""
    return request.META.get("REMOTE_ADDR") or "unknown"


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


@json_api(methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def api_not_found(request: HttpRequest, data: dict[str, Any]) -> HttpResponse:
    """Any unknown /api/ path: 404 in the error shape (also with DEBUG on)."""
    raise AppError("not_found", "No such API endpoint.", status=404)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """400 handler: JSON under /api/."""
    if _is_api(request):
        return error_response(AppError("bad_request", "Bad request."))
    return JsonResponse({"error": {"code": "bad_request", "message": "Bad request."}}, status=400)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404 handler: JSON under /api/, Django's page elsewhere."""
    if _is_api(request):
        return error_response(AppError("not_found", "Not found.", status=404))
    return page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """500 handler: JSON under /api/, Django's page elsewhere."""
    if _is_api(request):
        return error_response(AppError("server_error", "Something went wrong.", status=500))
    return html_server_error(request)
