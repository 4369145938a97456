"""A real HTTP server on loopback standing for a team's webhook endpoint: it checks
`X-Berth-Signature` against the body with the secret it was given, as a receiver should,
answers 401 to a bad signature and 204 to a good one, and keeps what it accepted."""

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.stack import free_port_range


class WebhookReceiver:
    def __init__(self, secret: str, *, status: int = 204, hang: bool = False):
        self.secret, self.status, self.hang = secret, status, hang
        self.accepted: list[dict] = []
        self.refused = 0
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.hang:
                    receiver.release.wait(30)
                    return
                expected = "sha256=" + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
                given = self.headers.get("X-Berth-Signature", "")
                if receiver.secret and not hmac.compare_digest(given, expected):
                    receiver.refused += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                receiver.accepted.append(json.loads(body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port_range(1)), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
