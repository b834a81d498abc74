"""Helpers for a backend's own tests.

- ``DevDaemon`` starts a real ``otpd serve`` in development mode in a temporary
  directory (nothing is sent: messages go to its outbox file) and stops it.
- ``DevOutbox`` reads the code otpd sent to a number from that outbox, so a test
  never parses SMS text itself.
- ``FakeClient`` / ``FakeAsyncClient`` stand in for ``Client`` / ``AsyncClient``
  without any daemon, with otpd's rules for codes (single use, attempts, expiry,
  supersession) and its exceptions.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from .client import Client
from .errors import (
    IdempotencyKeyReused,
    ServiceUnavailable,
    InvalidOtp,
    InvalidPhoneNumber,
    InvalidPurpose,
    InvalidRequest,
    MessageNotFound,
    OtpdUnreachable,
    OtpAlreadyUsed,
    OtpdError,
    OtpExpired,
    OtpNotFound,
    RateLimited,
    TestPhoneNotConfigured,
    TooManyAttempts,
)
from .models import (
    AuditEvent,
    CallbackResult,
    Message,
    MessageSummary,
    Purged,
    QueuedMessage,
    SentOtp,
    Status,
    StatusChange,
    TestMessage,
    UserId,
    VerifiedOtp,
)

__all__ = ["DevDaemon", "DevOutbox", "FakeClient", "FakeAsyncClient", "NoCodeSent"]

PURPOSES = ("registration", "login", "password_reset", "two_factor")


class NoCodeSent(AssertionError):
    """The outbox has no code for that number (and purpose)."""


class DevOutbox:
    """The outbox of a ``--dev`` otpd, read through its API and its outbox file.

    ``last_code`` asks otpd which message carried the number's newest code (by the
    audit trail and the message's SID), so plain SMS to the same number and other
    numbers' codes never get in the way.
    """

    def __init__(self, client: Client, path: str | os.PathLike[str]) -> None:
        self.client = client
        self.path = Path(path)

    def lines(self) -> list[dict[str, Any]]:
        """Every message in the outbox, oldest first."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def last_code(self, phone_number: str, purpose: str | None = None) -> str:
        """The code in the newest OTP sent to ``phone_number`` (in any format otpd
        accepts), for ``purpose`` if given."""
        events = self.client.audit(phone=phone_number, since="30d", limit=1000)
        sent = next(
            (
                e
                for e in events
                if e.event == "sent" and (purpose is None or e.purpose == purpose)
            ),
            None,
        )
        if sent is None or sent.otp_id is None:
            raise NoCodeSent(f"otpd sent no code to that number{_for(purpose)}")
        rows = self.client.messages(since="30d", limit=1000)
        sids = {m.sid for m in rows if m.otp_id == sent.otp_id and m.sid}
        body = next((m["body"] for m in reversed(self.lines()) if m.get("sid") in sids), None)
        if not isinstance(body, str):
            raise NoCodeSent(f"otp {sent.otp_id} is not in {self.path}")
        length = self.client.status().otp_length
        found = re.findall(rf"(?<![0-9])[0-9]{{{length}}}(?![0-9])", body)
        if len(found) != 1:
            raise NoCodeSent(f"otp {sent.otp_id}'s message has {len(found)} {length}-digit runs")
        return str(found[0])


def _for(purpose: str | None) -> str:
    return f" for {purpose}" if purpose else ""


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string.
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


