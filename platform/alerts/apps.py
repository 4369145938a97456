from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


def ensure_schedules(sender, **kwargs):
    """The alert rules and deliveries run as django-q2 schedules; keep them present and current."""
    # From the registry: this module loads with the app configs, before any models can.
    Schedule = apps.get_model("django_q", "Schedule")
    wanted = {
        # Rules that read a few rows, then whatever deliveries are due (retries included).
        "berth-alerts": ("alerts.tasks.evaluate_and_deliver", 1),
        # Certificates: every live project's secrets are decrypted to read them.
        "berth-alert-certificates": ("alerts.tasks.check_certificates", 60),
    }
    for name, (func, minutes) in wanted.items():
        Schedule.objects.update_or_create(
            name=name, defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1}
        )


class AlertsConfig(AppConfig):
    name = "alerts"

    def ready(self):
        post_migrate.connect(ensure_schedules, sender=self)
