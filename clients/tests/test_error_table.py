"""The docs' error table, docs/openapi.json and the Python package's exceptions name the
same stable codes with the same statuses."""

from __future__ import annotations

import json
import re

import pytest

import otpd
from otpd.errors import _BY_CODE
from support import ERROR_TABLE_DOC, OPENAPI

ROW = re.compile(r"^\|\s*(\d{3})\s*\|\s*`([a-z_0-9]+)`\s*\|")


def table() -> set[tuple[int, str]]:
    """(status, code) rows of the "Errors" section's table."""
    text = ERROR_TABLE_DOC.read_text(encoding="utf-8")
    section = re.search(r"^#+ Errors\s*$(.*?)(?=^#+ )", text, re.M | re.S)
    assert section, f"no Errors section in {ERROR_TABLE_DOC}"
    rows = {(int(m[1]), m[2]) for line in section[1].splitlines() if (m := ROW.match(line))}
    assert len(rows) > 30, f"the Errors table of {ERROR_TABLE_DOC} has only {len(rows)} rows"
    return rows


def documented() -> set[tuple[int, str]]:
    doc = json.loads(OPENAPI.read_text(encoding="utf-8"))
    found: set[tuple[int, str]] = set()
    responses = [op["responses"] for item in doc["paths"].values() for op in item.values()]
    for answers in [*responses, doc["x-otpd-any-route"]]:
        for status, answer in answers.items():
            for media in answer.get("content", {}).values():
                for part in media["schema"].get("allOf", []):
                    for code in part.get("properties", {}).get("code", {}).get("enum", []):
                        found.add((int(status), code))
    return found


def test_the_table_and_the_openapi_document_agree() -> None:
    rows, doc = table(), documented()
    assert sorted(rows - doc) == [], f"in {ERROR_TABLE_DOC.name}'s table, not in openapi.json"
    assert sorted(doc - rows) == [], f"in openapi.json, not in {ERROR_TABLE_DOC.name}'s table"


def test_each_code_has_one_status() -> None:
    codes: dict[str, set[int]] = {}
    for status, code in table():
        codes.setdefault(code, set()).add(status)
    assert {c: s for c, s in codes.items() if len(s) > 1} == {}


# The class each status's codes must land in (or under).
FAMILY = {400: otpd.OtpdError, 403: otpd.Forbidden, 404: otpd.OtpdError, 405: otpd.OtpdError,
          408: otpd.OtpdError, 409: otpd.IdempotencyKeyReused, 413: otpd.OtpdError,
          422: otpd.InvalidRequest, 429: otpd.RateLimited, 502: otpd.ProviderRejected,
          503: otpd.ServiceUnavailable, 507: otpd.ServiceUnavailable}


@pytest.mark.parametrize(("status", "code"), sorted(table()))
def test_the_package_raises_each_code_in_its_family(status: int, code: str) -> None:
    e = otpd.errors.error_for(status, {"error": "x", "code": code, "verified": False}
                              if code.startswith("otp_") or code == "invalid_otp" else
                              {"error": "x", "code": code})
    assert isinstance(e, FAMILY[status]), (code, type(e))
    if status == 400:
        assert isinstance(e, (otpd.InvalidRequest, otpd.VerificationFailed))


def test_the_packages_own_classes_name_documented_codes() -> None:
    client_side = {"otpd_unreachable", "otpd_timeout"}
    codes = {code for _, code in table()}
    assert sorted(set(_BY_CODE) - codes - client_side) == []
