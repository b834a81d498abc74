"""The endpoints as plain Django views: the session's user (Django's own
authentication), CSRF protection as the project configures it, JSON in and out.
``otpd.django.drf`` has the same endpoints for Django REST Framework."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from . import forward
from .conf import otpd_settings


def _respond(answer: forward.Answer) -> JsonResponse:
    response = JsonResponse(answer.body, status=answer.status)
    for name, value in answer.headers.items():
        response[name] = value
    return response


def _refusal(request: HttpRequest, staff: bool = False) -> JsonResponse | None:
    user = getattr(request, "user", None)
    authenticated = bool(user is not None and user.is_authenticated)
    if not authenticated and (staff or not otpd_settings().allow_anonymous):
        return JsonResponse(
            {"error": "Authentication credentials were not provided", "code": "not_authenticated"},
            status=401,
        )
    if staff and not getattr(user, "is_staff", False):
        return JsonResponse(
            {"error": "Only staff may send the test message", "code": "permission_denied"},
            status=403,
        )
    return None


def _json(request: HttpRequest) -> dict[str, Any] | JsonResponse:
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return JsonResponse(
            {"error": "Request body is not a JSON object", "code": "invalid_json"}, status=400
        )
    return data


@require_POST
def send_otp(request: HttpRequest) -> JsonResponse:
    refused = _refusal(request)
    if refused:
        return refused
    data = _json(request)
    if isinstance(data, JsonResponse):
        return data
    return _respond(forward.send_otp(data, forward.user_id_of(request.user)))


@require_POST
def verify_otp(request: HttpRequest) -> JsonResponse:
    refused = _refusal(request)
    if refused:
        return refused
    data = _json(request)
    if isinstance(data, JsonResponse):
        return data
    return _respond(forward.verify_otp(data, forward.user_id_of(request.user)))


@require_GET
def test_twilio(request: HttpRequest) -> JsonResponse:
    # Staff only: it sends a real SMS to the operator's number, at the operator's cost.
    refused = _refusal(request, staff=True)
    if refused:
        return refused
    return _respond(forward.test_twilio())
