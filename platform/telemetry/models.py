from django.db import models


class Counter(models.Model):
    """One monotonically growing number of Berth's own events, summed over every web and
    worker process: a Prometheus counter, or one part of a histogram (`<name>_bucket` with
    an `le` label, `<name>_sum`, `<name>_count`).

    Written only by `telemetry.record.flush` (an upsert that adds), read by `/metrics`.
    """

    name = models.CharField(max_length=100)
    # The label set as canonical JSON (sorted keys), so one set is one row.
    labels = models.CharField(max_length=500)
    value = models.FloatField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "labels"], name="telemetry_counter_unique")]

    def __str__(self):
        return f"{self.name}{self.labels} = {self.value:g}"
