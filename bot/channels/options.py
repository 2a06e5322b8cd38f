"""Each built-in adapter's options as a typed schema, checked when the configuration loads.

This module imports no adapter and no network library, so `briefbot check` can validate every
channel without loading an SDK. A plugin adapter declares its own schema as a class attribute
`Options` (a subclass of `Options` below); one without is checked only for the common keys.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from bot.config import ConfigError, format_errors

#: The name of an environment variable (a secret's value never goes in the file).
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Seconds = Annotated[float, Field(gt=0, le=3600)]
Network = Literal["generic", "x", "mastodon", "bluesky"]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def credentials(self) -> dict[str, str]:
        """Option → the environment variable that must be set before this channel sends."""
        return {}


class AnyOptions(Options):
    """A plugin adapter that declares no schema: its options reach it unchecked."""

    model_config = ConfigDict(extra="allow", frozen=True)


class PostOptions(Options):
    """What every channel that posts a brief accepts."""

    hashtags: Literal["both", "category", "tags", "none"] = "both"
    utm: dict[str, str] = {}
    max_characters: int = Field(500, ge=50, le=100_000)
    characters_reserved_per_url: int = Field(23, ge=0, le=1000)


class OutboxOptions(PostOptions):
    folder: str = "outbox"
    network: Network = "generic"
    posts: bool = True
    digest: bool = True


class SmtpOptions(Options):
    host: str = "localhost"
    port: int | None = Field(None, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username_env: EnvName | None = None
    password_env: EnvName | None = None
    verify_certificates: bool = True
    ca_file: str | None = None
    connections: int = Field(1, ge=1, le=64)
    max_rate: float | None = Field(None, gt=0, le=1e6)
    timeout: Seconds = 60
    envelope_from: str | None = None

    @model_validator(mode="after")
    def _login(self) -> SmtpOptions:
        if bool(self.username_env) != bool(self.password_env):
            raise ValueError("set both username_env and password_env (the names of the "
                             "variables holding the login), or neither")
        return self

    def credentials(self) -> dict[str, str]:
        if not self.username_env or not self.password_env:
            return {}
        return {"username_env": self.username_env, "password_env": self.password_env}


class XOptions(PostOptions):
    api_base: str = "https://api.x.com"
    timeout: Seconds = 30
    api_key_env: EnvName = "X_API_KEY"
    api_secret_env: EnvName = "X_API_SECRET"
    access_token_env: EnvName = "X_ACCESS_TOKEN"
    access_secret_env: EnvName = "X_ACCESS_TOKEN_SECRET"

    def credentials(self) -> dict[str, str]:
        return {"api_key_env": self.api_key_env, "api_secret_env": self.api_secret_env,
                "access_token_env": self.access_token_env,
                "access_secret_env": self.access_secret_env}


class MastodonOptions(PostOptions):
    instance: Annotated[str, StringConstraints(pattern=r"^https?://[^/\s]+")]
    token_env: EnvName = "MASTODON_TOKEN"
    visibility: Literal["public", "unlisted", "private", "direct"] = "public"
    language: str | None = None
    timeout: Seconds = 30
    media_wait: Seconds = 60
    media_poll_interval: Seconds = 1.0

    def credentials(self) -> dict[str, str]:
        return {"token_env": self.token_env}


class BlueskyOptions(PostOptions):
    handle: Annotated[str, StringConstraints(min_length=1)]
    service: str = "https://bsky.social"
    password_env: EnvName = "BLUESKY_APP_PASSWORD"
    embed: Literal["auto", "image", "card"] = "auto"
    langs: str | list[str] = []
    timeout: Seconds = 30

    def credentials(self) -> dict[str, str]:
        return {"password_env": self.password_env}


class WebhookOptions(PostOptions):
    url: str | None = None
    url_env: EnvName | None = None
    secret_env: EnvName | None = None
    shape: Literal["generic", "slack", "discord"] = "generic"
    network: Network = "generic"
    timeout: Seconds = 15

    @model_validator(mode="after")
    def _one_url(self) -> WebhookOptions:
        if bool(self.url) == bool(self.url_env):
            raise ValueError("set either `url` or `url_env` (the name of an environment "
                             "variable holding the URL, for URLs that are secret, such as "
                             "Slack's)")
        return self

    def credentials(self) -> dict[str, str]:
        return {k: v for k, v in (("url_env", self.url_env), ("secret_env", self.secret_env))
                if v}


_DOMAIN_NAME = r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$"


class BatchOptions(Options):
    """What every email channel with a batch endpoint (`bot.channels.batch`) accepts."""

    #: Recipients per call; capped by the provider's own maximum (the default).
    batch_size: int | None = Field(None, ge=1, le=10_000)
    #: Batches in flight at once.
    connections: int = Field(2, ge=1, le=64)
    #: Messages a second across all connections (the provider's sending rate).
    max_rate: float | None = Field(None, gt=0, le=1e6)
    timeout: Seconds = 60


class MailgunOptions(BatchOptions):
    domain: Annotated[str, StringConstraints(pattern=_DOMAIN_NAME)]
    region: Literal["us", "eu"] = "us"
    #: Only for a test server or a proxy; `region` picks Mailgun's own.
    api_base: Annotated[str, StringConstraints(pattern=r"^https?://[^/\s]+")] | None = None
    api_key_env: EnvName = "MAILGUN_API_KEY"
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=10)

    def credentials(self) -> dict[str, str]:
        return {"api_key_env": self.api_key_env}


class PostmarkOptions(BatchOptions):
    token_env: EnvName = "POSTMARK_SERVER_TOKEN"
    #: Postmark's stream for newsletters is a Broadcast stream ("broadcast" on a new server).
    message_stream: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,30}$")] = "broadcast"
    tag: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None = None
    #: Only for a test server or a proxy.
    api_base: Annotated[str, StringConstraints(pattern=r"^https?://[^/\s]+")] = (
        "https://api.postmarkapp.com")

    def credentials(self) -> dict[str, str]:
        return {"token_env": self.token_env}


ConfigurationSet = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class SesOptions(BatchOptions):
    region: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")]
    #: bulk: SendBulkEmail, one template and each recipient's link (50 a call); raw: each
    #: recipient's complete message through SendEmail.
    mode: Literal["bulk", "raw"] = "bulk"
    configuration_set: ConfigurationSet | None = None
    #: Only for a test server, a proxy or a VPC endpoint.
    endpoint_url: Annotated[str, StringConstraints(pattern=r"^https?://[^/\s]+")] | None = None

    def credentials(self) -> dict[str, str]:
        # The standard variables of the AWS SDKs; nothing is read from ~/.aws or the network.
        return {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}


BUILT_IN: dict[str, type[Options]] = {
    "outbox": OutboxOptions, "smtp": SmtpOptions, "x": XOptions,
    "mastodon": MastodonOptions, "bluesky": BlueskyOptions, "webhook": WebhookOptions,
    "mailgun": MailgunOptions, "postmark": PostmarkOptions, "ses": SesOptions,
}


def parse_options(schema: type[Options], name: str, options: dict[str, Any],
                  source: str) -> Options:
    """`options` checked against `schema`, or a ConfigError naming `channels.NAME.KEY` and
    what is expected."""
    try:
        return schema.model_validate(options)
    except ValidationError as error:
        message = format_errors(source, error, ("channels", name))
        if any(item["type"] == "extra_forbidden" for item in error.errors()):
            kind = next((k for k, v in BUILT_IN.items() if v is schema), "these")
            message += f"\n{source}: {kind} channels take: {', '.join(sorted(schema.model_fields))}"
        raise ConfigError(message) from None
