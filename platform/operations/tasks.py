"""django-q2 entry points. Each is a thin caller of a verb and safe to run twice."""

from operations import claims
from operations.runner import OperationRun


def run_operation(operation_id: int) -> bool:
    """Claim and run one operation. Returns whether this call did the work."""
    operation = claims.claim(operation_id)
    if operation is None:
        return False
    OperationRun(operation).run()
    return True


def clean_up(operation_id: int) -> bool:
    from operations.cleanup import stop_what_it_started

    return stop_what_it_started(operation_id)


def reap() -> int:
    return claims.reap()


def refresh_health() -> int:
    from operations.health import refresh_all

    return refresh_all()


def check_drift() -> int:
    from operations.drift import check_all

    return check_all()
