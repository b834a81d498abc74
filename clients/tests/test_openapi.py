"""docs/openapi.json against the real daemon.

1. schemathesis generates requests from the document for every operation and sends
   them through a TCP relay to the daemon's socket; any 5xx, any status, header,
   content type or body the document does not describe fails.
2. Scenarios then drive the answers no random request reaches (a Twilio that refuses
   or fails, the cost guard, a locked or full store, an allow-list, slow bodies, ...)
   and assert each status and code; every answer is validated against the document
   the same way.
3. Every (operation, status) and every error code the document names must have been
   seen in 1 or 2, except the few listed in NOT_PRODUCED with the reason.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from datetime import timedelta
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

from otpd.testing import DevDaemon
from support import OPENAPI, MockTwilio, Relay, otpd_binary

DOC: dict[str, Any] = json.loads(OPENAPI.read_text(encoding="utf-8"))
schema = schemathesis.openapi.from_dict(DOC)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])

CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# (path template, METHOD, status, code or "" for a success)
SEEN: set[tuple[str, str, int, str]] = set()
ANY_ROUTE = "*"

#: Documented answers this test cannot make the daemon give, and why. Each must stay
#: unseen: an entry the test does produce is stale and fails the test.
_FULL = ("whether a write needs a new page depends on the space left; the test fills the "
         "store through send-otp, and this smaller write still fits")
NOT_PRODUCED: dict[tuple[str, str, int] | str, str] = {
    "store_read_only": "needs a database the daemon opened for writing to turn read-only "
    "under it; as root no file mode does that (otpd refuses to start on one)",
    "store_unavailable": "needs the database to fail under a running daemon; overwriting "
    "its file is undone by a checkpoint or hidden by the WAL and page caches, so it is "
    "not reliably forced (tests/store_faults.rs does not either)",
    ("/api/v1/messaging/verify-otp/", "POST", 507): _FULL,
    ("/api/v1/messaging/send-sms/", "POST", 507): _FULL,
    ("/api/v1/messaging/test-twilio/", "GET", 507): _FULL,
    ("/api/v1/messaging/twilio/status-callback/", "POST", 507): _FULL,
}

CALLBACK_URL = "https://backend.example/api/v1/messaging/twilio/status-callback/"


def record(path: str, method: str, status: int, body: bytes) -> None:
    code = ""
    if status >= 400:
        try:
            code = str(json.loads(body).get("code", ""))
        except (ValueError, AttributeError):
            code = "?"
    SEEN.add((path, method.upper(), status, code))


# ---- Daemons ----


@pytest.fixture(scope="module")
def mock() -> Iterator[MockTwilio]:
    twilio = MockTwilio()
    yield twilio
    twilio.close()


@dataclass
class Daemons:
    """Daemons started on first use, each with its own configuration, closed at the end."""

    mock: MockTwilio
    running: dict[str, DevDaemon] = field(default_factory=dict)

    def get(self, name: str) -> DevDaemon:
        if name not in self.running:
            config, dev = CONFIGS[name](self.mock)
            self.running[name] = DevDaemon(config, binary=otpd_binary(), dev=dev).start()
        return self.running[name]

    def close(self) -> None:
        for d in self.running.values():
            d.close()


HIGH = {"send_per_phone": "1000/1m", "send_per_user": "1000/1m",
        "verify_per_phone": "1000/1m", "send_global": "1000/1s"}
TEMPLATES = {"booking": {"en": "Table for {people} at {time}."}}

CONFIGS: dict[str, Callable[[MockTwilio], tuple[dict[str, Any], bool]]] = {
    # Twilio (mocked) with everything configured: nothing a request can do is a 5xx.
    "twilio": lambda m: ({
        "twilio": m.config(test_phone_number="+34600999000", whatsapp_from="+15005550007",
                           voice_from="+15005550006",
                           status_callback_url=CALLBACK_URL, breaker_failures=2,
                           breaker_cooldown="1s"),
        "limits": HIGH, "templates": TEMPLATES, "otp": {"ttl": "2s"},
    }, False),
    "no_whatsapp": lambda m: ({"twilio": m.config(), "limits": HIGH,
                               "server": {"request_timeout": "1s"}}, False),
    "no_provider": lambda m: ({}, False),
    "broken_outbox": lambda m: ({"dev": {"outbox_path": "/nonexistent/dir/outbox.jsonl"},
                                 "twilio": {"test_phone_number": "+34600999000"}}, True),
    "dev": lambda m: ({"limits": {"send_per_phone": "1/1h", "verify_per_phone": "3/1h",
                                  "send_global": "1000/1s"}}, True),
    "global": lambda m: ({"limits": {"send_global": "1/1h"},
                          "twilio": {"test_phone_number": "+34600999000"}}, True),
    "allow_es": lambda m: ({"guard": {"allow_countries": ["ES"]}}, True),
    "per_country": lambda m: ({"guard": {"per_country": "1/1h"}}, True),
    "per_prefix": lambda m: ({"guard": {"per_prefix": "1/1h"}}, True),
    "daily_cap": lambda m: ({"guard": {"daily_message_cap": 1},
                             "twilio": {"test_phone_number": "+34600999000"}}, True),
    "unverified": lambda m: ({"guard": {"unverified_per_country": 1}}, True),
    "forbidden": lambda m: ({"server": {"allowed_uids": [4242]}}, True),
    "busy": lambda m: ({"store": {"busy_timeout": "200ms"},
                        "twilio": m.config(test_phone_number="+34600999000",
                                           status_callback_url=CALLBACK_URL)}, False),
    "full": lambda m: ({"store": {"max_size": "96KiB"}, "limits": HIGH}, True),
}


@pytest.fixture(scope="module")
def daemons(mock: MockTwilio) -> Iterator[Daemons]:
    running = Daemons(mock)
    yield running
    running.close()


@pytest.fixture(scope="module")
def relay(daemons: Daemons) -> Iterator[Relay]:
    r = Relay(daemons.get("twilio").socket)
    yield r
    r.close()


# ---- 1. The fuzzer ----


@schema.parametrize()
@hypothesis.settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_generated_requests_get_documented_answers(case: Any, relay: Relay) -> None:
    response = case.call(base_url=relay.url, timeout=10)
    record(case.operation.path, case.method, response.status_code, response.content)
    case.validate_response(response, checks=[not_a_server_error, *CONFORMANCE])


# ---- 2. Scenarios ----


class Api:
    """Requests to one daemon's socket; every answer is recorded and validated."""

    def __init__(self, daemon: DevDaemon) -> None:
        self.daemon = daemon
        self.http = httpx.Client(transport=httpx.HTTPTransport(uds=daemon.socket),
                                 base_url="http://localhost", timeout=10)

    def call(
        self,
        method: str,
        path: str,
        expect: tuple[int, str] | int,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        path_params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        url = path.format(**(path_params or {}))
        response = self.http.request(method, url, params=params, json=json_body,
                                     content=content, headers=headers)
        status, code = (expect, "") if isinstance(expect, int) else expect
        documented = path in DOC["paths"] and method.lower() in DOC["paths"][path]
        record(path if documented else ANY_ROUTE, method, response.status_code, response.content)
        got = (response.status_code, record_code(response))
        assert got == (status, code), f"{method} {url}: {response.status_code} {response.text}"
        if documented:
            op = schema[path][method.upper()]
            case = op.Case(path_parameters=path_params or {}, query=params or {})
            case.validate_response(response, checks=CONFORMANCE)
        else:
            validate_any_route(response)
        return response

    def post(self, path: str, body: Any, expect: tuple[int, str] | int) -> httpx.Response:
        return self.call("POST", path, expect, json_body=body)


def record_code(response: httpx.Response) -> str:
    if response.status_code < 400:
        return ""
    return str(response.json().get("code", ""))


def validate_any_route(response: httpx.Response) -> None:
    documented = DOC["x-otpd-any-route"][str(response.status_code)]
    enum = documented["content"]["application/json"]["schema"]["allOf"][1]["properties"]["code"]["enum"]
    assert response.json()["code"] in enum
    for name, header in documented.get("headers", {}).items():
        if header.get("required"):
            assert name in response.headers, name


API = "/api/v1/messaging"
SEND, VERIFY, SMS = f"{API}/send-otp/", f"{API}/verify-otp/", f"{API}/send-sms/"
TEST, STATUS, MESSAGES = f"{API}/test-twilio/", f"{API}/status/", f"{API}/messages/"
MESSAGE, AUDIT, PURGE = f"{API}/messages/{{id}}", f"{API}/audit/", f"{API}/purge/"
REPORT = f"{API}/report/"
CALLBACK, HEALTH, METRICS = f"{API}/twilio/status-callback/", "/healthz", "/metrics"
OPENAPI_PATH = "/api/v1/openapi.json"
BODY_PATHS = [SEND, VERIFY, SMS, CALLBACK]


def otp(phone: str, purpose: str = "login") -> dict[str, str]:
    return {"phone_number": phone, "purpose": purpose}


def test_codes_and_their_verification(daemons: Daemons, mock: MockTwilio) -> None:
    api = Api(daemons.get("twilio"))
    phone = "+34600200001"
    api.post(SEND, otp(phone), 200)
    code = mock.last_code(phone)
    wrong = "".join(str((int(c) + 1) % 10) for c in code)
    api.post(VERIFY, {**otp(phone), "otp_code": wrong}, (400, "invalid_otp"))
    api.post(VERIFY, {**otp(phone), "otp_code": code}, 200)
    api.post(VERIFY, {**otp(phone), "otp_code": code}, (400, "otp_already_used"))
    api.post(VERIFY, {**otp("+34600200002"), "otp_code": code}, (400, "otp_not_found"))
    api.post(VERIFY, {**otp(phone), "otp_code": "12ab"}, (400, "invalid_otp_code"))
    api.post(SEND, {**otp(phone), "user_id": ""}, (400, "invalid_user_id"))
    api.post(SEND, otp(phone, "signup"), (400, "invalid_purpose"))
    api.post(SEND, otp("12"), (400, "invalid_phone_number"))
    api.post(SEND, {**otp(phone), "channel": "fax"}, (400, "invalid_channel"))
    api.post(SEND, {"phone_number": phone}, (400, "invalid_request"))
    api.call("POST", SEND, (400, "invalid_json"), content=b"{", headers={"Content-Type": "application/json"})
    # Five wrong attempts kill the code.
    phone = "+34600200003"
    api.post(SEND, otp(phone), 200)
    wrong = "".join(str((int(c) + 1) % 10) for c in mock.last_code(phone))
    for _ in range(5):
        api.post(VERIFY, {**otp(phone), "otp_code": wrong}, (400, "invalid_otp"))
    api.post(VERIFY, {**otp(phone), "otp_code": wrong}, (429, "too_many_attempts"))
    # The TTL is 2 s here.
    phone = "+34600200004"
    api.post(SEND, {**otp(phone), "channel": "whatsapp"}, 200)
    code = mock.last_code("whatsapp:" + phone)
    time.sleep(2.1)
    api.post(VERIFY, {**otp(phone), "otp_code": code}, (400, "otp_expired"))


def test_plain_messages_and_reads(daemons: Daemons, mock: MockTwilio) -> None:
    api = Api(daemons.get("twilio"))
    phone = "+34600200010"
    sms = {"to": phone, "body": "Your table is ready", "idempotency_key": "s-1"}
    first = api.post(SMS, sms, 202).json()
    api.post(SMS, sms, 202)
    api.post(SMS, {**sms, "body": "Other"}, (409, "idempotency_key_reused"))
    api.post(SMS, {"to": phone, "body": ""}, (400, "invalid_body"))
    api.post(SMS, {"to": phone, "body": "x" * 1601}, (400, "body_too_long"))
    api.post(SMS, {"to": phone, "body": "x", "send_at": "tomorrow"}, (400, "invalid_send_at"))
    api.post(SMS, {"to": phone, "body": "x", "idempotency_key": "\u00e9"}, (400, "invalid_idempotency_key"))
    api.post(SMS, {"to": phone, "template": "nope"}, (400, "unknown_template"))
    api.post(SMS, {"to": phone, "template": "booking", "variables": {"people": 2}},
             (400, "template_variable_missing"))
    api.post(SMS, {"to": phone, "template": "booking",
                   "variables": {"people": 2, "time": "21:00", "x": 1}}, (400, "template_variable_unknown"))
    api.post(SMS, {"to": phone, "body": "x", "channel": "fax"}, (400, "invalid_channel"))
    api.post(SMS, {"to": phone, "body": "x", "user_id": ""}, (400, "invalid_user_id"))
    api.post(SMS, {"to": phone, "body": "x", "media_urls": ["http://example.com/a.png"]},
             (400, "invalid_media_url"))
    api.post(SMS, {"to": phone, "body": "x", "media_urls": ["https://example.com/a.png"]}, 202)
    api.post(SMS, {"to": "12", "body": "x"}, (400, "invalid_phone_number"))
    api.post(SMS, {"to": phone}, (400, "invalid_request"))
    api.call("POST", SMS, (400, "invalid_json"), content=b"[", headers={"Content-Type": "application/json"})
    api.call("GET", MESSAGE, 200, path_params={"id": first["message_id"]})
    api.call("GET", MESSAGE, (404, "message_not_found"), path_params={"id": 99999})
    api.call("GET", MESSAGE, (404, "not_found"), path_params={"id": "0"})
    api.call("GET", MESSAGES, 200, params={"since": "1h", "limit": 5})
    api.call("GET", MESSAGES, (400, "invalid_query"), params={"limit": 0})
    api.call("GET", AUDIT, 200, params={"phone": phone})
    api.call("GET", AUDIT, (400, "invalid_query"), params={"since": "soon"})
    api.call("GET", AUDIT, (400, "invalid_phone_number"), params={"phone": "12"})
    api.call("GET", REPORT, 200, params={"since": "1h"})
    api.call("GET", REPORT, (400, "invalid_query"), params={"since": "soon"})
    for path in (STATUS, TEST, HEALTH, METRICS, OPENAPI_PATH):
        api.call("GET", path, 200)
    api.call("POST", PURGE, 200)
    # Every route's wrong method, and a path that is no route.
    for path, item in DOC["paths"].items():
        wrong = "POST" if "get" in item else "GET"
        api.call(wrong, path.replace("{id}", "1"), (405, "method_not_allowed"))
    api.call("GET", f"{API}/nope/", (404, "not_found"))


def test_status_callbacks(daemons: Daemons, mock: MockTwilio) -> None:
    api = Api(daemons.get("twilio"))
    api.post(SMS, {"to": "+34600200020", "body": "hi"}, 202)
    deadline = time.monotonic() + 10
    while not any(m.get("To") == "+34600200020" for m in mock.messages):
        assert time.monotonic() < deadline, "the worker never sent the message"
        time.sleep(0.02)
    sid = next(m["sid"] for m in mock.messages if m.get("To") == "+34600200020")

    def callback(form: dict[str, str], expect: tuple[int, str] | int, sign: bool = True) -> None:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if sign:
            headers["X-Twilio-Signature"] = mock.sign(CALLBACK_URL, form)
        api.call("POST", CALLBACK, expect, content=httpx.QueryParams(form).__str__().encode(),
                 headers=headers)

    callback({"MessageSid": sid, "MessageStatus": "delivered"}, 200)
    callback({"MessageSid": "SM" + "f" * 32, "MessageStatus": "delivered"}, (404, "message_not_found"))
    callback({"MessageSid": sid}, (400, "invalid_callback"))
    callback({"MessageSid": sid, "MessageStatus": "delivered"}, (403, "invalid_signature"), sign=False)
    Api(daemons.get("dev")).call(
        "POST", CALLBACK, (503, "callbacks_not_configured"), content=b"MessageSid=SM1",
        headers={"Content-Type": "application/x-www-form-urlencoded"})


def test_twilio_refusals_and_outages(daemons: Daemons, mock: MockTwilio) -> None:
    api = Api(daemons.get("twilio"))
    try:
        mock.mode = "reject"
        api.post(SEND, otp("+34600200030"), (502, "twilio_rejected"))
        api.call("GET", TEST, (502, "twilio_rejected"))
        mock.mode = "fail"
        api.post(SEND, otp("+34600200031"), (503, "twilio_unavailable"))
        # breaker_failures = 2: the circuit is open now, and says when to come back.
        api.post(SEND, otp("+34600200032"), (503, "twilio_circuit_open"))
        api.call("GET", TEST, (503, "twilio_circuit_open"))
    finally:
        mock.mode = "accept"
    time.sleep(1.1)
    api.call("GET", TEST, 200)  # the probe closes the circuit
    no_whatsapp = Api(daemons.get("no_whatsapp"))
    no_whatsapp.post(SEND, {**otp("+34600200033"), "channel": "whatsapp"}, (503, "channel_not_configured"))
    no_whatsapp.post(SMS, {"to": "+34600200033", "body": "x", "channel": "whatsapp"},
                     (503, "channel_not_configured"))


def test_no_provider_and_no_outbox(daemons: Daemons) -> None:
    none = Api(daemons.get("no_provider"))
    none.post(SEND, otp("+34600200040"), (503, "provider_not_configured"))
    none.post(SMS, {"to": "+34600200040", "body": "x"}, (503, "provider_not_configured"))
    none.call("GET", TEST, (503, "test_phone_not_configured"))
    broken = Api(daemons.get("broken_outbox"))
    broken.post(SEND, otp("+34600200041"), (503, "outbox_unavailable"))
    broken.call("GET", TEST, (503, "outbox_unavailable"))


def test_rate_limits(daemons: Daemons) -> None:
    dev = Api(daemons.get("dev"))
    dev.post(SEND, otp("+34600200050"), 200)
    dev.post(SEND, otp("+34600200050"), (429, "rate_limited"))
    for _ in range(3):
        dev.post(VERIFY, {**otp("+34600200051"), "otp_code": "123456"}, (400, "otp_not_found"))
    dev.post(VERIFY, {**otp("+34600200051"), "otp_code": "123456"}, (429, "rate_limited"))
    one = Api(daemons.get("global"))
    one.call("GET", TEST, 200)
    one.call("GET", TEST, (429, "rate_limited"))
    one.post(SEND, otp("+34600200052"), (429, "rate_limited"))
    one.post(SMS, {"to": "+34600200052", "body": "x"}, (429, "rate_limited"))


def test_the_cost_guard(daemons: Daemons) -> None:
    es = Api(daemons.get("allow_es"))
    es.post(SEND, otp("+14155550100"), (422, "country_not_allowed"))
    es.post(SMS, {"to": "+14155550100", "body": "x"}, (422, "country_not_allowed"))
    # send-sms meets the country lists and the daily cap only: the rate rules are for codes.
    country = Api(daemons.get("per_country"))
    country.post(SEND, otp("+34600200060"), 200)
    country.post(SEND, otp("+34600200061"), (429, "country_rate_limited"))
    prefix = Api(daemons.get("per_prefix"))
    prefix.post(SEND, otp("+34600200063"), 200)
    prefix.post(SEND, otp("+34600200064"), (429, "prefix_rate_limited"))
    cap = Api(daemons.get("daily_cap"))
    cap.post(SEND, otp("+34600200066"), 200)
    cap.post(SEND, otp("+34600200067"), (503, "daily_cap_reached"))
    cap.post(SMS, {"to": "+34600200067", "body": "x"}, (503, "daily_cap_reached"))
    cap.call("GET", TEST, (503, "daily_cap_reached"))
    unverified = Api(daemons.get("unverified"))
    unverified.post(SEND, otp("+34600200068"), 200)
    unverified.post(SEND, otp("+34600200069"), (429, "unverified_budget_exhausted"))


def test_access_and_transport_limits(daemons: Daemons) -> None:
    forbidden = Api(daemons.get("forbidden"))
    for path, item in DOC["paths"].items():
        for method in item:
            forbidden.call(method.upper(), path, (403, "forbidden"), path_params={"id": 1})
    api = Api(daemons.get("no_whatsapp"))
    for path in BODY_PATHS:
        api.call("POST", path, (413, "body_too_large"), content=b" " * 20000,
                 headers={"Content-Type": "application/json"})
        slow_body(api.daemon.socket, path, api)


def slow_body(socket_path: str, path: str, api: Api) -> None:
    """Headers announce a body that never comes: 408 after server.request_timeout."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(socket_path)
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                  "Content-Length: 100\r\n\r\n{".encode())
        raw = b""
        while b"\r\n\r\n" not in raw or not raw.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    record(path, "POST", status, body)
    assert (status, json.loads(body)["code"]) == (408, "request_timeout"), raw
    response = httpx.Response(status, content=body, headers={"Content-Type": "application/json"},
                              request=httpx.Request("POST", f"http://localhost{path}"))
    response.elapsed = timedelta(0)
    schema[path]["POST"].Case().validate_response(response, checks=CONFORMANCE)


def test_a_locked_store_is_busy(daemons: Daemons, mock: MockTwilio) -> None:
    daemon = daemons.get("busy")
    api = Api(daemon)
    api.post(SMS, {"to": "+34600200080", "body": "hi"}, 202)
    lock = sqlite3.connect(daemon.dir / "otpd.db", isolation_level=None, timeout=5)
    lock.execute("BEGIN IMMEDIATE")
    try:
        api.post(SEND, otp("+34600200081"), (503, "store_busy"))
        api.post(VERIFY, {**otp("+34600200081"), "otp_code": "123456"}, (503, "store_busy"))
        api.post(SMS, {"to": "+34600200081", "body": "x"}, (503, "store_busy"))
        api.call("GET", TEST, (503, "store_busy"))
        api.call("POST", PURGE, (503, "store_busy"))
        form = {"MessageSid": "SM1", "MessageStatus": "delivered"}
        api.call("POST", CALLBACK, (503, "store_busy"), content=httpx.QueryParams(form).__str__().encode(),
                 headers={"Content-Type": "application/x-www-form-urlencoded",
                          "X-Twilio-Signature": mock.sign(CALLBACK_URL, form)})
    finally:
        lock.execute("ROLLBACK")
        lock.close()


def test_a_full_store(daemons: Daemons) -> None:
    api = Api(daemons.get("full"))
    for n in range(5000):
        response = api.http.post(SEND, json=otp(f"+346003{n:05d}"))
        if response.status_code != 200:
            break
    record(SEND, "POST", response.status_code, response.content)
    assert (response.status_code, response.json()["code"]) == (507, "store_full"), response.text
    response = api.post(SEND, otp("+34600400000"), (507, "store_full"))
    assert response.headers["Retry-After"] == "60"
    # The remedy: a purge deletes (here nothing is old enough) and is never refused.
    api.call("POST", PURGE, 200)


# ---- 3. Coverage: nothing documented that the daemon never says ----


def documented() -> tuple[set[tuple[str, str, int]], dict[str, set[tuple[str, str, int]]]]:
    pairs: set[tuple[str, str, int]] = set()
    codes: dict[str, set[tuple[str, str, int]]] = {}
    answers = [(path, method.upper(), op["responses"]) for path, item in DOC["paths"].items()
               for method, op in item.items()]
    answers.append((ANY_ROUTE, "*", DOC["x-otpd-any-route"]))
    for path, method, responses in answers:
        for status, response in responses.items():
            pairs.add((path, method, int(status)))
            for media in response.get("content", {}).values():
                for part in media["schema"].get("allOf", []):
                    for code in part.get("properties", {}).get("code", {}).get("enum", []):
                        codes.setdefault(code, set()).add((path, method, int(status)))
    return pairs, codes


def test_every_documented_answer_was_produced() -> None:
    pairs, codes = documented()
    seen_pairs = {(p, m if p != ANY_ROUTE else "*", s) for p, m, s, _ in SEEN}
    seen_codes = {c for *_, c in SEEN}
    missing = [f"{m} {p} {s}" for p, m, s in sorted(pairs - seen_pairs)
               if (p, m, s) not in NOT_PRODUCED
               and not all(c in NOT_PRODUCED for c, at in codes.items() if (p, m, s) in at)]
    missing += [c for c in sorted(codes) if c not in seen_codes and c not in NOT_PRODUCED]
    stale = [str(k) for k in NOT_PRODUCED if k in seen_codes or k in seen_pairs]
    undocumented = sorted({c for *_, c in SEEN if c and c not in codes})
    print(f"seen {len(seen_pairs)} (operation, status) pairs and {len(seen_codes - {''})} codes")
    assert not undocumented, f"the daemon answered codes the document lacks: {undocumented}"
    assert not missing, "documented but never produced:\n" + "\n".join(missing)
    assert not stale, f"NOT_PRODUCED lists answers that were produced: {stale}"
