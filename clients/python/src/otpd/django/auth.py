"""``BearerTokenAuthentication``: DRF's token authentication under the
``Authorization: Bearer <token>`` header that the seed's frontend sends.

A module of its own: DRF imports ``DEFAULT_AUTHENTICATION_CLASSES`` while it loads its
views, so this class must not live beside a module that imports those views.
"""

from __future__ import annotations

from rest_framework.authentication import TokenAuthentication


class BearerTokenAuthentication(TokenAuthentication):
    keyword = "Bearer"
