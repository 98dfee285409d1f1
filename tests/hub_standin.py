"""A local HTTP server in the Hugging Face Hub's place (``HF_ENDPOINT``), for tests.

It records every request and answers by repository name: ``<owner>/present``: 200 with an ETag
and a commit (every file is there); ``<owner>/down``: 500 (the hub is down); ``<owner>/hangs``:
no answer until ``close``; anything else: 404 Repository Not Found (a wrong id).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StandinHub:
    """The hub at ``url``; ``requests`` holds (method, path) of what it was asked."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self._release = threading.Event()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                hub.requests.append((self.command, self.path))
                if "/hangs/" in self.path:
                    hub._release.wait(60)
                    return
                if "/present/" in self.path:
                    self.send_response(200)
                    self.send_header("ETag", '"abc"')
                    self.send_header("X-Repo-Commit", "0" * 40)
                elif "/down/" in self.path:
                    self.send_response(500)
                else:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = _answer

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def paths(self) -> list[str]:
        return [path for _, path in self.requests]

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