class DevDaemon:
    """A real ``otpd serve`` in development mode, in its own temporary directory.

    ``config`` adds sections to the daemon's config file, e.g.
    ``{"limits": {"send_per_phone": "3/1h"}}``. The binary is ``binary``, else
    ``$OTPD_BIN``, else ``otpd`` on ``PATH``::

        with DevDaemon() as otpd:
            otpd.client.send_otp("+34600111222", "login")
            code = otpd.outbox.last_code("+34600111222")
    """

    def __init__(
        self,
        config: Mapping[str, Mapping[str, Any]] | None = None,
        binary: str | os.PathLike[str] | None = None,
        dev: bool = True,
        start_timeout: float = 15.0,
    ) -> None:
        found = binary or os.environ.get("OTPD_BIN") or shutil.which("otpd")
        if not found:
            raise FileNotFoundError("no otpd binary: pass binary= or set OTPD_BIN")
        # The daemon runs in its own directory: a relative path must not change meaning.
        self.binary = os.path.abspath(found) if os.sep in str(found) else str(found)
        self._dir = tempfile.TemporaryDirectory(prefix="otpd-")
        self.dir = Path(self._dir.name)
        self.socket = str(self.dir / "otpd.sock")
        self.outbox_path = self.dir / "outbox.jsonl"
        sections: dict[str, dict[str, Any]] = {
            "server": {"socket_path": self.socket},
            "store": {"path": str(self.dir / "otpd.db")},
            "dev": {"enabled": dev, "outbox_path": str(self.outbox_path)},
        }
        for name, values in (config or {}).items():
            sections.setdefault(name, {}).update(values)
        self.config_path = self.dir / "config.toml"
        self.config_path.write_text(
            "".join(
                f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items()) + "\n"
                for name, values in sections.items()
            ),
            encoding="utf-8",
        )
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self.client = Client(self.socket, timeout=10.0)
        self.outbox = DevOutbox(self.client, self.outbox_path)

    def start(self) -> DevDaemon:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TWILIO_", "OTPD_", "LISTEN_", "NOTIFY_SOCKET"))
            and k not in ("TEST_PHONE_NUMBER", "CREDENTIALS_DIRECTORY", "RUST_LOG")
        }
        self._log = open(self.dir / "otpd.log", "wb")  # noqa: SIM115 (closed in stop)
        self._process = subprocess.Popen(
            [self.binary, "serve", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.dir,
        )
        deadline = time.monotonic() + self._start_timeout
        # otpd links the socket into place only once it listens: until the path exists
        # there is nothing to ask (and httpcore leaks the socket of a failed connect).
        while not os.path.exists(self.socket) or not self._answers():
            if self._process.poll() is not None:
                log = self.log()
                self.close()
                raise RuntimeError(f"otpd exited with {self._process.returncode}:\n{log}")
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError(f"otpd did not answer within {self._start_timeout} s")
            time.sleep(0.02)
        return self

    def _answers(self) -> bool:
        """Whether otpd answers at all: a 403 (an allow-list without us) is up too."""
        try:
            self.client.healthz()
        except OtpdUnreachable:
            return False
        except OtpdError:
            pass
        return True

    def log(self) -> str:
        """What the daemon has printed so far."""
        try:
            return (self.dir / "otpd.log").read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not drained within 10 s."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process is not None:
            self._log.close()
        self.client.close()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> DevDaemon:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---- The fake: otpd's rules in memory ----

_SEPARATORS = re.compile(r"[\s\-.()]")


@dataclass
class _Code:
    otp_id: int
    phone: str
    purpose: str
    code: str
    user_id: str | None
    expires_at: datetime
    attempts_left: int
    used: bool = False


@dataclass
class _Sent:
    message_id: int
    to: str
    body: str
    channel: str
    otp_id: int | None
    user_id: str | None
    created_at: datetime
    history: list[StatusChange] = field(default_factory=list)


class FakeClient:
    """An in-memory stand-in for ``Client``: no daemon, no socket.

    Codes follow otpd's rules: ``length`` digits, valid ``ttl`` seconds, single use,
    bound to (number, purpose) and to the user when one was given, superseded by a
    newer code, dead after ``max_attempts`` wrong tries. Numbers must be international
    (``+`` and 8-15 digits; separators are dropped), as otpd's default. The limits are
    otpd's defaults, as (count, seconds) or ``None`` for none: ``send_per_phone``,
    ``send_per_user`` and ``verify_per_phone`` (then ``RateLimited``).

    ``last_code(number)`` is the newest code sent, ``sent`` every message. To test an
    error path, ``fail_next(error)`` makes the next call raise ``error``. ``now`` is the
    fake's clock: move it to expire codes.
    """

    def __init__(
        self,
        *,
        length: int = 6,
        ttl: float = 600.0,
        max_attempts: int = 5,
        purposes: tuple[str, ...] = PURPOSES,
        send_per_phone: tuple[int, float] | None = (5, 600.0),
        send_per_user: tuple[int, float] | None = (10, 3600.0),
        verify_per_phone: tuple[int, float] | None = (10, 600.0),
        test_phone_number: str | None = None,
    ) -> None:
        self.length = length
        self.ttl = timedelta(seconds=ttl)
        self.max_attempts = max_attempts
        self.purposes = tuple(purposes)
        self.limits = {
            "send_per_phone": send_per_phone,
            "send_per_user": send_per_user,
            "verify_per_phone": verify_per_phone,
        }
        self.test_phone_number = test_phone_number
        self.now: datetime = datetime.now(timezone.utc)
        self.sent: list[_Sent] = []
        self.events: list[AuditEvent] = []
        self._codes: dict[tuple[str, str], _Code] = {}
        self._hits: dict[tuple[str, str], list[datetime]] = {}
        self._failures: list[OtpdError] = []
        self._next_id = 0
        self._idempotency: dict[str, tuple[int, tuple[Any, ...]]] = {}

    def fail_next(self, error: OtpdError) -> None:
        """Makes the next call raise ``error`` (queued: several calls, several errors)."""
        self._failures.append(error)

    def advance(self, seconds: float) -> None:
        """Moves the fake's clock forward."""
        self.now += timedelta(seconds=seconds)

    def last_code(self, phone_number: str, purpose: str | None = None) -> str:
        """The newest code sent to ``phone_number`` (for ``purpose``, if given)."""
        phone = self._phone(phone_number)
        codes = [c for c in self._codes.values() if c.phone == phone]
        if purpose is not None:
            codes = [c for c in codes if c.purpose == purpose]
        if not codes:
            raise NoCodeSent(f"no code was sent to that number{_for(purpose)}")
        return max(codes, key=lambda c: c.otp_id).code

    # -- the rules --

    def _check(self) -> None:
        if self._failures:
            raise self._failures.pop(0)

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    @staticmethod
    def _phone(number: str) -> str:
        phone = _SEPARATORS.sub("", number)
        if phone.startswith("00"):
            phone = "+" + phone[2:]
        if not re.fullmatch(r"\+[1-9][0-9]{7,14}", phone):
            raise InvalidPhoneNumber(
                "invalid_phone_number", "Invalid phone number", "not an international number", 400
            )
        return phone

    def _purpose(self, purpose: str) -> str:
        if purpose not in self.purposes:
            raise InvalidPurpose(
                "invalid_purpose",
                "Invalid purpose",
                "purpose must be one of: " + ", ".join(self.purposes),
                400,
            )
        return purpose

    @staticmethod
    def _user(user_id: UserId | None) -> str | None:
        if user_id is None:
            return None
        text = str(user_id)
        if not text or len(text.encode()) > 128 or any(ord(c) < 32 for c in text):
            raise InvalidRequest("invalid_user_id", "Invalid user id", None, 400)
        return text

    def _limit(self, limit: str, key: str | None) -> None:
        """A sliding window per key: close enough to otpd's GCRA for a test's counts."""
        rule = self.limits[limit]
        if rule is None or key is None:
            return
        count, seconds = rule
        window = timedelta(seconds=seconds)
        hits = [t for t in self._hits.get((limit, key), []) if t > self.now - window]
        if len(hits) >= count:
            wait = max(1, int((hits[0] + window - self.now).total_seconds() + 0.999))
            raise RateLimited(
                "rate_limited",
                "Too many requests",
                f"{limit} limit reached; retry in {wait} s",
                429,
                {"limit": limit},
                retry_after=wait,
            )
        self._hits[(limit, key)] = [*hits, self.now]

    def _audit(self, event: str, code: _Code) -> None:
        self.events.insert(
            0,
            AuditEvent(
                id=len(self.events) + 1,
                at=self.now,
                otp_id=code.otp_id,
                event=event,
                phone=code.phone,
                purpose=code.purpose,
                user_id=code.user_id,
                detail=None,
                peer=None,
            ),
        )

    def _deliver(
        self, to: str, body: str, channel: str, otp_id: int | None, user_id: str | None
    ) -> _Sent:
        sent = _Sent(self._id(), to, body, channel, otp_id, user_id, self.now)
        sent.history.append(StatusChange(self.now, "delivered_to_outbox", None, None))
        self.sent.append(sent)
        return sent

    # -- the client's calls --

    def send_otp(
        self,
        phone_number: str,
        purpose: str,
        user_id: UserId | None = None,
        *,
        locale: str | None = None,
        channel: str | None = None,
    ) -> SentOtp:
        self._check()
        phone, purpose, user = self._phone(phone_number), self._purpose(purpose), self._user(user_id)
        if channel not in (None, "sms", "whatsapp", "voice"):
            raise InvalidRequest("invalid_channel", "Invalid channel", None, 400)
        self._limit("send_per_phone", phone)
        self._limit("send_per_user", user)
        code = _Code(
            otp_id=self._id(),
            phone=phone,
            purpose=purpose,
            code="".join(secrets.choice("0123456789") for _ in range(self.length)),
            user_id=user,
            expires_at=self.now + self.ttl,
            attempts_left=self.max_attempts,
        )
        self._codes[(phone, purpose)] = code
        minutes = -(-int(self.ttl.total_seconds()) // 60)
        body = f"Your verification code is {code.code}. It expires in {minutes} minutes."
        self._deliver(phone, body, channel or "sms", code.otp_id, user)
        self._audit("generated", code)
        self._audit("sent", code)
        return SentOtp(code.otp_id, code.expires_at, channel or "sms", "OTP sent successfully")

    def verify_otp(
        self, phone_number: str, otp_code: str, purpose: str, user_id: UserId | None = None
    ) -> VerifiedOtp:
        self._check()
        phone, purpose, user = self._phone(phone_number), self._purpose(purpose), self._user(user_id)
        if not re.fullmatch(r"[0-9]{4,10}", otp_code):
            raise InvalidRequest("invalid_otp_code", "Invalid OTP code format", None, 400)
        self._limit("verify_per_phone", phone)
        code = self._codes.get((phone, purpose))
        refused = {"verified": False}
        if code is None:
            raise OtpNotFound("otp_not_found", "No OTP code to verify", None, 400, refused)
        if code.used:
            raise OtpAlreadyUsed("otp_already_used", "OTP code has already been used", None, 400, refused)
        if self.now >= code.expires_at:
            raise OtpExpired("otp_expired", "OTP code has expired", None, 400, refused)
        if code.attempts_left == 0:
            wait = max(1, int((code.expires_at - self.now).total_seconds()))
            raise TooManyAttempts(
                "too_many_attempts", "Too many wrong attempts for this code", None, 429, refused,
                retry_after=wait,
            )
        code.attempts_left -= 1
        # A code sent to a user verifies only for that user; one sent without, for anyone.
        if secrets.compare_digest(otp_code, code.code) and code.user_id in (None, user):
            code.used = True
            self._audit("verified", code)
            return VerifiedOtp(code.otp_id, "OTP verified successfully")
        self._audit("failed_attempt", code)
        raise InvalidOtp(
            "invalid_otp",
            "Invalid OTP code",
            f"{code.attempts_left} attempts remaining",
            400,
            {"verified": False, "attempts_remaining": code.attempts_left},
        )

    def test_twilio(self) -> TestMessage:
        self._check()
        if self.test_phone_number is None:
            raise TestPhoneNotConfigured(
                "test_phone_not_configured", "No test phone number is configured", None, 503
            )
        sent = self._deliver(self._phone(self.test_phone_number), "otpd test message", "sms", None, None)
        sid = f"FAKE{sent.message_id:032x}"
        return TestMessage(f"Test message sent successfully with SID: {sid}", sid)

    def status(self) -> Status:
        self._check()
        states: dict[str, int] = {}
        for c in self._codes.values():
            state = "verified" if c.used else "expired" if self.now >= c.expires_at else "pending"
            states[state] = states.get(state, 0) + 1
        return Status(
            enabled=True,
            provider="fake",
            provider_reachable=True,
            provider_circuit=None,
            provider_credentials=None,
            dev_mode=True,
            test_phone_configured=self.test_phone_number is not None,
            purposes=self.purposes,
            otp_length=self.length,
            otp_ttl_seconds=int(self.ttl.total_seconds()),
            limiter_keys=len(self._hits),
            codes=states,
            messages={"delivered_to_outbox": len(self.sent)} if self.sent else {},
            version="fake",
        )

    def send_sms(
        self,
        to: str,
        body: str | None = None,
        *,
        template: str | None = None,
        variables: Mapping[str, str | int] | None = None,
        locale: str | None = None,
        user_id: UserId | None = None,
        idempotency_key: str | None = None,
        send_at: datetime | str | None = None,
        channel: str | None = None,
        media_urls: Sequence[str] | None = None,
    ) -> QueuedMessage:
        self._check()
        phone, user = self._phone(to), self._user(user_id)
        if (body is None) == (template is None):
            raise InvalidRequest("invalid_request", "Give either body or template", None, 400)
        if channel not in (None, "sms", "whatsapp"):
            raise InvalidRequest("invalid_channel", "Invalid channel", None, 400)
        text = body if body is not None else f"{template} {dict(variables or {})}"
        request = (phone, text, user, channel, tuple(media_urls or ()))
        if idempotency_key is not None and idempotency_key in self._idempotency:
            first, before = self._idempotency[idempotency_key]
            if before != request:
                raise IdempotencyKeyReused(
                    "idempotency_key_reused",
                    "This idempotency_key was used for a different request",
                    None,
                    409,
                    {"message_id": first},
                )
            return QueuedMessage(first, "queued", 1, "GSM-7", self.now, True)
        sent = self._deliver(phone, text, channel or "sms", None, user)
        if idempotency_key is not None:
            self._idempotency[idempotency_key] = (sent.message_id, request)
        return QueuedMessage(sent.message_id, "queued", 1, "GSM-7", self.now, False)

    def message(self, message_id: int) -> Message:
        self._check()
        for s in self.sent:
            if s.message_id == message_id:
                return Message(
                    id=s.message_id,
                    kind="otp" if s.otp_id is not None else "sms",
                    channel=s.channel,
                    otp_id=s.otp_id,
                    to=s.to,
                    user_id=s.user_id,
                    status=s.history[-1].status,
                    sid=f"FAKE{s.message_id:032x}",
                    segments=1,
                    created_at=s.created_at,
                    send_at=None,
                    error_code=None,
                    error_message=None,
                    history=tuple(s.history),
                )
        raise MessageNotFound("message_not_found", "No such message", None, 404)

    def messages(self, since: str = "24h", limit: int = 100) -> list[MessageSummary]:
        self._check()
        return [
            MessageSummary(
                s.message_id, s.otp_id, s.created_at, s.to, s.channel, "fake",
                f"FAKE{s.message_id:032x}", s.history[-1].status, None, None, 1,
            )
            for s in reversed(self.sent)
        ][:limit]

    def audit(
        self, phone: str | None = None, since: str = "24h", limit: int = 100
    ) -> list[AuditEvent]:
        self._check()
        wanted = self._phone(phone) if phone is not None else None
        return [e for e in self.events if wanted is None or e.phone == wanted][:limit]

    def purge(self) -> Purged:
        self._check()
        return Purged(codes=0, messages=0, audit=0)

    def status_callback(self, form: Mapping[str, str], signature: str | None) -> CallbackResult:
        self._check()
        raise ServiceUnavailable(
            "callbacks_not_configured", "Status callbacks are not configured", None, 503
        )

    def healthz(self) -> bool:
        self._check()
        return True

    def healthy(self) -> bool:
        try:
            return self.healthz()
        except OtpdError:
            return False

    def metrics(self) -> str:
        self._check()
        return ""

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FakeAsyncClient:
    """``FakeClient``'s rules behind ``AsyncClient``'s awaitable calls; ``fake`` is the
    ``FakeClient`` underneath (for ``last_code``, ``fail_next``, ``advance``)."""

    def __init__(self, fake: FakeClient | None = None, **options: Any) -> None:
        self.fake = fake or FakeClient(**options)

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.fake, name)
        if name.startswith("_") or name in ("last_code", "fail_next", "advance", "sent", "events"):
            return call

        async def awaited(*args: Any, **kwargs: Any) -> Any:
            return call(*args, **kwargs)

        return awaited

    async def aclose(self) -> None:
        pass

    async def __aenter__(self) -> FakeAsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass
