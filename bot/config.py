"""`config.toml` → validated settings.

Secrets are never values in the file: a setting that needs one names an environment variable
(`*_env = "NAME"`), and `Settings.secret()` reads it. Every validation error names the key and
what is expected, so a user can fix the file without reading code.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.netguard import parse_allow_entry
from bot.timing import (  # noqa: F401  (parse_duration is part of config's API)
    format_duration,
    parse_digest_schedule,
    parse_duration,
    parse_publish_interval,
    schedule_error,
)

DEFAULT_CONFIG = "config.toml"
SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey", "access_key",
                "credential", "passwd")
# Whole words of a key that name a secret (`key` alone, not `hotkey` or `keep`).
SECRET_NAMES = {"pass", "pwd", "auth", "key"}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ConfigError(Exception):
    """A configuration problem a user can fix; the message says where and how."""


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BriefsConfig(Section):
    folders: list[str] = ["seeds"]
    published_statuses: list[str] = ["published"]
    required_sections: list[str] = []
    max_file_bytes: int = Field(1_048_576, gt=0)


class StateConfig(Section):
    dir: str = ".briefbot"
    database_url_env: str = "BRIEFBOT_DATABASE_URL"


class PublishConfig(Section):
    backfill: Duration | Literal["all"] = timedelta(days=2)
    max_per_run: int = Field(20, ge=1)
    min_gap: Duration = timedelta(0)
    max_attempts: int = Field(5, ge=1)
    retry_base: Duration = timedelta(minutes=1)
    retry_max: Duration = timedelta(hours=6)
    lease: Duration = timedelta(minutes=10)

    @field_validator("backfill", mode="before")
    @classmethod
    def _backfill(cls, value: Any) -> Any:
        return value if value == "all" else parse_duration(value)


class ScheduleConfig(Section):
    publish: str = "10m"
    digest: str = "mon 08:00"
    digest_grace: Duration = timedelta(hours=12)  # a digest missed by longer is not sent late
    bounces: str | None = None  # how often the daemon reads the [bounces] mailbox; unset: never


class EmailConfig(Section):
    """What every email carries: sender, list identity, footer, unsubscribe endpoints."""

    from_address: str = "briefbot digest <digest@briefbot.invalid>"
    reply_to: str | None = None
    list_id: str = "briefbot digest <digest.briefbot.invalid>"
    list_name: str = "The weekly brief"
    postal_address: str = "briefbot, 1 Example Street, 00000 Example City"
    base_url: str = "http://127.0.0.1:8025"  # where `briefbot serve` answers, for links
    unsubscribe_mailto: str | None = None
    # The return path: with it, each recipient's envelope sender is `local+TOKEN@domain`
    # (VERP), so a bounce report names its subscriber and campaign even when mangled.
    bounce_address: str | None = None
    token_secret_env: str = "BRIEFBOT_TOKEN_SECRET"
    period_days: int = Field(7, ge=1)  # a digest covers an ISO week by default
    single_brief_email: bool = False
    max_html_bytes: int = Field(90_000, ge=10_000)
    hard_bounces: int = Field(1, ge=1)  # 5xx replies before an address is marked bounced
    soft_bounces: int = Field(3, ge=1)  # 4xx replies in a row before it is
    # The emails' `<html lang>` and the language of their dates ("en", "en-GB", "de", "ja").
    language: str = "en"

    @field_validator("from_address", "reply_to", "list_id", "list_name", "postal_address",
                     "base_url", "unsubscribe_mailto")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        # These go into headers: a line break would let the file add headers of its own.
        if value is not None and re.search(r"[\r\n\x00]", value):
            raise ValueError("must be one line: remove the line break")
        return value

    @field_validator("from_address", "reply_to")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        from email.utils import parseaddr

        if value is None:
            return value
        name, address = parseaddr(value)
        if not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+", address or "") or (
                "<" in value and not value.rstrip().endswith(">")):
            raise ValueError('expected an address such as "The Weekly Brief '
                             '<digest@example.org>" or digest@example.org')
        return value

    @field_validator("base_url")
    @classmethod
    def _web_address(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s]*)?", value):
            raise ValueError('expected the http(s) address where `briefbot serve` answers, '
                             'such as "https://news.example.org"')
        return value

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        from babel import Locale, UnknownLocaleError

        value = value.strip()
        if not re.fullmatch(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*", value):
            raise ValueError('expected a language code such as "en", "en-GB", "de" or "ja"')
        try:
            Locale.parse(value.replace("-", "_"))
        except (UnknownLocaleError, ValueError):
            raise ValueError(f"{value!r} is not a language with known date formats; write "
                             'a code such as "en", "en-GB", "de" or "ja"') from None
        return value.replace("_", "-")

    @field_validator("bounce_address")
    @classmethod
    def _bounce_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        local, at, domain = value.strip().removeprefix("mailto:").rpartition("@")
        if (not at or not local or not domain or "+" in local or len(local) > 30
                or not re.fullmatch(r"[A-Za-z0-9._-]+", local)
                or not re.fullmatch(r"[A-Za-z0-9.-]+\.[A-Za-z0-9-]+", domain)):
            raise ValueError(
                'expected a plain address such as "bounce@example.org" (no "+" and at most '
                "30 characters before the @: briefbot adds +TOKEN, and the whole part before "
                "the @ must stay within 64 characters)")
        return f"{local}@{domain.lower()}"


class WebConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(8025, ge=0, le=65535)
    subscribe_form: bool = True
    # The live gallery shows drafts, embargoed briefs and paths: off unless asked for, and then
    # only at /preview/TOKEN/, the token read from this variable.
    preview: bool = False
    preview_token_env: str = "BRIEFBOT_PREVIEW_TOKEN"
    # Provider webhooks (POST /webhooks/mailgun, /webhooks/postmark): off unless named.
    mailgun_signing_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    postmark_user_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    postmark_password_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    sendgrid_public_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Amazon SES through SNS: the topics whose notifications are believed (POST /webhooks/ses),
    # and where SNS signing certificates and subscription links may come from.
    ses_topic_arns: list[str] = []
    sns_url_pattern: str = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/"

    @field_validator("sns_url_pattern")
    @classmethod
    def _sns_pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a regular expression: {error}") from None
        if not value.startswith("^https://"):
            raise ValueError('must start with "^https://": certificates come over HTTPS only')
        return value


class ImagesConfig(Section):
    """Hero images: where a brief's `image:` may come from, and how long a download may take."""

    # Hosts (`cms.example`, `*.intranet.example`, `cms.example:8443`), addresses or networks
    # (`10.0.0.0/8`) an image URL may reach although they are not public addresses.
    allow_hosts: list[str] = []
    # Folders (besides the brief folders) a local `image:` path may point into.
    folders: list[str] = []
    timeout: Duration = timedelta(seconds=30)  # for a whole download, redirects included
    max_bytes: int = Field(20_000_000, gt=0)

    @field_validator("allow_hosts")
    @classmethod
    def _allow_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_allow_entry(entry)
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("expected a positive duration such as \"30s\"")
        return value


