"""``otpd.AsyncClient`` against the real daemon: the same calls, awaited."""

from __future__ import annotations

import gc
from pathlib import Path

import anyio
import pytest

import otpd
from otpd.testing import DevDaemon

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_send_then_verify(daemon: DevDaemon, phone: str) -> None:
    async with otpd.AsyncClient(daemon.socket, timeout=10.0) as client:
        sent = await client.send_otp(phone, "registration", user_id=42)
        code = daemon.outbox.last_code(phone)
        with pytest.raises(otpd.InvalidOtp) as caught:
            await client.verify_otp(phone, "0" * 6 if code != "0" * 6 else "1" * 6, "registration", 42)
        assert caught.value.attempts_remaining == 4
        verified = await client.verify_otp(phone, code, "registration", user_id=42)
        assert verified.otp_id == sent.otp_id


async def test_concurrent_calls_share_one_client(daemon: DevDaemon) -> None:
    phones = [f"+34611{n:06d}" for n in range(8)]
    sent: dict[str, otpd.SentOtp] = {}
    async with otpd.AsyncClient(daemon.socket) as client:

        async def send(phone: str) -> None:
            sent[phone] = await client.send_otp(phone, "login")

        async with anyio.create_task_group() as tg:
            for phone in phones:
                tg.start_soon(send, phone)
        assert len({s.otp_id for s in sent.values()}) == len(phones)
        for phone in phones:
            verified = await client.verify_otp(phone, daemon.outbox.last_code(phone), "login")
            assert verified.otp_id == sent[phone].otp_id


async def test_every_read_call(daemon: DevDaemon, phone: str) -> None:
    async with otpd.AsyncClient(daemon.socket) as client:
        queued = await client.send_sms(phone, "hello", idempotency_key=f"a-{phone}")
        assert (await client.message(queued.message_id)).to == phone
        assert any(m.id == queued.message_id for m in await client.messages(since="1h"))
        assert isinstance(await client.audit(), list)
        assert (await client.status()).dev_mode is True
        assert isinstance(await client.purge(), otpd.Purged)
        assert await client.healthz() is True
        assert "otpd_open_connections" in await client.metrics()
        with pytest.raises(otpd.TestPhoneNotConfigured):
            await client.test_twilio()
        with pytest.raises(otpd.ServiceUnavailable):
            await client.status_callback({"MessageSid": "SM1"}, None)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_missing_socket_is_unreachable(tmp_path: Path) -> None:
    async with otpd.AsyncClient(str(tmp_path / "otpd.sock")) as client:
        with pytest.raises(otpd.OtpdUnreachable) as caught:
            await client.send_otp("+34600000106", "login")
        assert caught.value.code == "otpd_unreachable"
        assert await client.healthy() is False
        del caught
    gc.collect()
