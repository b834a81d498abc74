"""``otpd.Client`` against a real development-mode daemon over its socket."""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import otpd
from otpd import Client
from otpd._calls import Call
from otpd.testing import DevDaemon


def wrong(code: str) -> str:
    """A code of the same length that is not ``code``."""
    return "".join(str((int(c) + 1) % 10) for c in code)


def test_send_then_verify(client: Client, daemon: DevDaemon, phone: str) -> None:
    sent = client.send_otp(phone, "registration", user_id="42")
    assert isinstance(sent, otpd.SentOtp)
    assert sent.message == "OTP sent successfully"
    assert sent.channel == "sms"
    assert sent.expires_at.tzinfo is not None
    now = datetime.now(timezone.utc)
    assert now + timedelta(minutes=9) < sent.expires_at <= now + timedelta(minutes=10, seconds=2)
    code = daemon.outbox.last_code(phone)
    verified = client.verify_otp(phone, code, "registration", user_id="42")
    assert verified == otpd.VerifiedOtp(otp_id=sent.otp_id, message="OTP verified successfully")


def test_integer_user_id_and_a_formatted_number(
    client: Client, daemon: DevDaemon, phone: str
) -> None:
    spaced = f"{phone[:3]} {phone[3:6]} {phone[6:8]} {phone[8:10]} {phone[10:]}"
    sent = client.send_otp(spaced, "login", user_id=42)
    code = daemon.outbox.last_code(spaced)
    assert client.verify_otp(phone, code, "login", user_id="42").otp_id == sent.otp_id


def test_wrong_code_says_how_many_attempts_remain(
    client: Client, daemon: DevDaemon, phone: str
) -> None:
    client.send_otp(phone, "login")
    with pytest.raises(otpd.InvalidOtp) as caught:
        client.verify_otp(phone, wrong(daemon.outbox.last_code(phone)), "login")
    e = caught.value
    assert isinstance(e, otpd.VerificationFailed)
    assert (e.code, e.status, e.attempts_remaining) == ("invalid_otp", 400, 4)
    assert e.payload["verified"] is False
    assert e.message == "Invalid OTP code"


def test_fifth_wrong_attempt_kills_the_code(client: Client, daemon: DevDaemon, phone: str) -> None:
    client.send_otp(phone, "login")
    code = daemon.outbox.last_code(phone)
    left = []
    for _ in range(5):
        with pytest.raises(otpd.InvalidOtp) as caught:
            client.verify_otp(phone, wrong(code), "login")
        left.append(caught.value.attempts_remaining)
    assert left == [4, 3, 2, 1, 0]
    with pytest.raises(otpd.TooManyAttempts) as dead:
        client.verify_otp(phone, code, "login")
    assert dead.value.status == 429
    assert isinstance(dead.value, otpd.RateLimited)
    assert 500 < dead.value.retry_after <= 600


def test_another_users_code_does_not_verify(client: Client, daemon: DevDaemon, phone: str) -> None:
    client.send_otp(phone, "two_factor", user_id=7)
    with pytest.raises(otpd.InvalidOtp):
        client.verify_otp(phone, daemon.outbox.last_code(phone), "two_factor", user_id=8)


def test_a_used_code_is_refused(client: Client, daemon: DevDaemon, phone: str) -> None:
    client.send_otp(phone, "password_reset")
    code = daemon.outbox.last_code(phone)
    client.verify_otp(phone, code, "password_reset")
    with pytest.raises(otpd.OtpAlreadyUsed) as caught:
        client.verify_otp(phone, code, "password_reset")
    assert caught.value.attempts_remaining is None


def test_no_code_sent(client: Client, phone: str) -> None:
    with pytest.raises(otpd.OtpNotFound) as caught:
        client.verify_otp(phone, "123456", "login")
    assert caught.value.code == "otp_not_found"


def test_a_new_code_supersedes_the_old(client: Client, daemon: DevDaemon, phone: str) -> None:
    client.send_otp(phone, "login")
    first = daemon.outbox.last_code(phone)
    client.send_otp(phone, "login")
    second = daemon.outbox.last_code(phone)
    if first != second:
        with pytest.raises(otpd.VerificationFailed):
            client.verify_otp(phone, first, "login")
    client.verify_otp(phone, second, "login")


def test_expired_code(short_daemon: DevDaemon, phone: str) -> None:
    client = short_daemon.client
    client.send_otp(phone, "login")
    code = short_daemon.outbox.last_code(phone)
    time.sleep(1.2)
    with pytest.raises(otpd.OtpExpired) as caught:
        client.verify_otp(phone, code, "login")
    assert caught.value.payload["verified"] is False


