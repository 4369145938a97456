"""Per-token rate limit: a fixed one-minute window counted in one database row per token.

One statement both reads and bumps the count (INSERT ... ON CONFLICT DO UPDATE ...
RETURNING), so concurrent requests on any number of web workers each see a distinct
count and the limit holds exactly; no lock is held past that statement. The same statement
adds to the token's lifetime totals of requests and refusals that /metrics sums. PostgreSQL and
SQLite (3.35+) both run it.
"""

import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

WINDOW_S = 60


@dataclass(frozen=True)
class RateState:
    limit: int
    remaining: int
    reset_at: int  # epoch seconds when the window ends

    @property
    def exceeded(self) -> bool:
        return self.remaining < 0

    @property
    def retry_after(self) -> int:
        return max(1, self.reset_at - int(time.time()))

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(max(0, self.remaining)),
            "x-ratelimit-reset": str(max(0, self.reset_at - int(time.time()))),
        }


def hit(token_id: int, *, now: float | None = None) -> RateState:
    """Count one request for the token in the current window and say where it stands."""
    limit = settings.BERTH_API_RATE_LIMIT
    window = int((time.time() if now is None else now) // WINDOW_S) * WINDOW_S
    # The window's count after this request (SET expressions read the row as it was).
    counted = "CASE WHEN excluded.window_start > api_ratewindow.window_start THEN 1 ELSE api_ratewindow.count + 1 END"
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO api_ratewindow (token_id, window_start, count, total, refused) "
            "VALUES (%s, %s, 1, 1, CASE WHEN 1 > %s THEN 1 ELSE 0 END) "
            "ON CONFLICT (token_id) DO UPDATE SET "
            # A worker whose clock lags a little never moves the window back.
            f"count = {counted}, "
            "window_start = CASE WHEN excluded.window_start > api_ratewindow.window_start "
            "THEN excluded.window_start ELSE api_ratewindow.window_start END, "
            "total = api_ratewindow.total + 1, "
            f"refused = api_ratewindow.refused + CASE WHEN {counted} > %s THEN 1 ELSE 0 END "
            "RETURNING count",
            [token_id, window, limit, limit],
        )
        (count,) = cursor.fetchone()
    return RateState(limit=limit, remaining=limit - count, reset_at=window + WINDOW_S)
