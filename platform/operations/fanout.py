"""Work on many hosts at once, a bounded number at a time (health refresh, drift check).

Each host's share runs in one thread of a pool of BERTH_HOST_THREADS: a slow or dead agent
holds one thread for its deadline while the other hosts go on, and no more than that many
agents are asked at once. Each thread closes its own database connection when its host is
done (Django's connections are per thread).
"""

import logging
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import connection

log = logging.getLogger(__name__)


def for_each_host(shares: dict, work) -> int:
    """Run `work(share)` for every host's share, BERTH_HOST_THREADS at a time; returns the
    sum of what they return. An exception in one host's share is logged and counts 0."""

    def attempt(share):
        try:
            return work(share)
        except Exception:
            log.exception("work on one host failed; the others go on")
            return 0

    def run(share):
        try:
            return attempt(share)
        finally:
            connection.close()

    if not shares:
        return 0
    if len(shares) == 1 or settings.BERTH_HOST_THREADS == 1:
        # Nothing to overlap: the caller's thread (and its connection and transaction) does it.
        return sum(attempt(share) for share in shares.values())
    with ThreadPoolExecutor(max_workers=min(settings.BERTH_HOST_THREADS, len(shares))) as pool:
        return sum(pool.map(run, shares.values()))
