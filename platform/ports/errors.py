"""Why a port lease could not be made; every message names the host or project concerned."""


class PortError(Exception):
    """Base of every error the port verbs raise on purpose."""

    code = "ports"


class TooManySlots(PortError):
    """The template declares more port slots than one block of the host holds."""


class NotLeasable(PortError):
    """The project is deleted or not placed on a host."""


class PortsExhausted(PortError):
    """No block of the host can be handed out now; the message gives its counts."""


class PortsBusy(PortError):
    """Several blocks in a row were found in use by other processes and marked blocked."""


class PortCheckFailed(PortError):
    """The host could not be asked whether ports are free; nothing was marked."""