@pytest.mark.parametrize(
    ("number", "purpose", "cls", "code"),
    [
        ("600111222", "login", otpd.InvalidPhoneNumber, "invalid_phone_number"),
        ("+34600000105", "signup", otpd.InvalidPurpose, "invalid_purpose"),
    ],
)
def test_bad_input_is_invalid_request(
    client: Client, number: str, purpose: str, cls: type[otpd.OtpdError], code: str
) -> None:
    with pytest.raises(cls) as caught:
        client.send_otp(number, purpose)
    e = caught.value
    assert isinstance(e, otpd.InvalidRequest)
    assert not isinstance(e, otpd.VerificationFailed)
    assert (e.code, e.status) == (code, 400)


def test_invalid_purpose_lists_the_purposes(client: Client) -> None:
    with pytest.raises(otpd.InvalidPurpose) as caught:
        client.send_otp("+34600000105", "signup")
    assert "registration" in (caught.value.details or "")


def test_malformed_code_and_user_id(client: Client, phone: str) -> None:
    with pytest.raises(otpd.InvalidRequest) as caught:
        client.verify_otp(phone, "12a456", "login")
    assert caught.value.code == "invalid_otp_code"
    with pytest.raises(otpd.InvalidRequest) as caught:
        client.send_otp(phone, "login", user_id="")
    assert caught.value.code == "invalid_user_id"


def test_rate_limited_carries_retry_after_and_the_limit(client: Client, phone: str) -> None:
    for _ in range(3):
        client.send_otp(phone, "login")
    with pytest.raises(otpd.RateLimited) as caught:
        client.send_otp(phone, "login")
    e = caught.value
    assert type(e) is otpd.RateLimited
    assert (e.code, e.status, e.limit) == ("rate_limited", 429, "send_per_phone")
    assert isinstance(e.retry_after, int) and 0 < e.retry_after <= 3600


def test_whatsapp_channel(client: Client, daemon: DevDaemon, phone: str) -> None:
    sent = client.send_otp(phone, "login", channel="whatsapp", locale="en")
    assert sent.channel == "whatsapp"
    assert daemon.outbox.lines()[-1]["channel"] == "whatsapp"
    assert client.verify_otp(phone, daemon.outbox.last_code(phone), "login").otp_id == sent.otp_id
    with pytest.raises(otpd.InvalidRequest) as caught:
        client.send_otp(phone, "login", channel="fax")
    assert caught.value.code == "invalid_channel"


def wait_for_status(client: Client, message_id: int, status: str) -> otpd.Message:
    deadline = time.monotonic() + 10
    while (message := client.message(message_id)).status != status:
        assert time.monotonic() < deadline, f"message {message_id} stayed {message.status}"
        time.sleep(0.02)
    return message


def test_send_sms_is_queued_sent_and_replayed(client: Client, phone: str) -> None:
    queued = client.send_sms(phone, "Table for 2 at 20:00", idempotency_key=f"r-{phone}")
    assert (queued.status, queued.segments, queued.encoding, queued.replayed) == (
        "queued",
        1,
        "GSM-7",
        False,
    )
    message = wait_for_status(client, queued.message_id, "sent")
    assert (message.kind, message.to, message.otp_id) == ("sms", phone, None)
    assert [h.status for h in message.history] == ["queued", "sending", "sent"]
    again = client.send_sms(phone, "Table for 2 at 20:00", idempotency_key=f"r-{phone}")
    assert (again.message_id, again.replayed) == (queued.message_id, True)
    with pytest.raises(otpd.IdempotencyKeyReused) as caught:
        client.send_sms(phone, "Another text", idempotency_key=f"r-{phone}")
    assert (caught.value.status, caught.value.message_id) == (409, queued.message_id)


def test_send_sms_at_a_time_and_ucs2(client: Client, phone: str) -> None:
    at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1)
    queued = client.send_sms(phone, "¡Hola! ✓", send_at=at, user_id=5)
    assert queued.send_at == at
    assert queued.encoding == "UCS-2"
    message = client.message(queued.message_id)
    assert (message.status, message.user_id, message.send_at) == ("queued", "5", at)
    with pytest.raises(ValueError):
        client.send_sms(phone, "naive", send_at=datetime(2030, 1, 1, 9))


def test_send_sms_with_media_urls(client: Client, phone: str) -> None:
    urls = ["https://cdn.example.com/a.png", "https://cdn.example.com/b.jpg"]
    queued = client.send_sms(phone, "Your receipt", media_urls=urls)
    message = wait_for_status(client, queued.message_id, "sent")
    assert message.media_urls == tuple(urls)
    text = client.send_sms(phone, "no media")
    assert wait_for_status(client, text.message_id, "sent").media_urls == ()
    with pytest.raises(otpd.OtpdError) as caught:
        client.send_sms(phone, "x", media_urls=["http://cdn.example.com/a.png"])
    assert (caught.value.status, caught.value.code) == (400, "invalid_media_url")


