"""A rollout's wave deadline (docs/architecture.md, Rollouts: the driver): a wave not settled
within ceil(size / concurrency) x (queue + operation deadline) halts the rollout, and not
before: its operations may each wait for a worker, then run, `concurrency` at a time."""

from datetime import timedelta

import pytest

from operations import rollouts
from operations.models import Rollout
from tests.dashboard_helpers import placed_project, process_host, register_template

pytestmark = [pytest.mark.postgres, pytest.mark.django_db, pytest.mark.usefixtures("enqueued")]


def test_a_wave_halts_only_past_its_rounds_of_queue_and_operation_deadlines(tmp_path, settings):
    settings.BERTH_QUEUE_DEADLINE, settings.BERTH_OPERATION_DEADLINE = 100, 50
    old = register_template(tmp_path)
    host = process_host(port_range_start=20000, port_range_end=20999, block_size=10)
    for n in range(5):
        placed_project(old, host, name=f"P{n}")
    target = register_template(tmp_path, readme="new\n")
    rollout = rollouts.start_rollout(target, canary=0, wave_size=5, concurrency=2)
    rollouts.drive(rollout.pk)  # two operations queued, none settles

    # 5 projects, 2 at a time: 3 rounds of (100 + 50) s.
    assert rollouts.wave_deadline(rollout) == timedelta(seconds=450)
    Rollout.objects.filter(pk=rollout.pk).update(wave_started_at=rollout.wave_started_at - timedelta(seconds=440))
    rollouts.drive(rollout.pk)
    assert Rollout.objects.get(pk=rollout.pk).state == Rollout.State.RUNNING

    Rollout.objects.filter(pk=rollout.pk).update(wave_started_at=rollout.wave_started_at - timedelta(seconds=460))
    rollouts.drive(rollout.pk)
    rollout.refresh_from_db()
    assert rollout.state == Rollout.State.HALTED
    assert "wave 0 did not settle within" in rollout.reason
