from django.apps import AppConfig, apps
from django.conf import settings
from django.db.models.signals import post_migrate


def ensure_schedule(sender, **kwargs):
    """The metrics pass runs as a django-q2 schedule; keep it present and current."""
    # From the registry: this module loads with the app configs, before any models can.
    Schedule = apps.get_model("django_q", "Schedule")
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
