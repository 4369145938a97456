"""The steps of each operation kind, run by a worker that has claimed the operation.

Every step is idempotent (placing a placed project, leasing a leased block, pushing the
same files, bringing up a running runtime all do nothing new), so a task that runs twice,
or a retry after a failure, does no harm. Every wait is bounded by the operation's
deadline; every agent call by the shorter of its own deadline and the time left.
"""

import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from agent import api
from agent.client import AgentError
from backups.models import BackupTrigger, Repository
from hosts import agents
from hosts.models import RuntimeHost
from operations import health, protection, upgrades
from operations.conflicts import resolve_project
from operations.models import KINDS, Kind, Operation, OperationEvent, Outcome, State
from operations.placement import NoHost, place_project, unplace_if_unfit
from operations.resync import ResyncRefused, resync_project
from operations.runtime_files import AgentRuntimeFiles, FilesMismatch
from ports.actions import lease_ports, release_ports
from ports.checkers import checker_for
from ports.errors import PortError
from projects.models import DesiredState, Project, Status
from templating.manifest import manifest_of
from templating.models import TemplateVersion
from templating.render import RenderError, render_project
from templating.versions import UnsupportedPostgresVersion

log = logging.getLogger(__name__)

# Errors a step raises on purpose, each from its own domain, each with the `code` the
# operation fails with (ports, render, resync, files, version, no_host).
REFUSALS = (PortError, RenderError, ResyncRefused, FilesMismatch, UnsupportedPostgresVersion, NoHost)

# Characters of an agent command's output kept on the failure event (the agent sends up to 8 KiB).
OUTPUT_TAIL_KEPT = 4000
# The shortest health round worth starting once the runtime has been probed at least once.
MIN_PROBE_BUDGET_S = 0.5


def with_last_line(message: str, output_tail: str) -> str:
    """The error message with the output's last non-blank line, where the cause usually is."""
    lines = [line.strip() for line in output_tail.splitlines() if line.strip()]
    return f"{message} — {lines[-1][:300]}" if lines else message


@dataclass
class StepFailed(Exception):
    """A step could not finish; the operation fails with this code and the project takes `status`."""

    code: str
    message: str
    status: str | None = None
    # The project's status reason afterwards; by default the message.
    reason: str | None = None
    # What the agent's command printed last: the actual error behind a failed command.
    output_tail: str = ""

    def __str__(self):
        return f"{self.code}: {self.message}"


# Agent refusals of turning archiving on that come before any restart (agent.backups:
# the repository checked, the archive command found, the driver able): nothing was touched.
REFUSED_BEFORE_RESTART = ("invalid", "repository", "unsupported")


