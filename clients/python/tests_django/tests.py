"""otpd.django against a real development-mode daemon (``$OTPD_BIN``), run by Django's
test runner once per settings module::

    OTPD_BIN=target/debug/otpd python -m django test tests_django --settings=tests_django.settings_plain
    OTPD_BIN=target/debug/otpd python -m django test tests_django --settings=tests_django.settings_drf
"""

from __future__ import annotations

import io
import itertools
import json
import os
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core import checks
from django.core.management import CommandError, call_command
from django.test import Client as HttpClient
from django.test import TestCase, override_settings

from otpd.testing import DevDaemon

DRF = "rest_framework" in settings.INSTALLED_APPS
_numbers = itertools.count(1)
_daemon: DevDaemon | None = None


def setUpModule() -> None:
    global _daemon
    binary = os.environ.get("OTPD_BIN", "")
    if not binary:
        raise RuntimeError("set OTPD_BIN to the otpd binary (e.g. target/debug/otpd)")
    # A test number for test-twilio, and two codes per number for the rate limit.
    config = {
        "limits": {"send_per_phone": "2/1h"},
        "twilio": {"test_phone_number": "+34600999000"},
    }
    _daemon = DevDaemon(config, binary=binary).start()


def tearDownModule() -> None:
    if _daemon is not None:
        _daemon.close()


def daemon() -> DevDaemon:
    assert _daemon is not None
    return _daemon


def fresh_phone() -> str:
    return f"+34633{next(_numbers) + (500 if DRF else 0):06d}"


class OtpdTestCase(TestCase):
    user: User

    @classmethod
    def setUpTestData(cls) -> None:
        cls.user = User.objects.create_user("ana", password="pw")
        cls.staff = User.objects.create_user("op", password="pw", is_staff=True)

    def setUp(self) -> None:
        overridden = override_settings(OTPD={"SOCKET": daemon().socket, "TIMEOUT": 10})
        overridden.enable()
        self.addCleanup(overridden.disable)
        self.http = self.client_for(self.user)

    def client_for(self, user: User | None) -> HttpClient:
        """A browser-like client for ``user``: the Bearer token with DRF, else a session."""
        if user is None:
            return HttpClient()
        if DRF:
            from rest_framework.authtoken.models import Token

            token, _ = Token.objects.get_or_create(user=user)
            return HttpClient(headers={"Authorization": f"Bearer {token.key}"})
        http = HttpClient()
        http.force_login(user)
        return http

    def post(self, endpoint: str, body: Any, http: HttpClient | None = None) -> Any:
        return (http or self.http).post(
            f"/api/v1/messaging/{endpoint}/", json.dumps(body), content_type="application/json"
        )


class SendAndVerifyTest(OtpdTestCase):
    def test_the_seeds_flow(self) -> None:
        phone = fresh_phone()
        sent = self.post("send-otp", {"phone_number": phone, "purpose": "registration"})
        self.assertEqual(sent.status_code, 200)
        body = sent.json()
        self.assertEqual(set(body), {"message", "otp_id"})
        self.assertEqual(body["message"], "OTP sent successfully")
        code = daemon().outbox.last_code(phone)
        verified = self.post(
            "verify-otp", {"phone_number": phone, "otp_code": code, "purpose": "registration"}
        )
        self.assertEqual(verified.status_code, 200)
        self.assertEqual(verified.json(), {"message": "OTP verified successfully", "verified": True})

    def test_the_user_id_is_the_authenticated_users(self) -> None:
        phone = fresh_phone()
        # A user_id in the body would let one user verify another's code: ignored.
        self.post("send-otp", {"phone_number": phone, "purpose": "login", "user_id": "999"})
        events = daemon().client.audit(phone=phone)
        self.assertEqual({e.user_id for e in events}, {str(self.user.pk)})
        code = daemon().outbox.last_code(phone)
        other = self.client_for(self.staff)
        stolen = self.post(
            "verify-otp", {"phone_number": phone, "otp_code": code, "purpose": "login"}, other
        )
        self.assertEqual(stolen.status_code, 400)
        self.assertEqual(stolen.json()["code"], "invalid_otp")

    def test_a_wrong_code(self) -> None:
        phone = fresh_phone()
        self.post("send-otp", {"phone_number": phone, "purpose": "login"})
        code = daemon().outbox.last_code(phone)
        wrong = "".join(str((int(c) + 1) % 10) for c in code)
        answer = self.post("verify-otp", {"phone_number": phone, "otp_code": wrong, "purpose": "login"})
        self.assertEqual(answer.status_code, 400)
        body = answer.json()
        self.assertEqual(
            (body["code"], body["verified"], body["attempts_remaining"]), ("invalid_otp", False, 4)
        )
        self.assertEqual(body["error"], "Invalid OTP code")

    def test_a_rate_limit_says_when_to_retry(self) -> None:
        phone = fresh_phone()
        for _ in range(2):
            self.assertEqual(self.post("send-otp", {"phone_number": phone, "purpose": "login"}).status_code, 200)
        limited = self.post("send-otp", {"phone_number": phone, "purpose": "login"})
        self.assertEqual(limited.status_code, 429)
        body = limited.json()
        self.assertEqual((body["code"], body["limit"]), ("rate_limited", "send_per_phone"))
        self.assertGreater(int(limited["Retry-After"]), 0)
        self.assertEqual(body["retry_after"], int(limited["Retry-After"]))

    def test_bad_input_keeps_otpds_code_and_details(self) -> None:
        answer = self.post("send-otp", {"phone_number": "12", "purpose": "login"})
        self.assertEqual(answer.status_code, 400)
        self.assertEqual(answer.json()["code"], "invalid_phone_number")
        answer = self.post("send-otp", {"phone_number": fresh_phone(), "purpose": "signup"})
        self.assertEqual(answer.json()["code"], "invalid_purpose")
        self.assertIn("registration", answer.json()["details"])
        answer = self.post("send-otp", {"purpose": "login"})
        self.assertEqual((answer.status_code, answer.json()["code"]), (400, "invalid_request"))

    def test_default_purpose(self) -> None:
        phone = fresh_phone()
        with override_settings(OTPD={"SOCKET": daemon().socket, "DEFAULT_PURPOSE": "login"}):
            self.assertEqual(self.post("send-otp", {"phone_number": phone}).status_code, 200)
        self.assertEqual(daemon().client.audit(phone=phone)[0].purpose, "login")

    def test_anonymous_callers_are_refused_unless_allowed(self) -> None:
        phone = fresh_phone()
        anonymous = self.client_for(None)
        refused = self.post("send-otp", {"phone_number": phone, "purpose": "registration"}, anonymous)
        self.assertEqual(refused.status_code, 401)
        with override_settings(OTPD={"SOCKET": daemon().socket, "ALLOW_ANONYMOUS": True}):
            sent = self.post("send-otp", {"phone_number": phone, "purpose": "registration"}, anonymous)
        self.assertEqual(sent.status_code, 200)
        self.assertEqual({e.user_id for e in daemon().client.audit(phone=phone)}, {None})

    def test_a_daemon_that_does_not_answer_is_503_without_details(self) -> None:
        with override_settings(OTPD={"SOCKET": "/nonexistent/otpd.sock"}):
            answer = self.post("send-otp", {"phone_number": fresh_phone(), "purpose": "login"})
        self.assertEqual(answer.status_code, 503)
        self.assertEqual(answer.json(), {"error": answer.json()["error"], "code": "otpd_unreachable"})
        self.assertNotIn("nonexistent", answer.content.decode())

    def test_wrong_method(self) -> None:
        self.assertEqual(self.http.get("/api/v1/messaging/send-otp/").status_code, 405)

    def test_a_fake_client_needs_no_daemon(self) -> None:
        from otpd.django import get_client

        with override_settings(OTPD={"CLIENT_CLASS": "otpd.testing.FakeClient"}):
            phone = fresh_phone()
            self.assertEqual(self.post("send-otp", {"phone_number": phone, "purpose": "login"}).status_code, 200)
            code = get_client().last_code(phone)  # type: ignore[attr-defined]
            answer = self.post("verify-otp", {"phone_number": phone, "otp_code": code, "purpose": "login"})
            self.assertEqual(answer.json(), {"message": "OTP verified successfully", "verified": True})
        with self.assertRaises(Exception):
            daemon().outbox.last_code(phone)


