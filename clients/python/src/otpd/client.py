"""``Client`` and ``AsyncClient``: otpd's API v1 over its Unix socket.

Each client keeps one httpx connection pool to the socket: make one per process (at
import time, or once per Django process through ``otpd.django``) and share it. The
sync client is safe to share between threads, the async one between tasks of one
event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import TypeVar

import httpx

from . import _calls as calls
from ._calls import DEFAULT_SOCKET, DEFAULT_TIMEOUT, Call
from .errors import OtpdError
from .models import (
    AuditEvent,
    CallbackResult,
    Message,
    MessageSummary,
    Purged,
    QueuedMessage,
    SentOtp,
    Status,
    TestMessage,
    UserId,
    VerifiedOtp,
)

__all__ = ["Client", "AsyncClient", "DEFAULT_SOCKET", "DEFAULT_TIMEOUT"]

T = TypeVar("T")

# httpx wants a URL; the host is never resolved, the socket is the address.
_BASE_URL = "http://otpd"


def _timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    # A local socket connects at once or not at all: waiting long for it only hides a
    # dead daemon.
    return httpx.Timeout(timeout, connect=min(timeout, 2.0))


def _request(call: Call[T]) -> dict[str, object]:
    return {
        "method": call.method,
        "url": call.path,
        "json": call.json,
        "params": call.params,
        "content": call.content,
        "headers": call.headers,
    }


class Client:
    """A synchronous client for one otpd socket.

    ``timeout`` (seconds, or an ``httpx.Timeout``) bounds each request; the default
    leaves send-otp room for otpd's own 10 s Twilio deadline.
    """

    def __init__(
        self,
        socket_path: str = DEFAULT_SOCKET,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.socket_path = str(socket_path)
        self._http = httpx.Client(
            transport=transport or httpx.HTTPTransport(uds=self.socket_path),
            base_url=_BASE_URL,
            timeout=_timeout(timeout),
            headers={"Accept": "application/json"},
        )

    def _run(self, call: Call[T]) -> T:
        try:
            response = self._http.request(**_request(call))  # type: ignore[arg-type]
        except httpx.TransportError as e:
            raise calls.unreachable(self.socket_path, e) from e
        return calls.answer(call, response)

    def send_otp(
        self,
        phone_number: str,
        purpose: str,
        user_id: UserId | None = None,
        *,
        locale: str | None = None,
        channel: str | None = None,
    ) -> SentOtp:
        """Sends a new code to ``phone_number`` for ``purpose`` (superseding any older
        one). ``channel`` is "sms", "whatsapp" or "voice" (a call that says the code);
        without it otpd tries its order."""
        return self._run(calls.send_otp(phone_number, purpose, user_id, locale, channel))

    def verify_otp(
        self, phone_number: str, otp_code: str, purpose: str, user_id: UserId | None = None
    ) -> VerifiedOtp:
        """Checks ``otp_code``; raises ``VerificationFailed`` (or ``TooManyAttempts``)
        when it does not verify."""
        return self._run(calls.verify_otp(phone_number, otp_code, purpose, user_id))

    def test_twilio(self) -> TestMessage:
        """Sends the test message to ``twilio.test_phone_number``."""
        return self._run(calls.test_twilio())

    def status(self) -> Status:
        return self._run(calls.status())

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
        """Queues a plain message: a ``body``, or a configured ``template`` with its
        ``variables``, and up to 10 https ``media_urls`` (an MMS). Answered once
        committed; otpd sends it (at ``send_at``)."""
        return self._run(
            calls.send_sms(
                to,
                body,
                template,
                variables,
                locale,
                user_id,
                idempotency_key,
                send_at,
                channel,
                media_urls,
            )
        )

    def message(self, message_id: int) -> Message:
        """One message (SMS or OTP) with its status history."""
        return self._run(calls.message(message_id))

    def messages(self, since: str = "24h", limit: int = 100) -> list[MessageSummary]:
        """Messages newest first; ``since`` is a duration ("1h") or an RFC 3339 time."""
        return self._run(calls.messages(since, limit))

    def audit(
        self, phone: str | None = None, since: str = "24h", limit: int = 100
    ) -> list[AuditEvent]:
        """The audit trail newest first, for one number if ``phone`` is given."""
        return self._run(calls.audit(phone, since, limit))

    def purge(self) -> Purged:
        """Runs the retention job now."""
        return self._run(calls.purge())

    def status_callback(
        self, form: Mapping[str, str], signature: str | None
    ) -> CallbackResult:
        """Forwards Twilio's status callback (its form and ``X-Twilio-Signature``)."""
        return self._run(calls.status_callback(form, signature))

    def healthz(self) -> bool:
        """True when otpd answers and its store works; raises the error otherwise."""
        return self._run(calls.healthz())

    def healthy(self) -> bool:
        """Like ``healthz`` but never raises: False for any failure."""
        try:
            return self.healthz()
        except OtpdError:
            return False

    def metrics(self) -> str:
        """The Prometheus text exposition."""
        return self._run(calls.metrics())

    def close(self) -> None:
        """Closes the pooled connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient:
    """An asyncio client for one otpd socket; the same calls as ``Client``, awaited."""

    def __init__(
        self,
        socket_path: str = DEFAULT_SOCKET,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.socket_path = str(socket_path)
        self._http = httpx.AsyncClient(
            transport=transport or httpx.AsyncHTTPTransport(uds=self.socket_path),
            base_url=_BASE_URL,
            timeout=_timeout(timeout),
            headers={"Accept": "application/json"},
        )

    async def _run(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(**_request(call))  # type: ignore[arg-type]
        except httpx.TransportError as e:
            raise calls.unreachable(self.socket_path, e) from e
        return calls.answer(call, response)

    async def send_otp(
        self,
        phone_number: str,
        purpose: str,
        user_id: UserId | None = None,
        *,
        locale: str | None = None,
        channel: str | None = None,
    ) -> SentOtp:
        return await self._run(calls.send_otp(phone_number, purpose, user_id, locale, channel))

    async def verify_otp(
        self, phone_number: str, otp_code: str, purpose: str, user_id: UserId | None = None
    ) -> VerifiedOtp:
        return await self._run(calls.verify_otp(phone_number, otp_code, purpose, user_id))

    async def test_twilio(self) -> TestMessage:
        return await self._run(calls.test_twilio())

    async def status(self) -> Status:
        return await self._run(calls.status())

    async def send_sms(
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
        return await self._run(
            calls.send_sms(
                to,
                body,
                template,
                variables,
                locale,
                user_id,
                idempotency_key,
                send_at,
                channel,
                media_urls,
            )
        )

    async def message(self, message_id: int) -> Message:
        return await self._run(calls.message(message_id))

    async def messages(self, since: str = "24h", limit: int = 100) -> list[MessageSummary]:
        return await self._run(calls.messages(since, limit))

    async def audit(
        self, phone: str | None = None, since: str = "24h", limit: int = 100
    ) -> list[AuditEvent]:
        return await self._run(calls.audit(phone, since, limit))

    async def purge(self) -> Purged:
        return await self._run(calls.purge())

    async def status_callback(
        self, form: Mapping[str, str], signature: str | None
    ) -> CallbackResult:
        return await self._run(calls.status_callback(form, signature))

    async def healthz(self) -> bool:
        return await self._run(calls.healthz())

    async def healthy(self) -> bool:
        try:
            return await self.healthz()
        except OtpdError:
            return False

    async def metrics(self) -> str:
        return await self._run(calls.metrics())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
