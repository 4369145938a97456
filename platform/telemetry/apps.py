from importlib import import_module

from django.apps import AppConfig
from django.core.signals import request_finished

from telemetry.record import flush_after


class TelemetryConfig(AppConfig):
    name = "telemetry"
    verbose_name = "Berth's own event counters"

    def ready(self):
        # Counted events reach the database when a request or a worker task ends, never
        # inside the transaction of the work that counted them. django_q.signals defines
        # django-q2's models as it loads, so it is loaded here, once every app is.
        request_finished.connect(flush_after, dispatch_uid="telemetry-request")
        import_module("django_q.signals").post_execute_in_worker.connect(flush_after, dispatch_uid="telemetry-task")
