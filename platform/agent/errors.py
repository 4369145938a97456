"""Errors the agent answers with; each maps to one HTTP status and error code of the API."""

from agent.api import ErrorDetail, ErrorReply


class ApiError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, output_tail: str | None = None):
        super().__init__(message)
        self.message = message
        self.output_tail = output_tail

    def body(self) -> ErrorReply:
        return ErrorReply(ErrorDetail(self.code, self.message, self.output_tail))


class Invalid(ApiError):
    status = 422
    code = "invalid"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Busy(ApiError):
    """Another command runs on the runtime; callers get this at once instead of waiting."""

    status = 409
    code = "busy"


class CommandTimeout(ApiError):
    """The command outlived its deadline; its whole process group was killed."""

    status = 504
    code = "timeout"


class CommandFailed(ApiError):
    """The command ran and exited non-zero; its output tail says why."""

    status = 500
    code = "command_failed"


class Cancelled(CommandTimeout):
    """The operation the command belonged to was cancelled; its whole process group was killed.

    A kind of timeout (the command was cut short, whatever it left half done is cleaned up
    the same way), answered apart so the caller knows it was asked for."""

    status = 409
    code = "cancelled"


class Unsupported(ApiError):
    """This agent cannot do what was asked (a driver without it, say); nothing was changed."""

    status = 501
    code = "unsupported"


class RepositoryError(ApiError):
    """The backup repository could not be reached or refused the request; its words say why."""

    status = 502
    code = "repository"