class BouncesConfig(Section):
    """The mailbox `briefbot bounces fetch` reads: bounce reports, complaints, unsubscribe mail."""

    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)  # default by security: 993 or 143
    security: Literal["tls", "starttls"] = "tls"  # IMAPS, or STARTTLS on the plain port
    user: str | None = None
    password_env: str = Field("BRIEFBOT_BOUNCES_PASSWORD", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    folder: str = "INBOX"
    processed_folder: str = "Processed"  # created when missing; nothing is ever deleted
    ca_file: str | None = None
    verify_certificates: bool = True
    timeout: Duration = timedelta(seconds=60)
    max_messages: int = Field(1000, ge=1)  # per fetch; the rest waits for the next
    max_message_bytes: int = Field(10_000_000, ge=10_000)  # larger ones are left and listed

    @model_validator(mode="after")
    def _folders(self) -> BouncesConfig:
        if self.folder == self.processed_folder:
            raise ValueError("bounces.processed_folder must differ from bounces.folder")
        return self


class ChannelConfig(BaseModel):
    """Common settings of a channel instance; the rest belong to its adapter."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str
    enabled: bool = True
    unknown_policy: Literal["skip", "resend"] | None = None  # None: the adapter's default
    max_per_run: int | None = Field(None, ge=1)
    min_gap: Duration | None = None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Config(Section):
    timezone: str = "UTC"
    templates: str = "templates"
    briefs: BriefsConfig = BriefsConfig()
    state: StateConfig = StateConfig()
    publish: PublishConfig = PublishConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    email: EmailConfig = EmailConfig()
    web: WebConfig = WebConfig()
    images: ImagesConfig = ImagesConfig()
    bounces: BouncesConfig = BouncesConfig()
    channels: dict[str, ChannelConfig] = {}

    @model_validator(mode="after")
    def _schedules(self) -> Config:
        try:
            parse_publish_interval(self.schedule.publish)
        except ValueError as error:
            raise ValueError(f"schedule.publish: {error}") from None
        try:
            parse_digest_schedule(self.schedule.digest)
        except ValueError as error:
            raise ValueError(schedule_error(self.schedule.digest, error)) from None
        if self.schedule.bounces is not None:
            try:
                parse_publish_interval(self.schedule.bounces)
            except ValueError as error:
                raise ValueError(f"schedule.bounces: {error}") from None
            if not (self.bounces.host and self.bounces.user):
                raise ValueError("schedule.bounces is set, but bounces.host and bounces.user "
                                 "are not: say which mailbox to read, or unset it")
        return self

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f'expected an IANA time zone such as "Europe/London", got {value!r}'
            ) from None
        return value


class Settings:
    """A loaded configuration with its paths resolved against the config file's folder."""

    def __init__(self, config: Config, path: Path | None):
        self.config = config
        self.path = path
        self.root = path.parent if path else Path.cwd()

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.config.timezone)

    def resolve(self, value: str | Path) -> Path:
        return (self.root / Path(value).expanduser()).resolve()

    @property
    def brief_folders(self) -> list[Path]:
        return [self.resolve(folder) for folder in self.config.briefs.folders]

    @property
    def image_folders(self) -> list[Path]:
        """Where a local hero image may live: the brief folders and `images.folders`."""
        return self.brief_folders + [self.resolve(folder) for folder in self.config.images.folders]

    @cached_property  # resolved once: every message's unsubscribe token signs with it
    def state_dir(self) -> Path:
        return self.resolve(self.config.state.dir)

    @property
    def database_url(self) -> str:
        url = os.environ.get(self.config.state.database_url_env, "").strip()
        return url or f"sqlite:///{self.state_dir / 'ledger.sqlite3'}"

    @staticmethod
    def secret(env_name: str, *, what: str) -> str:
        """Read a secret from the environment; the error names the variable, never a value."""
        value = os.environ.get(env_name, "")
        if not value:
            raise ConfigError(f"{what}: environment variable {env_name} is not set; export it")
        return value

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as plain data, safe to print."""
        data = _as_written(self.config.model_dump())
        data["state"]["database_url"] = redact_url(self.database_url)
        return data


def _as_written(value: Any) -> Any:
    """Plain data with durations as a user writes them (`12h`, not `PT12H`)."""
    if isinstance(value, dict):
        return {k: _as_written(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_written(v) for v in value]
    return format_duration(value) if isinstance(value, timedelta) else value


def config_source(settings: Settings) -> str:
    """How error messages name the configuration: its file."""
    return str(settings.path) if settings.path else "the configuration"


def redact_url(url: str) -> str:
    """`url` with every password form masked: `user:pw@`, `:pw@` (no user), a password with an
    unencoded `@` in it, and `?password=` style query parameters."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    at = rest.rfind("@")
    if at != -1:
        user, colon, _ = rest[:at].partition(":")
        if colon:
            rest = f"{user}:***@{rest[at + 1:]}"
    rest = re.sub(r"(?i)([?&](?:password|passwd|pass|pwd|sslpassword|secret)=)[^&#]*",
                  r"\1***", rest)
    return f"{scheme}://{rest}"


