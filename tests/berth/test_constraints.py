"""Constraints the database itself enforces, proven on PostgreSQL with raw writes."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from hosts.models import RuntimeHost
from operations.models import Kind, Operation, State
from ports.models import BlockState, PortBlock
from projects.models import Project
from tests.factories import make_host, make_project

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def test_it_rejects_a_duplicate_ref():
    project = make_project()
    with pytest.raises(IntegrityError), transaction.atomic():
        Project.objects.create(
            ref=project.ref,
            name="copy",
            postgres_major=15,
            template="postgres",
            template_version=project.template_version,
        )


def test_it_rejects_a_ref_of_the_wrong_shape_in_the_database():
    project = make_project()
    with pytest.raises(IntegrityError), transaction.atomic():
        Project.objects.filter(pk=project.pk).update(ref="Bad Ref!")


def test_it_rejects_a_second_unfinished_operation_for_one_project():
    project = make_project()
    Operation.objects.create(project=project, kind=Kind.PROVISION, deadline=timezone.now())
    with pytest.raises(IntegrityError), transaction.atomic():
        Operation.objects.create(project=project, kind=Kind.STOP, state=State.RUNNING, deadline=timezone.now())


def test_it_allows_a_new_operation_once_the_last_finished():
    project = make_project()
    Operation.objects.create(project=project, kind=Kind.PROVISION, state=State.FAILED, deadline=timezone.now())
    Operation.objects.create(project=project, kind=Kind.PROVISION, deadline=timezone.now())
    assert project.operations.count() == 2


@pytest.mark.parametrize("first_port,last_port", [(1023, 1032), (65530, 65539), (30000, 29990)])
def test_it_rejects_an_out_of_range_lease_in_the_database(first_port, last_port):
    host = make_host()
    with pytest.raises(IntegrityError), transaction.atomic():
        # bulk_create skips model validation: only the database stands in the way.
        PortBlock.objects.bulk_create([PortBlock(host=host, first_port=first_port, last_port=last_port)])


def test_it_rejects_a_lease_state_without_a_project():
    host = make_host()
    with pytest.raises(IntegrityError), transaction.atomic():
        PortBlock.objects.create(host=host, first_port=20000, last_port=20009, state=BlockState.LEASED)


def test_it_rejects_a_host_range_outside_valid_ports():
    with pytest.raises(IntegrityError), transaction.atomic():
        make_host(port_range_start=60000, port_range_end=70000)


def test_it_rejects_a_host_range_smaller_than_one_block():
    with pytest.raises(IntegrityError), transaction.atomic():
        make_host(port_range_start=20000, port_range_end=20004, block_size=10)


def test_a_project_ref_never_changes():
    project = make_project()
    project.ref = "otherref123"
    with pytest.raises(Exception, match="never changes"):
        project.save()


def test_it_rejects_a_block_size_of_zero_in_the_database():
    host = make_host(port_range_start=20000, port_range_end=20099, block_size=10)
    with pytest.raises(IntegrityError, match="host_block_size_positive"), transaction.atomic():
        RuntimeHost.objects.filter(pk=host.pk).update(block_size=0)


def test_model_validation_refuses_a_block_size_of_zero():
    host = make_host(port_range_start=20000, port_range_end=20099, block_size=10)
    host.block_size = 0
    with pytest.raises(ValidationError) as refused:
        host.full_clean()
    assert "block_size" in refused.value.message_dict
