"""`manage.py devnames`: on a development machine, the database names resolve to the local router.

The Supabase CLI (Go) resolves names from /etc/hosts, which has no wildcards: this writes one
marked block there naming the pooler and `db.<ref>.<domain>` of every live project on the
`local` host, all pointing at the local router's address, and with `--watch` keeps it
current while scripts/dev runs (removing it when stopped). Lines outside the block are never
touched. The file is rewritten in place, not renamed over: in a container /etc/hosts is a
bind mount, which a rename cannot replace. A file it cannot write is reported once per change,
with the lines to add by hand.
"""

import os
import signal
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from hosts.models import RuntimeHost, default_pooler_host
from projects.models import DesiredState, Project

BEGIN = "# >>> berth dev names (scripts/dev keeps this block; do not edit)"
END = "# <<< berth dev names"


def with_block(text: str, lines: list[str]) -> str:
    """`text` with the block replaced by `lines` (removed when there are none)."""
    kept, inside = [], False
    for line in text.splitlines():
        if line == BEGIN:
            inside = True
        elif line == END:
            inside = False
        elif not inside:
            kept.append(line)
    block = [BEGIN, *lines, END] if lines else []
    return "\n".join(kept + block) + "\n"


class Command(BaseCommand):
    help = "Point the local database names (the pooler's, db.<ref>.<domain>) at the local router in a hosts file."

    def add_arguments(self, parser):
        parser.add_argument("--address", required=True, help="the local router's address, e.g. 127.0.0.2")
        parser.add_argument(
            "--hosts-file", default=os.environ.get("BERTH_DEV_HOSTS_FILE", "/etc/hosts"), help="default /etc/hosts"
        )
        parser.add_argument("--host", default="local", help="the runtime host whose projects are named")
        parser.add_argument("--watch", type=float, help="keep the block current, looking every this many seconds")

    def handle(self, *args, address, hosts_file, host, watch, **options):
        path = Path(hosts_file)
        said = None
        if watch is None:
            self.write(path, self.lines(address, host), said)
            return
        # Honcho stops its processes with SIGTERM: leave the file as it was before.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while True:
                said = self.write(path, self.lines(address, host), said)
                time.sleep(watch)
        except (KeyboardInterrupt, SystemExit):
            self.write(path, [], said)

    def lines(self, address: str, host_name: str) -> list[str]:
        host = RuntimeHost.objects.filter(name=host_name).first()
        pooler = host.pooler_address() if host else default_pooler_host()
        refs = (
            Project.objects.live()
            .filter(host__name=host_name)
            .exclude(desired_state=DesiredState.DELETED)
            .order_by("ref")
            .values_list("ref", flat=True)
        )
        return [f"{address} {pooler}", *(f"{address} db.{ref}.{settings.BERTH_DATABASE_DOMAIN}" for ref in refs)]

    def write(self, path: Path, lines: list[str], said: list[str] | None) -> list[str]:
        """Write the block when it changed; returns what the file (or the message) now says."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""
        wanted = with_block(text, lines)
        if wanted == text or lines == said:
            return lines
        try:
            path.write_text(wanted)
        except OSError as error:
            if lines:
                shown = "\n  ".join(lines)
                self.stderr.write(f"devnames: cannot write {path} ({error.strerror}); add these lines:\n  {shown}")
            return lines
        if lines:
            self.stdout.write(f"devnames: {len(lines)} name(s) in {path} point at the local router")
        return lines