def format_errors(source: str, error: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    """One line per problem: the file, the dotted key (under `prefix`), what is expected."""
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in (*prefix, *item["loc"]))
        kind = item["type"]
        if not key:
            lines.append(f"{source}: {item['msg'].removeprefix('Value error, ')}")
        elif kind == "extra_forbidden":
            lines.append(f"{source}: unknown key `{key}`; remove it or check its spelling")
        elif kind == "missing":
            lines.append(f"{source}: `{key}` is required")
        elif key.endswith("_env") and kind == "string_pattern_mismatch":
            # Never echo it: a secret's value pasted where its variable's name belongs.
            lines.append(f"{source}: `{key}` names an environment variable, such as "
                         '"SMTP_PASSWORD"; write the name there and export the value')
        else:
            got = item.get("input")
            message = item["msg"].removeprefix("Value error, ")
            shown = "" if isinstance(got, dict) or "got " in message else f" (got {got!r})"
            lines.append(f"{source}: `{key}`: {message}{shown}")
    return "\n".join(lines)


def _looks_secret(key: str) -> bool:
    lowered = str(key).lower()
    words = set(re.split(r"[^a-z0-9]+", lowered))
    return bool(words & SECRET_NAMES) or any(word in lowered for word in SECRET_WORDS)


def _refuse_inline_secrets(source: str, data: Any, prefix: str = "") -> None:
    """No secret values in the file, at any depth (tables, arrays of tables), and every
    `*_env` names a variable: a pasted secret is refused without being echoed."""
    items = data.items() if isinstance(data, dict) else (
        (f"[{n}]", v) for n, v in enumerate(data)) if isinstance(data, list) else ()
    for key, value in items:
        where = f"{prefix}{key}" if not str(key).startswith("[") else f"{prefix.rstrip('.')}{key}"
        name = str(key)
        if isinstance(value, dict | list):
            _refuse_inline_secrets(source, value, f"{where}.")
        elif name.endswith("_env"):
            if not isinstance(value, str) or not ENV_NAME.fullmatch(value):
                raise ConfigError(
                    f"{source}: `{where}` names an environment variable, such as "
                    f'"SMTP_PASSWORD"; write the name there and export the value')
        elif _looks_secret(name) and value not in ("", None):
            raise ConfigError(
                f"{source}: `{where}` looks like a secret; secrets never go in the config file. "
                f'Write `{name}_env = "SOME_VARIABLE"` and export SOME_VARIABLE instead'
            )


