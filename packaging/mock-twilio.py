#!/usr/bin/env python3
"""A tiny Twilio for packaging/test-systemd.sh, on 127.0.0.1 only.

It answers the two calls otpd makes, CreateMessage (POST
/2010-04-01/Accounts/{Sid}/Messages.json: 201 and a message resource) and FetchAccount
(GET /2010-04-01/Accounts/{Sid}.json: 200 and the account), to the one account SID and
auth token it is given; any other credentials get Twilio's 401 (code 20003). Every
request is appended to the record file as a JSON line, so the stage can read what otpd
sent (the code is in the body) and with which credentials. The Rust tests have their
own, fuller mock (tests/common/mock_twilio.rs); this one only has to stand in for
Twilio while the systemd stage drives the installed package.

usage: mock-twilio.py --sid AC... --token TOKEN --port-file FILE --record FILE
"""

import argparse
import base64
import json
import os
import re
import secrets
import sys
from datetime import datetime, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

MESSAGES = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")
ACCOUNT = re.compile(r"^/2010-04-01/Accounts/([^/]+)\.json$")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sid", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *fargs):
            # Requests go to the record file; stderr keeps only the server's own errors.
            pass

        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def authorized(self, sid):
            header = self.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return False
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return False
            return sid == args.sid and user == args.sid and password == args.token

        def record(self, **fields):
            with open(args.record, "a", encoding="utf-8") as out:
                out.write(json.dumps({"method": self.command, "path": self.path, **fields}) + "\n")

        def refuse(self):
            self.answer(401, {
                "code": 20003,
                "message": "Authenticate",
                "more_info": "https://www.twilio.com/docs/errors/20003",
                "status": 401,
            })

        def do_GET(self):
            match = ACCOUNT.match(self.path)
            if not match:
                self.record(answer=404)
                self.answer(404, {"code": 20404, "message": "Not found", "status": 404})
                return
            ok = self.authorized(match.group(1))
            self.record(answer=200 if ok else 401, authorized=ok)
            if not ok:
                self.refuse()
                return
            self.answer(200, {
                "sid": args.sid,
                "friendly_name": "otpd systemd stage",
                "status": "active",
                "type": "Full",
            })

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            match = MESSAGES.match(self.path)
            if not match:
                self.record(answer=404)
                self.answer(404, {"code": 20404, "message": "Not found", "status": 404})
                return
            ok = self.authorized(match.group(1))
            self.record(answer=201 if ok else 401, authorized=ok, form=form)
            if not ok:
                self.refuse()
                return
            now = format_datetime(datetime.now(timezone.utc), usegmt=True)
            sid = "SM" + secrets.token_hex(16)
            self.answer(201, {
                "account_sid": args.sid,
                "api_version": "2010-04-01",
                "body": form.get("Body", ""),
                "date_created": now,
                "date_updated": now,
                "direction": "outbound-api",
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "num_segments": "1",
                "sid": sid,
                "status": "queued",
                "to": form.get("To"),
                "uri": f"/2010-04-01/Accounts/{args.sid}/Messages/{sid}.json",
            })

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(args.port_file + ".tmp", "w", encoding="utf-8") as out:
        out.write(str(server.server_address[1]))
    # Renamed into place: the stage reads the port only once it is whole.
    os.replace(args.port_file + ".tmp", args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
