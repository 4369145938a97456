from django.apps import AppConfig, apps
from django.conf import settings
from django.db.models.signals import post_migrate


def ensure_schedules(sender, **kwargs):
    """The reaper, the health refresh, the drift check, the rollout sweep, the port counts
    repair and the backup passes run as django-q2 schedules; keep them present and current."""
    # From the registry: this module loads with the app configs, before any models can.
    Schedule = apps.get_model("django_q", "Schedule")
    wanted = {
        "berth-reaper": ("operations.tasks.reap", settings.BERTH_REAPER_MINUTES),
        "berth-health-refresh": ("operations.tasks.refresh_health", settings.BERTH_HEALTH_REFRESH_MINUTES),
        "berth-drift-check": ("operations.tasks.check_drift", settings.BERTH_DRIFT_CHECK_MINUTES),
        # Rollouts are driven when their operations end; this sweep catches what that misses
        # (an operation the reaper settled, a wave past its deadline).
        "berth-rollouts": ("operations.tasks.drive_rollouts", settings.BERTH_REAPER_MINUTES),
        # Routers follow each operation; this pass repairs a push that failed (operations.routes).
        "berth-routes": ("operations.tasks.push_routes", settings.BERTH_REAPER_MINUTES),
        "berth-login-roles": ("operations.tasks.reap_login_roles", settings.BERTH_REAPER_MINUTES),
        # Old clusters major upgrades kept for a rollback, past BERTH_UPGRADE_KEEP_DAYS.
        "berth-upgrade-discard": ("operations.tasks.discard_kept_clusters", 60),
        # The per-host block counts against the blocks (ports.actions.repair_block_counts).
        "berth-ports-repair": ("operations.tasks.repair_port_counts", settings.BERTH_PORT_REPAIR_MINUTES),
        # Backups (operations.protection): a base backup for each project whose last is older
        # than BERTH_BACKUP_SCHEDULE (so the schedule holds per project, and a missed pass
        # catches up), a restore test for each not verified in BERTH_BACKUP_VERIFY_DAYS, and
        # each runtime's WAL archiving read (the failing warning, the latest restorable point).
        "berth-backups": ("operations.tasks.queue_backups", 5),
        "berth-backup-verify": ("operations.tasks.queue_verifications", 60),
        "berth-backup-archiving": ("operations.tasks.read_archiving", settings.BERTH_BACKUP_CHECK_MINUTES),
        # Removed projects' backups expire past the retention, then their WAL (protection.prune_removed).
        "berth-backup-prune-removed": ("operations.tasks.prune_removed_backups", 60),
    }
    for name, (func, minutes) in wanted.items():
        Schedule.objects.update_or_create(
            name=name, defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1}
        )


class OperationsConfig(AppConfig):
    name = "operations"

    def ready(self):
        post_migrate.connect(ensure_schedules, sender=self)
