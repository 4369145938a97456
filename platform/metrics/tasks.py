"""django-q2 entry points; thin callers."""

from metrics.collection import collect_all


def collect() -> int:
    return collect_all()
