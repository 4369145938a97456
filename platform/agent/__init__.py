"""Berth's runtime agent: the only process that touches Docker, files and processes on a runtime host.

It has no access to the control plane's database; the control plane drives it over the
HTTP API in `agent.server` through the typed client in `agent.client`.
"""

AGENT_VERSION = "0.1.0"
API_VERSION = 1