class OperationRun:
    def __init__(self, operation: Operation):
        self.operation = operation
        self.project: Project = operation.project
        self.deadline = operation.deadline
        # The typed outcome (operations.models.OUTCOME_FIELDS) the steps found; written when it settles.
        self.outcome: dict = {}

    # --- bookkeeping -----------------------------------------------------------------
    def remaining(self) -> float:
        return (self.deadline - timezone.now()).total_seconds()

    def event(self, step: str, message: str, level: str = OperationEvent.Level.INFO, **data) -> None:
        OperationEvent.objects.create(operation=self.operation, step=step, level=level, message=message, data=data)
        self.heartbeat()

    def heartbeat(self) -> None:
        """This worker still works on it: the reaper ends a running operation whose worker is silent."""
        Operation.objects.filter(pk=self.operation.pk, state=State.RUNNING).update(heartbeat_at=timezone.now())

    def still_owned(self) -> bool:
        """False once the reaper has settled this operation; the worker then stops working on it."""
        return Operation.objects.filter(pk=self.operation.pk, state=State.RUNNING).exists()

    def ensure_owned(self) -> None:
        """Stop working on an operation that was cancelled, marked failed or reaped: its verdict
        would be dropped, and new work on the host would outlive the cleanup of it."""
        if not self.still_owned():
            raise StepFailed("lost", "the operation was ended elsewhere (cancelled, marked failed or timed out)")

    def call_budget(self, longest: float | None = None) -> float:
        """The deadline of one agent call: its own limit, never past the operation's deadline."""
        budget = min(longest or settings.BERTH_AGENT_CALL_DEADLINE, self.remaining())
        if budget <= 0:
            raise StepFailed("deadline", "the operation ran out of time")
        return budget

    def agent(self, longest: float | None = None):
        """A client for the project's host whose calls end before the operation's deadline.

        Only while this worker still owns the operation: once it was cancelled, marked failed
        or reaped, no new agent command starts (and the agent refuses one that slips through
        after a cancel, since every command names its operation)."""
        self.ensure_owned()
        return agents.client_for(self.project.host, deadline=self.call_budget(longest), operation=self.operation)

    # --- entry -------------------------------------------------------------------------
    def run(self) -> None:
        steps = STEPS[self.operation.kind]
        try:
            status, reason = steps(self)
        except StepFailed as failure:
            self.fail(failure)
        except AgentError as error:
            self.fail(
                StepFailed(
                    f"agent_{error.code}",
                    with_last_line(str(error), error.output_tail),
                    self.status_after_failure(),
                    output_tail=error.output_tail[-OUTPUT_TAIL_KEPT:],
                )
            )
        except REFUSALS as error:
            self.fail(StepFailed(error.code, str(error), self.status_after_failure()))
        except Exception as error:  # a bug must still end the operation, not leave it running
            log.exception("operation %s crashed", self.operation.pk)
            self.fail(StepFailed("internal", f"{type(error).__name__}: {error}", self.status_after_failure()))
        else:
            self.operation.settle(State.SUCCEEDED, status=status, reason=reason, **self.outcome)

    def fail(self, failure: StepFailed) -> None:
        state = State.TIMED_OUT if failure.code == "deadline" else State.FAILED
        status = failure.status or self.status_after_failure()
        self.operation.settle(
            state,
            status=status,
            reason=failure.message if failure.reason is None else failure.reason,
            error_code=failure.code,
            error_message=failure.message,
            data={"output_tail": failure.output_tail} if failure.output_tail else None,
            **self.outcome,
        )

    def status_before_claim(self) -> tuple[str, str]:
        """The project's (status, reason) when this operation was claimed."""
        return self.operation.status_before or Status.UNKNOWN, self.operation.status_reason_before

    def status_after_failure(self) -> str | None:
        """Where a failure leaves the project; None for a kind that moves no status."""
        rules = KINDS[self.operation.kind]
        return None if rules.running is None else rules.failed

    # --- kinds -------------------------------------------------------------------------
    def run_provision(self):
        self.place()
        self.lease()
        self.push_files()
        if self.operation.params.get("retry_of"):
            # A retry starts from a clean state: whatever the failed attempt left running stops first.
            self.event("clean", "Stopping what the failed attempt left running")
            self.agent().down(self.project.ref)
        self.bring_up()
        self.wait_healthy(on_timeout=self.stop_after_failed_provision)
        self.set_up_archiving(required=False)
        return Status.ACTIVE_HEALTHY, ""

    def run_start(self):
        self.bring_up()
        self.wait_healthy()
        return Status.ACTIVE_HEALTHY, ""

    def run_restart(self):
        self.restart("Restarting the runtime")
        self.wait_healthy()
        return Status.ACTIVE_HEALTHY, ""

    def run_stop(self):
        self.event("stop", "Stopping the runtime")
        self.agent(longest=self.remaining()).down(self.project.ref, deadline_s=self.command_budget())
        return Status.INACTIVE, ""

    def run_delete(self):
        if self.project.host_id is not None:
            purge = bool(self.operation.params.get("purge_data"))
            self.event("delete", "Stopping and removing the runtime" + (" and its data" if purge else ""))
            self.agent(longest=self.remaining()).delete(self.project.ref, purge_data=purge)
        # The request already set the desired state to deleted.
        release_ports(self.project)
        self.event("release", "Released the port block into its cool-down")
        return Status.REMOVED, ""

    def run_resync(self):
        """Re-sync to `params.template_version` (else the latest), or with `params.resolve` resolve
        its conflicts (operations.conflicts). `params.restart`: "changed" (default: restart a
        running project whose files changed), "always", or "never" (files only)."""
        params = self.operation.params
        target_pk = params.get("template_version")
        if target_pk:
            target = TemplateVersion.objects.get(pk=target_pk)
        else:
            target = TemplateVersion.objects.latest_of(self.project.template)
        label = f"operation {self.operation.pk}"
        files = AgentRuntimeFiles(deadline=self.call_budget())
        if params.get("resolve"):
            resolution = resolve_project(self.project, target, params["resolve"], files, label=label)
            result, message, changed = Outcome.RESOLVED, resolution.message, resolution.changed
        else:
            resynced = resync_project(self.project, target, files, label=label)
            if resynced.status == Outcome.CONFLICTED:
                paths = [action.path for action in resynced.plan.conflicts] if resynced.plan else []
                self.event("conflict", resynced.message, level=OperationEvent.Level.WARNING, paths=paths)
                self.outcome.update(result=Outcome.CONFLICTED, conflict_paths=paths)
                # Nothing was written and nothing restarted: the project is as it was before the claim.
                status, reason = self.status_before_claim()
                raise StepFailed("conflict", f"re-sync to {target} stopped: {resynced.message}", status, reason)
            result, message = resynced.status, resynced.message
            changed = resynced.plan is not None and resynced.plan.changes_files
        message = f"{self.project.template_version}: {message}"
        self.event("resync", message, result=result, changed=changed)
        self.outcome.update(result=result, result_message=message)
        if self.project.desired_state != DesiredState.RUNNING:
            return Status.INACTIVE, ""
        restart = params.get("restart", "changed")
        if restart == "never":
            return self.status_before_claim()
        if restart == "always" or changed:
            self.restart("Restarting so the new files take effect")
        self.wait_healthy()
        return Status.ACTIVE_HEALTHY, ""

    def run_upgrade(self):
        """To `params.target_major` (operations.upgrades, agent.drivers.upgrade): a backup
        point, the agent's check, the new cluster built beside the serving one and filled,
        the switch-over, the new major recorded, its files pushed, healthy. Until the switch a
        failure undoes what was built; after it, the old cluster is brought back. Either way
        the old major serves again, and the failure says why."""
        target, source = self.operation.params["target_major"], self.project.postgres_major
        ref = self.project.ref
        try:
            self.backup_point()
            check = self.agent().upgrade_check(ref, target)
            if check.blockers or not check.methods:
                refusal = "; ".join(blocker.message for blocker in check.blockers) or "no method applies"
                raise StepFailed("upgrade_refused", f"PostgreSQL {target}: {refusal}", self.status_before_claim()[0])
            method = check.methods[0]
            why = f" ({check.unusable['logical']})" if method != "logical" and "logical" in check.unusable else ""
            self.event("check", f"PostgreSQL {source} to {target} by {method}{why}", method=method)
            self.agent(longest=self.remaining()).upgrade_prepare(ref, target, method, deadline_s=self.command_budget())
            self.event("prepare", f"The PostgreSQL {target} cluster is built beside the serving one")
            self.wait_copied()
            switched = self.agent(longest=self.remaining()).upgrade_step(
                ref, "switch", deadline_s=self.command_budget()
            )
        except (StepFailed, AgentError) as failure:
            self.abort_upgrade()
            raise self.kept_old_major(failure, source) from None
        downtime = switched.downtime_s or 0.0
        message = f"PostgreSQL {target} serves; writes were stopped for {downtime:.2f} s"
        self.event("switch", message, downtime_s=downtime)
        self.mark_restarted()  # on another cluster: a rollout's gate holds it to health
        self.outcome.update(result=Outcome.UPDATED, result_message=message)
        try:
            upgrades.record_upgraded(self.project, target, source, operation=self.operation)
            self.push_files()
            self.wait_healthy()
        except (StepFailed, AgentError) as failure:
            self.back_to(source, failure)
        return Status.ACTIVE_HEALTHY, ""

    def run_upgrade_rollback(self):
        """Back to the old major the last upgrade kept; writes made since on the new one are lost."""
        previous = self.project.previous_postgres_major
        if previous is None:
            raise StepFailed("upgrade_refused", "no earlier major is kept", self.status_before_claim()[0])
        self.event("rollback", f"Returning to the kept PostgreSQL {previous} cluster")
        self.mark_restarted()
        self.agent(longest=self.remaining()).upgrade_step(
            self.project.ref, "rollback", deadline_s=self.command_budget()
        )
        self.outcome.update(result=Outcome.UPDATED, result_message=f"PostgreSQL {previous} serves again")
        upgrades.record_rolled_back(self.project, previous, operation=self.operation)
        self.push_files()
        self.wait_healthy()
        return Status.ACTIVE_HEALTHY, ""

    def run_upgrade_discard(self):
        """Remove the old cluster the last upgrade kept."""
        self.event("discard", f"Removing the kept PostgreSQL {self.project.previous_postgres_major} cluster")
        self.agent().upgrade_step(self.project.ref, "discard")
        major = self.project.postgres_major
        upgrades.record_discarded(self.project, operation=self.operation)
        self.outcome.update(result=Outcome.UPDATED, result_message=f"PostgreSQL {major} alone is kept")
        return self.status_before_claim()

    # --- backups (operations.protection, agent.backups) ------------------------------
    def run_protect(self):
        """Turn WAL archiving on into the project's repository (a running server restarts);
        its first base backup follows (the backup pass, protection.queue_due_backups)."""
        self.set_up_archiving(required=True)
        if self.project.desired_state != DesiredState.RUNNING:
            return self.status_before_claim()
        self.wait_healthy()
        return Status.ACTIVE_HEALTHY, ""

    def run_backup(self):
        """A base backup now, then pruning past BERTH_BACKUP_RETENTION_DAYS. The runtime serves
        throughout and its status is left alone; a failure is the protection's to show."""
        trigger = self.operation.params.get("trigger", BackupTrigger.MANUAL)
        backup = self.base_backup(trigger)
        self.prune()
        self.outcome.update(result_message=f"base backup {backup.label}, {backup.size_bytes or 0} bytes")
        return None, ""

    def backup_point(self) -> None:
        """An upgrade's first step: a base backup of the old major before anything moves (its
        failure stops the upgrade). A project not protected has none, and the event says so."""
        found = protection.protection_of(self.project)
        if found is None or not found.enabled or found.configured_at is None:
            self.event("backup", "No backup point: the project is not protected (`manage.py backups protect`)")
            return
        self.base_backup(BackupTrigger.UPGRADE)

    def set_up_archiving(self, *, required: bool) -> None:
        """Archive the project's WAL into its host's repository. After a provisioning or a
        clone (`required` False) a failure leaves the project serving and its protection
        saying why; a protect operation fails with it."""
        found = protection.protection_of(self.project)
        if found is None or not found.enabled:
            if required:
                raise StepFailed("not_protected", "the project's protection is off", self.status_before_claim()[0])
            return
        repository = protection.repository_for(self.project)
        try:
            reply = self.agent(longest=self.remaining()).backup_archiving(
                self.project.ref,
                protection.agent_repository(repository),
                settings.BERTH_WAL_ARCHIVE_TIMEOUT,
                deadline_s=self.command_budget(),
            )
        except AgentError as error:
            protection.record_setup_failed(self.project, str(error))
            self.event("archiving", f"WAL archiving not turned on: {error}", level=OperationEvent.Level.WARNING)
            if not required:
                return
            if error.code in REFUSED_BEFORE_RESTART:
                # The agent refused before it touched the runtime: the project is as it was.
                status, reason = self.status_before_claim()
                raise StepFailed(f"agent_{error.code}", str(error), status, reason) from None
            raise
        protection.record_configured(self.project, repository, operation=self.operation)
        restarted = " (the server restarted to turn it on)" if reply.restarted else ""
        self.event("archiving", f"WAL archived into {repository.location().display}{restarted}")
        if reply.restarted:
            self.mark_restarted()
            self.wait_healthy()

    def base_backup(self, trigger: str):
        """One base backup into the project's repository, recorded; raises StepFailed (the
        project's status untouched) when it fails."""
        backup = protection.begin_backup(self.project, operation=self.operation, trigger=trigger)
        spec = protection.agent_repository(backup.repository)
        self.event("backup", f"Base backup into {backup.repository.location().display}", backup=backup.pk)
        try:
            self.agent().backup_start(self.project.ref, spec, job_s=self.job_budget())
            job = self.wait_job("base backup")
        except (StepFailed, AgentError) as failure:
            message = (
                failure.message
                if isinstance(failure, StepFailed)
                else with_last_line(str(failure), failure.output_tail)
            )
            protection.record_backup_failed(backup, message)
            code = failure.code if isinstance(failure, StepFailed) else f"agent_{failure.code}"
            raise StepFailed(code, f"the base backup failed: {message}", self.status_before_claim()[0]) from None
        info = job.backup
        protection.record_backup_done(
            backup,
            label=info.id if info else "",
            size_bytes=info.bytes if info else None,
            started_at=protection.moment(info.started_unix if info else job.started_unix),
            finished_at=protection.moment(info.finished_unix if info else job.finished_unix),
            consistent_at=protection.moment(info.finished_unix if info else job.finished_unix),
        )
        backup.refresh_from_db()
        self.event("backup", f"Base backup {backup.label} done: {backup.size_bytes or 0} bytes", backup=backup.pk)
        return backup

    def prune(self) -> None:
        """Remove base backups past the retention (the newest always stays) and the WAL only
        they needed; then the window is the repository's. A failure here is a warning: the
        backup was taken."""
        found = protection.protection_of(self.project)
        spec = protection.agent_repository(found.repository)
        keep_since = timezone.now().timestamp() - settings.BERTH_BACKUP_RETENTION_DAYS * 86400
        try:
            pruned = self.agent().backup_prune(spec, self.project.ref, keep_since, deadline_s=self.call_budget())
            catalog = self.agent().backup_catalog(spec, self.project.ref, deadline_s=self.call_budget())
        except AgentError as error:
            self.event("prune", f"Could not prune or read the repository: {error}", level=OperationEvent.Level.WARNING)
            return
        protection.record_catalog(self.project, catalog, pruned=pruned.removed_backups)
        if pruned.removed_backups:
            self.event("prune", f"Removed {len(pruned.removed_backups)} base backups past the retention")

    def run_restore(self):
        """In place, to `params.target_unix` (None: the latest archived point). The agent builds
        the restored cluster beside the serving one and swaps it in once it serves; anything
        that fails before puts the old data back. With `params.host` (the old host was lost),
        the project moves there first and is restored from its repository."""
        params = self.operation.params
        found = protection.protection_of(self.project)
        spec = protection.agent_repository(found.repository)
        host = None
        if params.get("host"):
            host = self.move_to_host(params["host"])
        self.event("restore", f"Restoring to {params.get('target', 'the latest archived point')}")
        try:
            self.agent().restore_start(
                self.project.ref, spec, target_unix=params.get("target_unix"), job_s=self.job_budget()
            )
            job = self.wait_job("restore")
        except (StepFailed, AgentError) as failure:
            raise self.kept_old_data(failure) from None
        self.mark_restarted()
        restored_to = protection.moment(job.restored_to_unix)
        point = f"{restored_to:%Y-%m-%d %H:%M:%S} UTC" if restored_to else params.get("target", "latest")
        protection.record_restored(self.project, point, operation=self.operation, host=host)
        self.event("restore", f"Restored to {point}; the old data is gone", timeline=job.timeline)
        self.outcome.update(result=Outcome.UPDATED, result_message=f"restored to {point}")
        if host is not None:
            self.bring_up()
            self.set_up_archiving(required=False)
        self.wait_healthy()
        return Status.ACTIVE_HEALTHY, ""

    def move_to_host(self, host_id: int):
        """A project whose host was lost, onto `host_id`: its old block released, a block leased
        there, its files pushed; the restore then fills its empty runtime."""
        new_host = RuntimeHost.objects.get(pk=host_id)
        release_ports(self.project)
        Project.objects.filter(pk=self.project.pk).update(host=new_host)
        self.project.host = new_host
        self.event("place", f"Moving to host {new_host.name}", host=new_host.name)
        self.lease()
        self.push_files()
        return new_host

    def kept_old_data(self, failure: "StepFailed | AgentError") -> StepFailed:
        """A restore that did not finish: the agent put the old data back (a job of ours still
        running is cancelled first, which does the same)."""
        self.cancel_job()
        message = (
            failure.message if isinstance(failure, StepFailed) else with_last_line(str(failure), failure.output_tail)
        )
        code = failure.code if isinstance(failure, StepFailed) else f"agent_{failure.code}"
        status, _ = self.status_before_claim()
        reason = f"the restore stopped and the project keeps its data as before: {message}"
        return StepFailed(code, f"the restore failed: {message}", status, reason)

    def run_clone(self):
        """A new project from another's backups (its latest point or `params.target_unix`): placed,
        leased and given its files like a provisioning, its empty runtime filled from the
        source's repository, then up, healthy and archiving into its own."""
        params = self.operation.params
        source_repository = Repository.objects.get(pk=params["repository"])
        self.place()
        self.lease()
        self.push_files()
        self.event("restore", f"Restoring {params['source_ref']} as of {params['target']}")
        self.agent().restore_start(
            self.project.ref,
            protection.agent_repository(source_repository),
            source_ref=params["source_ref"],
            target_unix=params.get("target_unix"),
            job_s=self.job_budget(),
        )
        job = self.wait_job("restore")
        restored_to = protection.moment(job.restored_to_unix)
        point = f"{restored_to:%Y-%m-%d %H:%M:%S} UTC" if restored_to else params["target"]
        self.outcome.update(result=Outcome.UPDATED, result_message=f"cloned from {params['source_ref']} as of {point}")
        self.bring_up()
        self.wait_healthy(on_timeout=self.stop_after_failed_provision)
        self.set_up_archiving(required=False)
        return Status.ACTIVE_HEALTHY, ""

    def run_verify(self):
        """A restore test: the latest point restored into a scratch cluster on the project's
        host, every database checked, the scratch cluster dropped; the runtime is untouched."""
        found = protection.protection_of(self.project)
        spec = protection.agent_repository(found.repository)
        try:
            self.agent().verify_start(self.project.ref, spec, job_s=self.job_budget())
            job = self.wait_job("restore test")
        except (StepFailed, AgentError) as failure:
            self.cancel_job()
            message = (
                failure.message
                if isinstance(failure, StepFailed)
                else with_last_line(str(failure), failure.output_tail)
            )
            protection.record_verified(self.project, ok=False, message=message)
            code = failure.code if isinstance(failure, StepFailed) else f"agent_{failure.code}"
            raise StepFailed(code, f"the restore test failed: {message}", None) from None
        restored_to = protection.moment(job.restored_to_unix)
        point = f"{restored_to:%Y-%m-%d %H:%M:%S} UTC" if restored_to else "its latest point"
        message = f"restored to {point}; {job.databases or 0} databases answered"
        protection.record_verified(self.project, ok=True, message=message)
        self.outcome.update(result_message=message)
        return None, ""

    def job_budget(self) -> float:
        """How long an agent job may run: what is left, less the polls and the cleanup after it."""
        budget = self.remaining() - settings.BERTH_OPERATION_CLEANUP_RESERVE - settings.BERTH_AGENT_CALL_DEADLINE
        if budget <= 0:
            raise StepFailed("deadline", "the operation ran out of time")
        return min(budget, api.BACKUP_JOB_MAX_S)

    def wait_job(self, what: str):
        """Poll the agent's job of this operation until it ends, with backoff, within the deadline."""
        delay, polls, phase = settings.BERTH_HEALTH_POLL_INITIAL, 0, None
        while True:
            job = self.agent().backup_job(self.project.ref)
            polls += 1
            if job.operation not in (None, str(self.operation.pk)):
                raise StepFailed("lost", f"the agent's {what} belongs to operation {job.operation}, not this one")
            if job.state == "succeeded":
                return job
            if job.state == "none":
                raise StepFailed("lost", f"the agent has no {what} (it lost the job record)")
            if job.state == "failed":
                error = job.error
                output = (error.output_tail or "") if error else ""
                message = with_last_line(error.message if error else f"the {what} failed", output)
                failure = StepFailed(error.code if error else "failed", message, output_tail=output[-OUTPUT_TAIL_KEPT:])
                raise failure
            if job.phase != phase or polls % 10 == 0:
                self.event("job", f"{what.capitalize()}: {job.phase or job.state}", phase=job.phase)
                phase = job.phase
            else:
                self.heartbeat()
            if self.remaining() - delay < settings.BERTH_OPERATION_CLEANUP_RESERVE:
                raise StepFailed("deadline", f"the {what} did not finish before the operation's deadline")
            time.sleep(delay)
            delay = min(delay * 2, settings.BERTH_HEALTH_POLL_MAX)

    def cancel_job(self) -> None:
        """Stop this operation's job on the agent (a restore puts the old data back)."""
        try:
            client = agents.client_for(self.project.host, deadline=settings.BERTH_AGENT_CALL_DEADLINE)
            client.cancel(self.project.ref, str(self.operation.pk))
        except AgentError as error:
            self.event("cancel", f"Could not stop the agent's job: {error}", level=OperationEvent.Level.WARNING)

    def wait_copied(self) -> None:
        """Poll the agent until the new cluster holds a copy of every table (logical: then it
        streams), with backoff, within the deadline less what the switch and an abort need."""
        delay, polls, last = settings.BERTH_HEALTH_POLL_INITIAL, 0, None
        while True:
            state = self.agent().upgrade_state(self.project.ref)
            polls += 1
            if state.phase == "ready":
                self.event("copied", "The new cluster is level with the serving one")
                return
            if state.phase not in ("copying", "preparing"):
                raise StepFailed("upgrade_failed", f"the new cluster is {state.phase}: {state.detail or ''}".strip())
            progress = (state.tables_ready, state.tables_total)
            if progress != last or polls % 10 == 0:
                self.event("copy", f"Copying: {state.tables_ready or 0} of {state.tables_total or 0} tables ready")
                last = progress
            if self.remaining() - delay < settings.BERTH_OPERATION_CLEANUP_RESERVE + settings.BERTH_AGENT_CALL_DEADLINE:
                raise StepFailed("deadline", "the copy was not done before the operation's deadline")
            time.sleep(delay)
            delay = min(delay * 2, settings.BERTH_HEALTH_POLL_MAX)

    def abort_upgrade(self) -> None:
        """Undo an upgrade that did not switch (the agent drops the new cluster and what the
        old one held for it); an operation ended elsewhere is left to its cleanup."""
        if not self.still_owned():
            return
        try:
            client = agents.client_for(self.project.host, deadline=settings.BERTH_AGENT_CALL_DEADLINE)
            client.upgrade_step(self.project.ref, "abort")
            self.event("abort", "The new cluster was removed; the old major serves", level=OperationEvent.Level.WARNING)
        except AgentError as error:
            self.event("abort", f"Could not remove the new cluster: {error}", level=OperationEvent.Level.WARNING)

    def kept_old_major(self, failure: "StepFailed | AgentError", source: int) -> StepFailed:
        """An upgrade's failure before its switch, as the operation's: the project keeps the
        status it had, and its reason says the old major serves."""
        if isinstance(failure, AgentError):
            tail = failure.output_tail[-OUTPUT_TAIL_KEPT:]
            failure = StepFailed(f"agent_{failure.code}", with_last_line(str(failure), failure.output_tail), None)
            failure.output_tail = tail
        status, _ = self.status_before_claim()
        reason = f"the upgrade stopped and PostgreSQL {source} serves as before: {failure.message}"
        return StepFailed(failure.code, failure.message, failure.status or status, reason, failure.output_tail)

    def back_to(self, source: int, failure: "StepFailed | AgentError") -> None:
        """After the switch the new major did not come up as it should: the kept old cluster
        serves again, with its files, and the operation fails saying why."""
        self.event(
            "rollback",
            f"PostgreSQL {self.project.postgres_major} failed after the switch; going back to {source}",
            level=OperationEvent.Level.WARNING,
        )
        client = agents.client_for(self.project.host, deadline=self.call_budget(longest=self.remaining()))
        client.upgrade_step(self.project.ref, "rollback", deadline_s=self.command_budget())
        upgrades.record_rolled_back(self.project, source, operation=self.operation)
        self.push_files()
        message = failure.message if isinstance(failure, StepFailed) else str(failure)
        raise StepFailed(
            "upgrade_failed",
            f"rolled back to PostgreSQL {source}: {message}",
            Status.UNKNOWN,
            reason=f"the upgrade failed after the switch and PostgreSQL {source} serves again: {message}",
        )

    # --- steps -------------------------------------------------------------------------
    def command_budget(self) -> float:
        """The deadline the agent enforces on a lifecycle command: what is left, less a margin to hear back."""
        budget = min(settings.BERTH_OPERATION_DEADLINE, self.remaining() - 2)
        if budget <= 0:
            raise StepFailed("deadline", "the operation ran out of time")
        return budget

    def place(self) -> None:
        if unplace_if_unfit(self.project):
            self.event("place", "The host's port blocks cannot hold this template's ports; placing again")
        if self.project.host_id is None:
            # Placement bounds every agent call it makes by this budget in total.
            host = place_project(self.project, deadline=self.remaining())
            self.project.host = host
            self.event("place", f"Placed on host {host.name}", host=host.name)
        else:
            self.event("place", f"On host {self.project.host.name}", host=self.project.host.name)

    def lease(self) -> None:
        manifest = manifest_of(self.project.template_version)
        block = lease_ports(self.project, manifest.slots_needed, checker=checker_for(self.project.host))
        self.event("lease", f"Ports {block.first_port}-{block.last_port}", first=block.first_port, last=block.last_port)

    def push_files(self) -> None:
        rendered = render_project(self.project, self.project.template_version)
        AgentRuntimeFiles(deadline=self.call_budget()).push(self.project, rendered, sorted(rendered.files))
        Project.objects.filter(pk=self.project.pk).update(file_digests=rendered.managed_digests)
        self.project.file_digests = rendered.managed_digests
        self.event("files", f"Pushed {len(rendered.files)} files of {self.project.template_version}")

    def restart(self, message: str) -> None:
        """Restart the runtime, and record that this operation did (a rollout's gate holds it to health)."""
        self.event("restart", message)
        self.mark_restarted()
        self.agent(longest=self.remaining()).restart(self.project.ref, deadline_s=self.command_budget())

    def mark_restarted(self) -> None:
        """Record that this operation restarted the runtime (a rollout's gate holds it to health)."""
        Operation.objects.filter(pk=self.operation.pk, state=State.RUNNING).update(restarted=True)
        self.operation.restarted = True

    def bring_up(self) -> None:
        self.event("up", "Bringing the runtime up")
        result = self.agent(longest=self.remaining()).up(self.project.ref, deadline_s=self.command_budget())
        self.event("up", f"Runtime is {result.state}", state=result.state)

    def stop_after_failed_provision(self) -> None:
        """Provisioning that never became healthy leaves the runtime stopped, its data and ports kept."""
        self.event("stop", "Stopping the runtime that never became healthy", level=OperationEvent.Level.WARNING)
        self.agent().down(self.project.ref)

    def wait_healthy(self, on_timeout=None) -> None:
        """Poll the template's probes through the agent until all pass, with backoff, within the
        deadline, and for BERTH_OPERATION_DEADLINE at the most: a backup kind's deadline is hours
        away, but a runtime that stays unhealthy that long after its start never will be healthy."""
        reserve = settings.BERTH_OPERATION_CLEANUP_RESERVE
        delay = settings.BERTH_HEALTH_POLL_INITIAL
        attempt = 0
        give_up = time.monotonic() + settings.BERTH_OPERATION_DEADLINE

        def left() -> float:
            return min(self.remaining(), give_up - time.monotonic())

        while True:
            attempt += 1
            budget = left() - reserve
            # A sliver of time left after the backoff sleep would end the wait in an agent
            # timeout instead of the cleanup that follows an unhealthy runtime.
            if budget < MIN_PROBE_BUDGET_S:
                if attempt > 1:
                    break
                # Never judge a runtime unhealthy unprobed: the first probe may use half of what is left.
                budget = left() / 2
                if budget <= 0:
                    raise StepFailed("deadline", "the operation ran out of time")
            self.ensure_owned()
            outcome = health.probe_project(self.project, deadline=min(settings.BERTH_AGENT_CALL_DEADLINE, budget))
            if outcome.misconfigured:
                # A configuration error is not a sick stack: report it, tear nothing down.
                raise StepFailed("probe_misconfigured", outcome.summary, Status.UNKNOWN)
            if outcome.healthy:
                self.event("health", "All probes pass", results=outcome.as_data())
                return
            if attempt == 1 or attempt % 5 == 0:
                self.event("health", f"Waiting for probes: {outcome.summary}", results=outcome.as_data())
            time.sleep(max(0.0, min(delay, left() - reserve)))
            delay = min(delay * 2, settings.BERTH_HEALTH_POLL_MAX)
        if on_timeout is not None:
            on_timeout()
            raise StepFailed("unhealthy", "the runtime never became healthy before the deadline", Status.INIT_FAILED)
        raise StepFailed("unhealthy", "the runtime did not become healthy before the deadline", Status.ACTIVE_UNHEALTHY)


# What a worker runs for each kind of operation.
STEPS = {
    Kind.PROVISION: OperationRun.run_provision,
    Kind.START: OperationRun.run_start,
    Kind.RESTART: OperationRun.run_restart,
    Kind.STOP: OperationRun.run_stop,
    Kind.DELETE: OperationRun.run_delete,
    Kind.RESYNC: OperationRun.run_resync,
    Kind.UPGRADE: OperationRun.run_upgrade,
    Kind.UPGRADE_ROLLBACK: OperationRun.run_upgrade_rollback,
    Kind.UPGRADE_DISCARD: OperationRun.run_upgrade_discard,
    Kind.PROTECT: OperationRun.run_protect,
    Kind.BACKUP: OperationRun.run_backup,
    Kind.RESTORE: OperationRun.run_restore,
    Kind.CLONE: OperationRun.run_clone,
    Kind.VERIFY: OperationRun.run_verify,
}
