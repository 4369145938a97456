"""The runtime files gateway: what Berth reads from and writes to a project's runtime folder
on its host. `AgentRuntimeFiles` goes through the host's agent; tests put the folders in
memory behind the same methods.

Everything that writes a runtime's files (provisioning, re-sync, conflict resolution, the
rollouts that run re-syncs) goes through `RuntimeFiles.push`, which puts the files and then
checks that the agent holds what was sent: a push whose managed files came back with other
digests fails with `FilesMismatch`, and its caller records nothing.
"""

from collections.abc import Sequence

from django.conf import settings

from agent.api import FileSpec
from hosts import agents
from projects.models import Project
from templating.render import RenderedRuntime


class FilesMismatch(Exception):
    """The agent reports other content than was pushed for some managed files."""

    code = "files"

    def __init__(self, paths: list[str]):
        super().__init__(f"the agent reports other content than was sent for: {', '.join(paths)}")
        self.paths = paths


class RuntimeFiles:
    """A host's runtime folders: read digests and contents, put and remove files.

    Subclasses provide the calls (`digests`, `contents`, `put_files`); `push` is the one way
    files are written and checked."""

    def digests(self, project: Project, paths: list[str]) -> dict[str, str | None]:
        raise NotImplementedError

    def contents(self, project: Project, paths: list[str]) -> dict[str, bytes | None]:
        raise NotImplementedError

    def put_files(
        self,
        project: Project,
        rendered: RenderedRuntime,
        paths: list[str],
        remove: list[str],
        *,
        backup: list[str] = (),
        backup_suffix: str | None = None,
    ) -> dict[str, str]:
        """Write `paths` of `rendered` and remove `remove`; returns the host's digests of what it wrote."""
        raise NotImplementedError

    def push(
        self,
        project: Project,
        rendered: RenderedRuntime,
        paths: Sequence[str],
        remove: Sequence[str] = (),
        *,
        backup: Sequence[str] = (),
        backup_suffix: str | None = None,
    ) -> dict[str, str]:
        """Write `paths` of `rendered` (each of `backup` first copied to `<path>.<backup_suffix>`
        by the agent, in the same request) and remove `remove`, then check that every managed
        file written is what was rendered. Returns the host's digests of the files written.

        Seed files are written only where absent, so the host may rightly hold other content
        there; they are not checked. Raises FilesMismatch naming the managed files that differ.
        """
        pushed = self.put_files(
            project, rendered, list(paths), list(remove), backup=list(backup), backup_suffix=backup_suffix
        )
        managed = [path for path in paths if rendered.policies[path] == "managed"]
        wrong = sorted(path for path in managed if pushed.get(path) != rendered.digests[path])
        if wrong:
            raise FilesMismatch(wrong)
        return pushed


class AgentRuntimeFiles(RuntimeFiles):
    """RuntimeFiles through the project's host agent; every call carries a deadline
    (the agent call deadline, or a shorter one given by an operation with less time left)."""

    def __init__(self, deadline: float | None = None):
        self.deadline = deadline or settings.BERTH_AGENT_CALL_DEADLINE

    def _client(self, project: Project):
        return agents.client_for(project.host, deadline=self.deadline)

    def digests(self, project, paths):
        return self._client(project).digests(project.ref, paths)

    def contents(self, project, paths):
        return self._client(project).contents(project.ref, paths)

    def put_files(self, project, rendered, paths, remove, *, backup=(), backup_suffix=None):
        files = [FileSpec(path, rendered.files[path], rendered.policies[path]) for path in paths]
        # Every secret-bearing file is named, pushed now or not, so the agent tightens old ones too.
        return self._client(project).put_files(
            project.ref,
            files=files,
            user_paths=list(rendered.user_paths),
            remove=remove,
            private_paths=sorted(rendered.private),
            backup=backup,
            backup_suffix=backup_suffix,
        )
