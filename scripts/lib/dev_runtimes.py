"""`python scripts/lib/dev_runtimes.py stop|start`: scripts/dev stops the local agent's runtimes
(their PostgreSQL servers, or containers) when it ends, and starts them again when it starts.

It reads the agent's own settings (BERTH_AGENT_ROOT, BERTH_AGENT_DRIVER, ...), as the agent would.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "platform"))

from agent.config import ConfigError, load_config  # noqa: E402
from agent.drivers import select_driver  # noqa: E402
from agent.runtimes import Runtimes  # noqa: E402


def main(action: str) -> int:
    try:
        config = load_config()
        runtimes = Runtimes(config.root, select_driver(config), config.deadline_s)
    except ConfigError as error:
        print(f"dev_runtimes: {error}", file=sys.stderr)
        return 2
    done, problems = runtimes.stop_running() if action == "stop" else runtimes.start_noted()
    verb = "stopped" if action == "stop" else "started"
    if done:
        print(f"==> {verb} {len(done)} runtime(s): {', '.join(done)}", flush=True)
    for problem in problems:
        print(f"==> could not {action} {problem}", file=sys.stderr, flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("stop", "start"):
        sys.exit("usage: dev_runtimes.py stop|start")
    sys.exit(main(sys.argv[1]))
