"""django-q2 entry points; thin callers, each safe to run twice."""

from alerts.delivery import deliver_due
from alerts.rules import FREQUENT, HOURLY, evaluate


def deliver() -> int:
    return deliver_due()


def evaluate_and_deliver() -> int:
    evaluate(FREQUENT)
    return deliver_due()


def check_certificates() -> int:
    opened, _ = evaluate(HOURLY)
    return opened
