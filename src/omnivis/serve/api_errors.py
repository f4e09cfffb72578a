"""One error type for every endpoint, written in the format of the family the path belongs to.

The OpenAI client reads ``{"error": {"message", "type", "param", "code"}}``; KServe v2 clients
(tritonclient) read ``{"error": "..."}``. omnivis' own endpoints use the OpenAI shape, so a client
of either can read the other's errors.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         405: "invalid_request_error", 413: "request_too_large", 415: "unsupported_media_type",
         422: "invalid_request_error", 429: "rate_limit_error", 499: "client_closed_request",
         503: "server_overloaded", 504: "timeout"}


class ApiError(Exception):
    """An answer other than 200: the status, one line that names the problem, and the field it is about."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers or {}


def is_kserve(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def error_response(path: str, error: ApiError) -> JSONResponse:
    """``error`` as JSON in the format of the endpoint family ``path`` belongs to."""
    if is_kserve(path):
        body: dict = {"error": error.message}
    else:
        body = {"error": {"message": error.message, "type": TYPES.get(error.status, "server_error"),
                          "param": error.param, "code": error.status}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)
