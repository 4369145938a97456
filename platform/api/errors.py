"""Errors the Management API answers with: `{"message": ...}` and a status, as Supabase's does."""


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def not_found(what: str = "Not found") -> ApiError:
    return ApiError(404, what)


def forbidden(message: str) -> ApiError:
    return ApiError(403, message)
