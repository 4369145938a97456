"""Starts the agent: `python platform/agent`, or `python -m agent` with platform/ on sys.path.

Installed (`pip install .`), the `berth-agent` command runs the same `agent.server.main`.
"""

import sys
from pathlib import Path

_AGENT_DIR = Path(__file__).resolve().parent

# Run as a folder, Python puts platform/agent itself first on sys.path, where our module
# names (config, commands, ...) could shadow others; platform/ is the source root instead.
if sys.path and Path(sys.path[0] or ".").resolve() == _AGENT_DIR:
    sys.path[0] = str(_AGENT_DIR.parent)

from agent.server import main  # noqa: E402  (needs the path fixed above)

if __name__ == "__main__":
    sys.exit(main())