class PlainDjangoTest(OtpdTestCase):
    def test_not_json(self) -> None:
        answer = self.http.post(
            "/api/v1/messaging/send-otp/", "phone=1", content_type="application/json"
        )
        self.assertEqual(answer.status_code, 400)
        if not DRF:
            self.assertEqual(answer.json()["code"], "invalid_json")

    def test_session_callers_need_the_csrf_token(self) -> None:
        # With DRF, SessionAuthentication enforces CSRF the same way.
        http = HttpClient(enforce_csrf_checks=True)
        http.force_login(self.user)
        answer = self.post("send-otp", {"phone_number": fresh_phone(), "purpose": "login"}, http)
        self.assertEqual(answer.status_code, 403)


class TestTwilioTest(OtpdTestCase):
    def test_staff_only(self) -> None:
        self.assertEqual(self.http.get("/api/v1/messaging/test-twilio/").status_code, 403)
        answer = self.client_for(self.staff).get("/api/v1/messaging/test-twilio/")
        self.assertEqual(answer.status_code, 200)
        message = answer.json()["message"]
        self.assertTrue(message.startswith("Test message sent successfully with SID: DEV"))
        self.assertEqual(daemon().outbox.lines()[-1]["to"], "+34600999000")

    def test_management_command_prints_the_answer(self) -> None:
        out = io.StringIO()
        call_command("otpd_test_twilio", stdout=out)
        self.assertRegex(out.getvalue(), r"^Test message sent successfully with SID: DEV\w+\n$")

    def test_management_command_fails_with_otpds_code(self) -> None:
        with self.assertRaises(CommandError) as caught:
            call_command("otpd_test_twilio", "--socket", "/nonexistent/otpd.sock")
        self.assertIn("otpd_unreachable", str(caught.exception))


class ChecksTest(OtpdTestCase):
    def ids(self) -> list[str]:
        found = checks.run_checks(include_deployment_checks=True, tags=["otpd"])
        return [m.id for m in found if m.id]

    def test_deploy_check_reports_an_unreachable_socket(self) -> None:
        with override_settings(OTPD={"SOCKET": "/nonexistent/otpd.sock"}):
            self.assertEqual(self.ids(), ["otpd.E002"])
            with self.assertRaises(Exception) as caught:
                call_command("check", "--deploy", stdout=io.StringIO(), stderr=io.StringIO())
            self.assertIn("otpd.E002", str(caught.exception))
            # A development machine need not run otpd: plain `check` is quiet.
            call_command("check", stdout=io.StringIO())

    def test_deploy_check_warns_about_development_mode(self) -> None:
        self.assertEqual(self.ids(), ["otpd.W002"])

    def test_bad_settings(self) -> None:
        with override_settings(OTPD={"SOKET": "/run/otpd/otpd.sock"}):
            self.assertEqual(self.ids(), ["otpd.E001"])
