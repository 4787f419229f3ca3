"""Every failure the API can answer, and the one JSON shape they all take (SPEC §4).

Each class carries its HTTP status and error code, like datasette's `Base400` family; raise one
anywhere below the API and `api/middleware.py` turns it into a response with `error_body`.
Pure: no aiohttp, so the store, the manager and the tests can raise and catch these freely.

    AppError (500 INTERNAL)
    ├── BadRequest (400): InvalidJson, ValidationError, UnsupportedPlatform,
    │                     NoFace, MultipleFaces, FaceTooSmall, NotAnImage
    ├── Unauthorized (401)
    ├── NotFound (404 NOT_FOUND): SessionNotFound, AvatarNotFound
    ├── MethodNotAllowed (405)
    ├── Conflict (409 INVALID_STATE): SessionEnded (and sessions.state.InvalidTransition)
    ├── PayloadTooLarge (413)
    ├── RateLimited (429)
    └── Unavailable (503): NoCapacity, EngineLoading, StorageUnavailable
"""

from __future__ import annotations

from typing import Any, ClassVar


def error_body(
    code: str, message: str, suggestion: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The body of every error response; `details` appears only when there are some."""
    error: dict[str, Any] = {"code": code, "message": message, "suggestion": suggestion}
    if details:
        error["details"] = details
    return {"success": False, "error": error}


class AppError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL"
    default_message: ClassVar[str] = "Internal server error"
    default_suggestion: ClassVar[str] = "Try again; if it keeps failing, check the server log."

    def __init__(
        self,
        message: str | None = None,
        *,
        suggestion: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.suggestion = suggestion or self.default_suggestion
        self.details = details or {}
        self.headers = headers or {}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.suggestion, self.details)


class Internal(AppError):
    pass


class BadRequest(AppError):
    status = 400
    code = "VALIDATION_ERROR"
    default_message = "Invalid request"
    default_suggestion = "Check the request against the API reference (/openapi.json)."


class InvalidJson(BadRequest):
    code = "INVALID_JSON"
    default_message = "Request body is not valid JSON"
    default_suggestion = "Send a JSON object with Content-Type: application/json."


class ValidationError(BadRequest):
    """A field is missing or has the wrong type or value; the message names the field."""

    def __init__(self, field: str, problem: str, *, suggestion: str | None = None) -> None:
        super().__init__(f"{field} {problem}", suggestion=suggestion, details={"field": field})
        self.field = field


class UnsupportedPlatform(BadRequest):
    code = "UNSUPPORTED_PLATFORM"
    default_message = "LiveKit rooms are not supported by this server yet"
    default_suggestion = "Use room.platform 'daily' (with url and token) or 'local'."


class NoFace(BadRequest):
    code = "NO_FACE"
    default_message = "No face found in the image"
    default_suggestion = "Use a photo with one clearly visible, front-facing face."


class MultipleFaces(BadRequest):
    code = "MULTIPLE_FACES"
    default_message = "More than one face found in the image"
    default_suggestion = "Use a photo of exactly one person."


class FaceTooSmall(BadRequest):
    code = "FACE_TOO_SMALL"
    default_message = "The face is too small in the image"
    default_suggestion = "Crop the photo so the face is at least 15% of the image width."


class NotAnImage(BadRequest):
    code = "NOT_AN_IMAGE"
    default_message = "The upload is not a JPEG, PNG or WebP image"
    default_suggestion = "Send a JPEG, PNG or WebP file of at most 10 MB."


class Unauthorized(AppError):
    status = 401
    code = "UNAUTHORIZED"
    default_message = "API key required"
    default_suggestion = "Send your key in the x-api-key header (printed at server start)."


class NotFound(AppError):
    status = 404
    code = "NOT_FOUND"
    default_message = "Not found"
    default_suggestion = "Check the URL against the API reference (/openapi.json)."


class SessionNotFound(NotFound):
    code = "SESSION_NOT_FOUND"
    default_message = "Session not found"
    default_suggestion = "Check the session_id; sessions belong to the account that created them."


class AvatarNotFound(NotFound):
    code = "AVATAR_NOT_FOUND"
    default_message = "Avatar not found"
    default_suggestion = "List the avatars you can use with GET /v1/avatars."


class MethodNotAllowed(AppError):
    status = 405
    code = "METHOD_NOT_ALLOWED"
    default_message = "Method not allowed"
    default_suggestion = "The Allow header lists the methods this URL accepts."


class Conflict(AppError):
    status = 409
    code = "INVALID_STATE"
    default_message = "The resource is not in a state that allows this"
    default_suggestion = "GET the resource to see its current state."


class SessionEnded(Conflict):
    code = "SESSION_ENDED"
    default_message = "Session has ended"
    default_suggestion = "An ended session cannot be started again; create a new session."


class RequestTimeout(AppError):
    status = 408
    code = "REQUEST_TIMEOUT"
    default_message = "The request body stopped arriving"
    default_suggestion = "Send the whole body without pausing (the limit is http.body_timeout_s)."


class PayloadTooLarge(AppError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"
    default_message = "Request body is too large"
    default_suggestion = "Send a smaller body (the limit is the server's max_request_mb)."


class RateLimited(AppError):
    status = 429
    code = "RATE_LIMITED"
    default_message = "Too many requests"
    default_suggestion = "Wait for the number of seconds in the Retry-After header."


class Unavailable(AppError):
    status = 503
    code = "UNAVAILABLE"
    default_message = "Service unavailable"
    default_suggestion = "Try again in a few seconds."


class NoCapacity(Unavailable):
    code = "NO_CAPACITY"
    default_message = "No capacity for another live session"
    default_suggestion = "End a session or wait for one to end, then retry."


class EngineLoading(Unavailable):
    code = "ENGINE_LOADING"
    default_message = "The avatar engine is still loading"
    default_suggestion = "Retry in a few seconds; GET /healthz shows engine: ready when it is."

    @classmethod
    def for_error(cls, error: str | None) -> EngineLoading:
        """503 ENGINE_LOADING, saying why when the engine failed to load (`EngineStatus.error`)."""
        if error is None:
            return cls()
        return cls(
            f"The avatar engine failed to load ({error})",
            suggestion="See the server log; restart the server once the cause is fixed.",
        )


class StorageUnavailable(Unavailable):
    code = "STORAGE_UNAVAILABLE"
    default_message = "Storage is unavailable"
    default_suggestion = "The database is locked or the disk is full; retry, or check the disk."