def test_unknown_message(client: Client) -> None:
    with pytest.raises(otpd.MessageNotFound) as caught:
        client.message(999_999)
    assert caught.value.status == 404


def test_messages_and_audit(client: Client, daemon: DevDaemon, phone: str) -> None:
    sent = client.send_otp(phone, "registration", user_id=3)
    rows = [m for m in client.messages(since="1h", limit=1000) if m.otp_id == sent.otp_id]
    assert len(rows) == 1 and isinstance(rows[0], otpd.MessageSummary)
    assert (rows[0].to, rows[0].provider, rows[0].attempts) == (phone, "dev_outbox", 1)
    events = client.audit(phone=phone.replace("600", "600 "), since="1h")
    assert [e.event for e in events] == ["sent", "generated"]
    assert all(e.otp_id == sent.otp_id and e.user_id == "3" for e in events)
    assert events[0].peer is not None and events[0].peer.pid is not None
    with pytest.raises(otpd.InvalidRequest) as caught:
        client.messages(since="yesterday")
    assert caught.value.code == "invalid_query"


def test_status_purge_health_and_metrics(client: Client) -> None:
    status = client.status()
    assert isinstance(status, otpd.Status)
    assert (status.enabled, status.dev_mode, status.provider) == (True, True, "dev_outbox")
    assert status.purposes == ("registration", "login", "password_reset", "two_factor")
    assert status.otp_length == 6
    assert isinstance(client.purge(), otpd.Purged)
    assert client.healthz() is True and client.healthy() is True
    assert "otpd_http_requests_total" in client.metrics()


def test_test_twilio(client: Client, short_daemon: DevDaemon) -> None:
    with pytest.raises(otpd.TestPhoneNotConfigured) as caught:
        client.test_twilio()
    assert caught.value.status == 503
    sent = short_daemon.client.test_twilio()
    assert sent.sid.startswith("DEV") and sent.sid in sent.message
    assert short_daemon.outbox.lines()[-1]["to"] == "+34600999000"


def test_status_callback_without_configuration(client: Client) -> None:
    with pytest.raises(otpd.ServiceUnavailable) as caught:
        client.status_callback({"MessageSid": "SM1", "MessageStatus": "delivered"}, "sig")
    assert caught.value.code == "callbacks_not_configured"


def test_unknown_path_is_a_plain_otpd_error(client: Client) -> None:
    with pytest.raises(otpd.OtpdError) as caught:
        client._run(Call("GET", "/api/v1/messaging/nope/", dict))
    assert type(caught.value) is otpd.OtpdError
    assert (caught.value.code, caught.value.status) == ("not_found", 404)


def test_one_kept_connection_for_many_calls(daemon: DevDaemon) -> None:
    # An earlier test's connection may still be closing: wait for the fixture's own
    # client to be the only one, so the count below is exact.
    deadline = time.monotonic() + 5
    while (before := open_connections(daemon.client)) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    with Client(daemon.socket) as client:
        for _ in range(20):
            client.status()
        # Ours and the daemon fixture's own client: 20 calls did not open 20.
        assert open_connections(client) == before + 1


def open_connections(client: Client) -> int:
    for line in client.metrics().splitlines():
        if line.startswith("otpd_open_connections"):
            return int(float(line.split()[-1]))
    raise AssertionError("no otpd_open_connections in /metrics")


# httpcore 1.0 does not close the socket whose connect() failed; it is collected
# with the exception, and that ResourceWarning is not ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_missing_socket_is_unreachable(tmp_path: Path) -> None:
    with Client(str(tmp_path / "otpd.sock")) as client:
        with pytest.raises(otpd.OtpdUnreachable) as caught:
            client.send_otp("+34600000106", "login")
        e = caught.value
        assert (e.code, e.status) == ("otpd_unreachable", None)
        assert isinstance(e, otpd.ServiceUnavailable)
        assert "otpd.sock" in e.message
        assert client.healthy() is False
        del caught, e
    gc.collect()


@pytest.fixture
def silent_socket(tmp_path: Path) -> Iterator[str]:
    """A socket that accepts connections and never answers."""
    path = str(tmp_path / "silent.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join()
    for s in held:
        s.close()
    server.close()


def test_no_answer_in_time_is_a_timeout(silent_socket: str) -> None:
    with Client(silent_socket, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(otpd.OtpdUnreachable) as caught:
            client.send_otp("+34600000106", "login")
        assert caught.value.code == "otpd_timeout"
        assert time.monotonic() - started < 2
