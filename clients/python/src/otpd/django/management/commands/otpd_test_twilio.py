"""``manage.py otpd_test_twilio``: sends otpd's test message to
``twilio.test_phone_number`` and prints otpd's answer."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from otpd.client import Client
from otpd.django.conf import get_client, otpd_settings
from otpd.errors import OtpdError


class Command(BaseCommand):
    help = "Send the test SMS to otpd's twilio.test_phone_number and print otpd's answer."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--socket", help="otpd's socket (default: settings.OTPD['SOCKET'])")

    def handle(self, *args: Any, **options: Any) -> None:
        socket = options.get("socket")
        client = Client(socket, timeout=otpd_settings().timeout) if socket else get_client()
        try:
            sent = client.test_twilio()
        except OtpdError as e:
            raise CommandError(
                f"{e.code}: {e.message}" + (f" ({e.details})" if e.details else "")
            ) from e
        finally:
            if socket:
                client.close()
        self.stdout.write(sent.message)