def parse_config(data: dict[str, Any], source: str = DEFAULT_CONFIG) -> Config:
    _refuse_inline_secrets(source, data)
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_errors(source, error)) from None


def load_settings(path: str | Path | None = None) -> Settings:
    """Load `path`, else `$BRIEFBOT_CONFIG`, else `./config.toml`. With none of them there is
    nothing to run: built-in defaults have no channel, so running on them would do nothing."""
    chosen = path or os.environ.get("BRIEFBOT_CONFIG")
    candidate = Path(chosen) if chosen else Path(DEFAULT_CONFIG)
    if not candidate.exists():
        if chosen:
            how = "--config" if path else "$BRIEFBOT_CONFIG"
            raise ConfigError(f"{candidate}: no such configuration file (from {how})")
        raise ConfigError(f"no configuration: no --config, no $BRIEFBOT_CONFIG and no "
                          f"{DEFAULT_CONFIG} in {Path.cwd()}; run briefbot from the folder "
                          f"that holds {DEFAULT_CONFIG}, or give --config PATH")
    if not candidate.is_file():
        raise ConfigError(f"{candidate}: not a file; give the path of a TOML configuration")
    try:
        data = tomllib.loads(candidate.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{candidate}: not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{candidate}: cannot read it ({error.strerror})") from None
    _load_dotenv(candidate.parent)
    return Settings(parse_config(data, str(candidate)), candidate.resolve())


def _load_dotenv(folder: Path) -> None:
    """Secrets may also live in a `.env` next to the config (never committed)."""
    env_file = folder / ".env"
    if env_file.is_file():
        from dotenv import load_dotenv

        load_dotenv(env_file, override=False)
