"""The endpoints as Django REST Framework views: the project's
``DEFAULT_AUTHENTICATION_CLASSES`` (token, session, JWT, ...) decide who the user is;
``otpd.django.auth.BearerTokenAuthentication`` is DRF's token authentication under
the ``Authorization: Bearer`` header the seed's frontend sends."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import AllowAny, BasePermission, IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import forward
from .conf import otpd_settings


def _respond(answer: forward.Answer) -> Response:
    return Response(answer.body, status=answer.status, headers=answer.headers)


class _Forwarding(APIView):
    def get_permissions(self) -> list[BasePermission]:
        if otpd_settings().allow_anonymous:
            return [AllowAny()]
        return [IsAuthenticated()]

    def _data(self, request: Request) -> dict[str, Any]:
        data = request.data
        return dict(data.items()) if hasattr(data, "items") else {}


class SendOtpView(_Forwarding):
    def post(self, request: Request) -> Response:
        return _respond(forward.send_otp(self._data(request), forward.user_id_of(request.user)))


class VerifyOtpView(_Forwarding):
    def post(self, request: Request) -> Response:
        return _respond(forward.verify_otp(self._data(request), forward.user_id_of(request.user)))


class TestTwilioView(APIView):
    # Staff only: it sends a real SMS to the operator's number, at the operator's cost.
    permission_classes = [IsAdminUser]
    __test__ = False  # not a pytest class

    def get(self, request: Request) -> Response:
        return _respond(forward.test_twilio())
