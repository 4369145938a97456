"""Health refresh and drift check ask several hosts at once, never more than BERTH_HOST_THREADS."""

import threading
import time
from unittest import mock

import pytest

from operations.fanout import for_each_host

pytestmark = pytest.mark.django_db(transaction=True)


class Tracker:
    """Work that holds each host for a moment and records how many hosts were worked on at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = self.most = 0

    def __call__(self, share):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.2)
        with self.lock:
            self.now -= 1
        return len(share)


def test_it_works_on_hosts_at_once_up_to_the_bound(settings):
    settings.BERTH_HOST_THREADS = 3
    work = Tracker()
    assert for_each_host({n: [n] * 2 for n in range(7)}, work) == 14
    assert work.most == 3


def test_one_failing_host_leaves_the_others_counted(settings):
    settings.BERTH_HOST_THREADS = 4

    def work(share):
        if share == ["bad"]:
            raise RuntimeError("agent spoke nonsense")
        return 1

    assert for_each_host({1: ["ok"], 2: ["bad"], 3: ["ok"]}, work) == 2


def test_health_refresh_asks_hosts_at_once(settings):
    from hosts.models import RuntimeHost
    from operations.health import refresh_all
    from ports.models import BlockState, PortBlock
    from projects.models import Status
    from tests.factories import make_host, make_project

    settings.BERTH_HOST_THREADS = 2
    for n in range(4):
        host = make_host(port_range_start=20000 + 100 * n, port_range_end=20099 + 100 * n)
        project = make_project(host=host, status=Status.ACTIVE_HEALTHY)
        PortBlock.objects.create(
            host=host,
            first_port=host.port_range_start,
            last_port=host.port_range_start + 9,
            state=BlockState.LEASED,
            project=project,
        )
    work = Tracker()
    with mock.patch("operations.health.refresh_host_projects", lambda host, projects: work(projects)):
        assert refresh_all() == 4
    assert work.most == 2
    assert RuntimeHost.objects.count() == 4
