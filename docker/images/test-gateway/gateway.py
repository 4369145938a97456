"""berth/test-gateway: answers 200 with a small JSON body on /health (and /), 404 elsewhere.

`berth-gateway --check` asks the running gateway for /health and exits 0 when it answers 200
(the image's HEALTHCHECK).
"""

import json
import os
import signal
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("GATEWAY_PORT", "8000"))


class Handler(BaseHTTPRequestHandler):
    server_version = "berth-test-gateway/1"

    def do_GET(self):
        if self.path.split("?", 1)[0] in ("/", "/health"):
            self._reply(200, {"status": "ok", "service": "berth-test-gateway"})
        else:
            self._reply(404, {"error": "not found", "path": self.path})

    do_HEAD = do_GET

    def _reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format, *args):
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2) as reply:
            sys.exit(0 if reply.status == 200 else 1)
    # As PID 1 the default SIGTERM action is ignored: exit at once so `down` need not wait.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"berth-test-gateway listening on 0.0.0.0:{PORT}", file=sys.stderr, flush=True)
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
