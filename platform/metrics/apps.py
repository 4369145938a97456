from django.apps import AppConfig
from django.db.models.signals import post_migrate


def ensure_schedule(sender, **kwargs):
    """The metrics pass runs as a django-q2 schedule; keep it present and current."""
    from django.conf import settings
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name="berth-metrics",
        defaults={
            "func": "metrics.tasks.collect",
            "schedule_type": Schedule.MINUTES,
            "minutes": settings.BERTH_METRICS_COLLECT_MINUTES,
            "repeats": -1,
        },
    )


class MetricsConfig(AppConfig):
    name = "metrics"

    def ready(self):
        post_migrate.connect(ensure_schedule, sender=self)
