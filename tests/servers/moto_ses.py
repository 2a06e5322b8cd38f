"""Amazon SES on loopback: moto's server (`moto.server.ThreadedMotoServer`, a real
implementation of the SES API nobody here wrote) on 127.0.0.1 and a free port.

moto 5.2 serves SES v2's `SendEmail` (raw and simple content) but answers 404 to `GetAccount`,
`CreateEmailTemplate` and `SendBulkEmail`. `Sesv2Bridge` serves those three from the SES v2 API
reference (summarised in tests/data/ses-v2-api.md) on top of moto's own SES backend: the
sender must be an identity verified in moto, named templates are moto's, each destination is
sent through moto's `send_email` (its address checks, its recipient limit, its store of sent
messages), and the quota is moto's except for the send rate, which a test sets (moto's fixed
1 message/s would make every test crawl).

Tests read what moto received from `/moto-api/data.json` (`messages()`), and can make SES
answer as it does under load: `throttle_next` (429 TooManyRequestsException), `refuse`
(a destination rejected on its own), `slow_next` (the work is done, the answer comes after
the client's read timeout).
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from typing import Any

import requests
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

ACCOUNT = "123456789012"  # moto's default account
REGION = "eu-west-1"
MAX_BULK = 50  # "BulkEmailEntries ... Array Members: Maximum number of 50 items"


def _error(status: int, kind: str, message: str) -> Response:
    """An SES v2 error as the REST-JSON protocol carries it (botocore reads the type header)."""
    return Response(json.dumps({"message": message}), status=status,
                    headers={"x-amzn-ErrorType": kind, "Content-Type": "application/json"})


class Sesv2Bridge:
    """WSGI middleware in front of moto: the SES v2 operations moto lacks, and test controls."""

    def __init__(self, app: Any, region: str):
        self.app = app
        self.region = region
        self.lock = threading.Lock()
        self.max_send_rate = 1000.0
        self.throttled = 0
        self.slow: list[float] = []
        self.refused: dict[str, str] = {}  # address → SES status
        self.calls: list[tuple[str, str]] = []  # (method, path) of every SES request
        self.bulk_calls: list[dict[str, Any]] = []  # each SendBulkEmail request as received
        self.bulk_sent: list[dict[str, Any]] = []  # each destination it sent: id, headers, parts

    def backend(self) -> Any:
        from moto.ses.models import ses_backends

        return ses_backends[ACCOUNT][self.region]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)  # moto reads the body again
        request = Request(environ)
        path = request.path
        body = json.loads(raw) if raw.startswith(b"{") else {}
        ses = path.startswith("/v2/email/")
        with self.lock:
            if ses:
                self.calls.append((request.method, path))
            throttled = ses and self.throttled > 0
            if throttled:
                self.throttled -= 1
            delay = self.slow.pop(0) if ses and self.slow and request.method == "POST" else 0
        if throttled:
            return _error(429, "TooManyRequestsException", "Maximum sending rate exceeded.")(
                environ, start_response)
        response = None
        if path == "/v2/email/account" and request.method == "GET":
            response = self.get_account()
        elif path == "/v2/email/templates" and request.method == "POST":
            response = self.create_template(body)
        elif path == "/v2/email/outbound-bulk-emails" and request.method == "POST":
            response = self.send_bulk(body)
        elif path == "/v2/email/outbound-emails" and request.method == "POST":
            response = self.refusal(body)
        if delay:
            # Let moto do the work first, then answer too late: an unknown outcome.
            done = Response.from_app(response or self.app, environ, buffered=True)
            time.sleep(delay)
            return done(environ, start_response)
        return (response or self.app)(environ, start_response)

    # -- the operations moto 5.2 lacks ------------------------------------------------------

    def get_account(self) -> Response:
        quota = self.backend().get_send_quota()
        return Response(json.dumps({
            "SendQuota": {"Max24HourSend": float(quota.max24_hour_send),
                          "MaxSendRate": self.max_send_rate,
                          "SentLast24Hours": float(quota.sent_last24_hours)},
            "SendingEnabled": True, "ProductionAccessEnabled": True,
            "EnforcementStatus": "HEALTHY",
        }), content_type="application/json")

    def create_template(self, body: dict[str, Any]) -> Response:
        name = body.get("TemplateName")
        content = body.get("TemplateContent") or {}
        if not name:
            return _error(400, "BadRequestException", "TemplateName is required")
        if name in self.backend().templates:
            return _error(400, "AlreadyExistsException", f"Template {name} already exists")
        self.backend().add_template({"template_name": name,
                                     "subject_part": content.get("Subject", ""),
                                     "html_part": content.get("Html", ""),
                                     "text_part": content.get("Text", "")})
        return Response("{}", content_type="application/json")

    def refusal(self, body: dict[str, Any]) -> Response | None:
        """A raw `SendEmail` to a refused address: 400 MessageRejected, as SES answers."""
        addresses = (body.get("Destination") or {}).get("ToAddresses") or []
        for address in addresses:
            if address in self.refused:
                return _error(400, "MessageRejected", f"Address blocked: {address}")
        return None

    def send_bulk(self, body: dict[str, Any]) -> Response:
        from moto.ses.template import parse_template

        self.bulk_calls.append(body)
        entries = body.get("BulkEmailEntries") or []
        if not entries or len(entries) > MAX_BULK:
            return _error(400, "BadRequestException",
                          f"BulkEmailEntries must have 1 to {MAX_BULK} members")
        source = body.get("FromEmailAddress") or ""
        backend = self.backend()
        if not backend._is_verified_address(source):
            return _error(400, "MessageRejected", f"Email address is not verified: {source}")
        template = (body.get("DefaultContent") or {}).get("Template") or {}
        content = template.get("TemplateContent")
        if content is None:
            stored = backend.templates.get(template.get("TemplateName") or "")
            if stored is None:
                return _error(404, "NotFoundException", "Template does not exist")
            content = {"Subject": stored["subject_part"], "Html": stored["html_part"],
                       "Text": stored["text_part"]}
        defaults = json.loads(template.get("TemplateData") or "{}")
        results = []
        for entry in entries:
            destination = entry.get("Destination") or {}
            replacement = ((entry.get("ReplacementEmailContent") or {})
                           .get("ReplacementTemplate") or {}).get("ReplacementTemplateData")
            data = {**defaults, **json.loads(replacement or "{}")}
            refused = next((self.refused[a] for a in destination.get("ToAddresses") or []
                            if a in self.refused), None)
            if refused is not None:
                results.append({"Status": refused, "Error": "Address blocked"})
                continue
            parts = {k: parse_template(content.get(k) or "", data)
                     for k in ("Subject", "Html", "Text")}
            try:
                message = backend.send_email(source, parts["Subject"],
                                             parts["Html"] or parts["Text"], destination)
            except Exception as error:  # moto's own refusal of this destination
                results.append({"Status": "INVALID_PARAMETER"
                                if type(error).__name__ == "InvalidParameterValue"
                                else "MESSAGE_REJECTED", "Error": str(error)})
                continue
            self.bulk_sent.append({"MessageId": message.id, "Destination": destination,
                                   "Headers": [*(template.get("Headers") or []),
                                               *(entry.get("ReplacementHeaders") or [])],
                                   **parts})
            results.append({"Status": "SUCCESS", "MessageId": message.id})
        return Response(json.dumps({"BulkEmailEntryResults": results}),
                        content_type="application/json")


class MotoSes(ThreadedMotoServer):
    """moto's threaded server on 127.0.0.1 (a free port), with `Sesv2Bridge` in front."""

    def __init__(self, region: str = REGION):
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.region = region
        self.bridge = Sesv2Bridge(DomainDispatcherApplication(create_backend_app), region)

    def _server_entry(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = make_server(self._ip_address, self._port, self.bridge, True,
                                   request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def client(self) -> Any:
        import boto3

        return boto3.client("sesv2", region_name=self.region, endpoint_url=self.url,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def reset(self) -> None:
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()
        bridge = self.bridge
        with bridge.lock:
            bridge.throttled, bridge.slow, bridge.max_send_rate = 0, [], 1000.0
            bridge.refused.clear()
            bridge.calls.clear()
            bridge.bulk_calls.clear()
            bridge.bulk_sent.clear()

    def verify(self, identity: str) -> None:
        """Verify a sender domain or address, through SES v2's own `CreateEmailIdentity`."""
        self.client().create_email_identity(EmailIdentity=identity)

    def messages(self) -> dict[str, list[dict[str, Any]]]:
        """What moto stored as sent, by kind (`RawMessage`, `Message`, ...)."""
        data = requests.get(f"{self.url}/moto-api/data.json", timeout=10).json()
        return {kind: list(items) for kind, items in (data.get("ses") or {}).items()}

    def raw_messages(self) -> list[dict[str, Any]]:
        return self.messages().get("RawMessage", [])

    def calls(self, method: str, path: str) -> int:
        with self.bridge.lock:
            return self.bridge.calls.count((method, path))

    # -- failures on demand -----------------------------------------------------------------

    def throttle_next(self, times: int = 1) -> None:
        with self.bridge.lock:
            self.bridge.throttled += times

    def slow_next(self, seconds: float) -> None:
        with self.bridge.lock:
            self.bridge.slow.append(seconds)

    def refuse(self, address: str, status: str = "MESSAGE_REJECTED") -> None:
        with self.bridge.lock:
            self.bridge.refused[address] = status

    def set_send_rate(self, rate: float) -> None:
        self.bridge.max_send_rate = rate
