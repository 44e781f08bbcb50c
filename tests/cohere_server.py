"""A local HTTP server that speaks Cohere's v2 rerank API, for tests of the real SDK.

Point ``cohere.ClientV2(base_url=server.url)`` at it. Its "model" scores a document by the
share of the query's words it contains, so rankings are predictable. ``server.script`` is a
list of behaviours consumed one per request (``"429"``, ``"500"``, ``"slow"``); once empty it
answers normally. A ``"slow"`` request is held until :meth:`release` (or leaving the ``with``
block, or ``slow_seconds``) and sets ``slow_answered`` once answered: a client that gave up
returned while that event was still unset. A 429/500 carries ``retry-after-ms: 10`` so the
SDK's retries are quick.
``server.requests`` records every request body it received.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_WORD = re.compile(r"\w+")


def overlap_score(query: str, document: str) -> float:
    """Fraction of the query's distinct words that appear in the document."""
    q = set(_WORD.findall(query.lower()))
    d = set(_WORD.findall(document.lower()))
    return len(q & d) / len(q) if q else 0.0


class CohereRerankServer:
    """Threaded HTTP server on 127.0.0.1 and a free port; use as a context manager."""

    def __init__(self, slow_seconds: float = 10.0) -> None:
        self.script: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.slow_seconds = slow_seconds
        self.slow_answered = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(body)
                    mode = server.script.pop(0) if server.script else "ok"
                if self.path.rstrip("/") != "/v2/rerank":
                    self._send(404, {"message": f"no route {self.path}"})
                elif mode == "429":
                    self._send(429, {"message": "too many requests"}, {"retry-after-ms": "10"})
                elif mode == "500":
                    self._send(500, {"message": "internal error"}, {"retry-after-ms": "10"})
                else:
                    if mode == "slow":
                        server._released.wait(server.slow_seconds)
                    self._send(200, server.answer(body))
                    if mode == "slow":
                        server.slow_answered.set()

            def _send(
                self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout); nothing to answer

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @staticmethod
    def answer(body: dict[str, Any]) -> dict[str, Any]:
        """A v2 rerank response for ``body`` (top_n results, best first)."""
        docs = body["documents"]
        scored = sorted(
            ((overlap_score(body["query"], d), i) for i, d in enumerate(docs)),
            key=lambda pair: (-pair[0], pair[1]),
        )
        top_n = body.get("top_n") or len(docs)
        return {
            "id": "test-rerank",
            "results": [{"index": i, "relevance_score": s} for s, i in scored[:top_n]],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
        }

    def release(self) -> None:
        """Let held ``"slow"`` requests answer now."""
        self._released.set()

    def __enter__(self) -> CohereRerankServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
