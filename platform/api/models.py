from django.db import models


class RateWindow(models.Model):
    """One token's request count in its current fixed window (see api.ratelimit).

    A row in the database, so every web worker counts against the same limit."""

    token = models.OneToOneField("orgs.AccessToken", on_delete=models.CASCADE, primary_key=True)
    window_start = models.BigIntegerField()
    count = models.PositiveIntegerField()
    # Every request the token made, and those refused with 429, since its first: /metrics
    # sums them (berth_api_requests_total, berth_api_throttled_total), bumped by the same
    # statement as the window, so counting costs a request nothing.
    total = models.BigIntegerField(default=0)
    refused = models.BigIntegerField(default=0)

    def __str__(self):
        return f"token {self.token_id}: {self.count} since {self.window_start}"
