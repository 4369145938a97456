"""A host's range may change only if every leased block stays inside it."""

from django.db.models.signals import pre_save
from django.dispatch import receiver

from hosts.models import RuntimeHost
from ports.errors import RangeConflict
from ports.models import PortBlock


def check_range_keeps_leases(host: RuntimeHost) -> None:
    """Raise RangeConflict when the host's (unsaved) range would leave a leased block outside it."""
    stranded = PortBlock.objects.stranded(host).select_related("project").first()
    if stranded is not None:
        raise RangeConflict(
            f"Host {host.name}: the range {host.port_range_start}-{host.port_range_end} would leave "
            f"ports {stranded.first_port}-{stranded.last_port} of project {stranded.project.ref} outside it; "
            "release such leases first."
        )


@receiver(pre_save, sender=RuntimeHost, dispatch_uid="ports.refuse_stranding_leases")
def refuse_stranding_leases(sender, instance: RuntimeHost, raw: bool, **kwargs):
    if raw or instance.pk is None:
        return
    # Lock the host row before looking: a lease reads the range under a share lock, so none
    # can claim against the old range between this check and the save. RuntimeHost.save
    # runs in a transaction, so the lock lasts until the new range is written.
    list(RuntimeHost.objects.select_for_update().filter(pk=instance.pk).values_list("pk"))
    check_range_keeps_leases(instance)
