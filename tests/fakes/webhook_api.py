"""A fake webhook receiver on loopback, answering like the receivers the webhook adapter targets:
a generic endpoint (`/hook/...`: 204, no body), Slack incoming webhooks (`/services/...`: 200
`ok`), Discord webhooks (`/api/webhooks/<id>/<token>`: 204, or the created message with
`?wait=true`). It keeps every JSON body it accepted, with the request that carried it.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from dataclasses import dataclass
from typing import Any

from tests.fakes.server import FakeApi, Reply, Request, route


@dataclass
class Delivery:
    path: str
    payload: dict[str, Any]
    request: Request

    @property
    def idempotency_key(self) -> str | None:
        return self.request.header("idempotency-key")

    def signed_with(self, secret: str) -> bool:
        """True if `X-Briefbot-Signature` is the HMAC-SHA256 of the exact body bytes."""
        expected = hmac.new(secret.encode(), self.request.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.request.header("x-briefbot-signature") or "",
                                   f"sha256={expected}")


class FakeWebhook(FakeApi):
    def __init__(self) -> None:
        super().__init__()
        self.deliveries: list[Delivery] = []
        self._ids = itertools.count(1300000000000000000)

    def _accept(self, request: Request) -> Delivery | Reply:
        if not (request.header("content-type") or "").startswith("application/json"):
            return Reply(415, {"error": "expected application/json"})
        try:
            payload = request.json()
        except ValueError:
            return Reply(400, {"error": "invalid JSON"})
        delivery = Delivery(request.path, payload, request)
        self.deliveries.append(delivery)
        return delivery

    @route("POST", r"/hook/.+")
    def generic(self, request: Request) -> Reply:
        accepted = self._accept(request)
        return accepted if isinstance(accepted, Reply) else Reply(204)

    @route("POST", r"/services/[^/]+/[^/]+/[^/]+")
    def slack(self, request: Request) -> Reply:
        accepted = self._accept(request)
        if isinstance(accepted, Reply):
            return Reply(400, "invalid_payload")
        if not accepted.payload.get("text") and not accepted.payload.get("blocks"):
            self.deliveries.remove(accepted)
            return Reply(400, "no_text")
        return Reply(200, "ok")

    @route("POST", r"/api/webhooks/(?P<hook_id>\d+)/(?P<token>[^/]+)")
    def discord(self, request: Request, hook_id: str, token: str) -> Reply:
        accepted = self._accept(request)
        if isinstance(accepted, Reply):
            return accepted
        if request.query.get("wait") != ["true"]:
            return Reply(204)
        message_id = str(next(self._ids))
        return Reply(200, {"id": message_id, "type": 0, "channel_id": "1200000000000000000",
                           "webhook_id": hook_id, "content": accepted.payload.get("content"),
                           "embeds": accepted.payload.get("embeds", [])})
