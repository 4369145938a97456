from django.apps import AppConfig
from django.core.signals import request_finished
from django_q.signals import post_execute_in_worker

from telemetry.record import flush_after


class TelemetryConfig(AppConfig):
    name = "telemetry"
    verbose_name = "Berth's own event counters"

    def ready(self):
        # Counted events reach the database when a request or a worker task ends, never
        # inside the transaction of the work that counted them.
        request_finished.connect(flush_after, dispatch_uid="telemetry-request")
        post_execute_in_worker.connect(flush_after, dispatch_uid="telemetry-task")
