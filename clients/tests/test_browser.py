"""The seed's flow in a real browser: otpd (``--dev``), the example Django project
(examples/django) and headless Chromium (Debian's, driven by Playwright).

A person signs in, types a number, clicks "Send code", types the code that otpd wrote
to its outbox, clicks "Verify" and reads "Phone number verified successfully!"; a
wrong code and a rate limit show their errors. Screenshots go to target/.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from otpd.testing import DevDaemon
from support import REPO, otpd_binary

PROJECT = REPO / "examples" / "django"
SHOTS = REPO / "target" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Chromium as root needs --no-sandbox; the rest keeps it off the network and quiet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
USER, PASSWORD = "ana", "a-long-test-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def otpd() -> Iterator[DevDaemon]:
    # Two codes per number an hour: the third send shows the rate limit.
    with DevDaemon({"limits": {"send_per_phone": "2/1h"}}, binary=otpd_binary()) as d:
        yield d


@pytest.fixture(scope="module")
def site(otpd: DevDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {
        **os.environ,
        "OTPD_SOCKET": otpd.socket,
        "DJANGO_DB": str(tmp_path_factory.mktemp("django") / "db.sqlite3"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }

    def manage(*args: str) -> None:
        subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT, env=env,
                       check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)

    manage("migrate", "--noinput")
    manage("shell", "-c", "from django.contrib.auth.models import User; "
           f"User.objects.create_user({USER!r}, password={PASSWORD!r})")
    port = free_port()
    log = open(tmp_path_factory.mktemp("django-log") / "runserver.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=PROJECT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None, Path(log.name).read_text()
            assert time.monotonic() < deadline, "runserver did not listen within 30 s"
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(10)
    log.close()


@pytest.fixture(scope="module")
def browser_page(site: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium", pytrace=False)
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 800, "height": 600},
        )
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(15_000)
        page.goto(site + "/")
        # Not signed in: the page sends the person to the login form first.
        page.fill("#id_username", USER)
        page.fill("#id_password", PASSWORD)
        page.click("#sign-in")
        expect(page.locator("h1")).to_have_text("Verify your phone number")
        yield page
        context.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_a_person_verifies_their_phone(browser_page: Page, otpd: DevDaemon) -> None:
    page = browser_page
    page.fill("#phone", "+34 600 55 00 01")
    page.click("#send")
    status = page.locator("#status")
    expect(status).to_have_text("OTP sent successfully: check your messages.")
    code = otpd.outbox.last_code("+34600550001")
    wrong = "".join(str((int(c) + 1) % 10) for c in code)
    page.fill("#code", wrong)
    page.click("#verify")
    expect(status).to_have_text("Invalid OTP code (4 attempts remaining)")
    expect(status).to_have_class("error")
    shot(page, "wrong-code")
    page.fill("#code", code)
    page.click("#verify")
    expect(status).to_have_text("Phone number verified successfully!")
    expect(status).to_have_class("ok")
    shot(page, "verified")
    # The daemon saw the signed-in user's id, from the Bearer token.
    events = otpd.client.audit(phone="+34600550001")
    assert {e.user_id for e in events} == {"1"}
    assert [e.event for e in events][0] == "verified"


def test_a_rate_limit_says_when_to_try_again(browser_page: Page) -> None:
    page = browser_page
    page.fill("#phone", "+34600550002")
    status = page.locator("#status")
    for _ in range(2):
        page.click("#send")
        expect(status).to_have_text("OTP sent successfully: check your messages.")
        page.evaluate("document.getElementById('status').textContent = ''")
    page.click("#send")
    expect(status).to_have_text(re.compile(r"^Too many requests\. Try again in \d+ seconds\.$"))
    expect(status).to_have_class("error")
    shot(page, "rate-limited")


def test_chromium_is_debians(browser_page: Page) -> None:
    # Playwright downloads no browser here: the one it drives is the system's.
    assert shutil.which("chromium") is not None
    assert "HeadlessChrome" in browser_page.evaluate("navigator.userAgent")
