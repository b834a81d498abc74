"""What the repository-level tests share: the daemon binary, a TCP relay to a daemon's
Unix socket (for tools that speak only TCP), and a mock Twilio on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

REPO = Path(__file__).resolve().parents[2]
#: The docs' error table lives here (README.md's "Errors" section today; docs/api.md
#: once the API docs move there, with the same table).
ERROR_TABLE_DOC = REPO / "docs" / "api.md"
OPENAPI = REPO / "docs" / "openapi.json"


def otpd_binary() -> str:
    path = os.environ.get("OTPD_BIN") or str(REPO / "target" / "debug" / "otpd")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"no otpd binary at {path}: build it (cargo build) or set OTPD_BIN")
    return path


class Relay:
    """Accepts TCP on 127.0.0.1 and pipes each connection to a Unix socket, byte for
    byte: the HTTP a TCP-only tool sends is exactly what the daemon reads."""

    def __init__(self, unix_path: str) -> None:
        self.unix_path = unix_path
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                tcp, _ = self.server.accept()
            except OSError:
                continue
            unix = socket.socket(socket.AF_UNIX)
            try:
                unix.connect(self.unix_path)
            except OSError:
                tcp.close()
                unix.close()
                continue
            for a, b in ((tcp, unix), (unix, tcp)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # Half-close so the other direction can still finish its answer.
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.server.close()


class MockTwilio:
    """Twilio's Messages API, enough for otpd: it records each message and answers
    as ``mode`` says: "accept" (201), "reject" (400, error 21211) or "fail" (503)."""

    ACCOUNT_SID = "AC" + "0" * 32
    AUTH_TOKEN = "mock-auth-token"

    def __init__(self) -> None:
        self.mode = "accept"
        self.messages: list[dict[str, str]] = []
        mock = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if mock.mode == "reject":
                    self._answer(400, {"code": 21211, "message": "Invalid 'To' Phone Number",
                                       "more_info": "https://www.twilio.com/docs/errors/21211",
                                       "status": 400})
                elif mock.mode == "fail":
                    self._answer(503, {"code": 20503, "message": "Service unavailable", "status": 503})
                else:
                    sid = "SM" + secrets.token_hex(16)
                    mock.messages.append({**form, "sid": sid})
                    self._answer(201, {"sid": sid, "status": "queued"})

            def _answer(self, status: int, body: dict[str, object]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def config(self, **twilio: object) -> dict[str, object]:
        """The daemon's [twilio] section for this mock."""
        return {
            "api_base": self.url,
            "account_sid": self.ACCOUNT_SID,
            "auth_token": self.AUTH_TOKEN,
            "from_number": "+15005550006",
            "timeout": "1s",
            "send_deadline": "1s",
            "retry_backoff": "10ms",
            **twilio,
        }

    def last_code(self, to: str) -> str:
        body = next(m["Body"] for m in reversed(self.messages) if m.get("To") == to)
        return "".join(c for c in body.split("code is ")[1] if c.isdigit())[:6]

    def sign(self, url: str, form: dict[str, str]) -> str:
        """Twilio's X-Twilio-Signature: HMAC-SHA1 of the URL and the sorted parameters."""
        data = url + "".join(k + form[k] for k in sorted(form))
        digest = hmac.new(self.AUTH_TOKEN.encode(), data.encode(), hashlib.sha1).digest()
        return base64.b64encode(digest).decode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
