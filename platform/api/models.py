from django.db import models


class RateWindow(models.Model):
    """One token's request count in its current fixed window (see api.ratelimit).

    A row in the database, so every web worker counts against the same limit."""

    token = models.OneToOneField("orgs.AccessToken", on_delete=models.CASCADE, primary_key=True)
    window_start = models.BigIntegerField()
    count = models.PositiveIntegerField()

    def __str__(self):
        return f"token {self.token_id}: {self.count} since {self.window_start}"
