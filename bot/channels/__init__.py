"""Channel adapters behind one small interface, found through the `briefbot.channels`
entry-point group. Built-in adapters register the same way as third-party ones, and each is
imported only when a configured channel uses it, so `briefbot --help` loads no network SDK.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points

from bot.channels.base import (
    CannotReconcile,
    Channel,
    ChannelError,
    Message,
    PermanentError,
    Receipt,
    TransientError,
    UnknownOutcome,
)
from bot.channels.networks import declared_network, network_of
from bot.channels.options import BUILT_IN, Options, parse_options
from bot.config import ChannelConfig, ConfigError, Settings, config_source

GROUP = "briefbot.channels"

__all__ = [
    "CannotReconcile",
    "Channel",
    "ChannelError",
    "Message",
    "PermanentError",
    "Receipt",
    "TransientError",
    "UnknownOutcome",
    "available_types",
    "check_channels",
    "missing_credentials",
    "load_channel_class",
    "declared_network",
    "network_of",
    "DryRunSend",
    "forbid_sending",
    "open_channel",
    "open_channels",
]


def available_types() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def load_channel_class(type_name: str) -> type[Channel]:
    found = [ep for ep in entry_points(group=GROUP) if ep.name == type_name]
    if not found:
        known = ", ".join(available_types()) or "none"
        raise ConfigError(
            f"channel type {type_name!r} is not installed (known types: {known}); "
            "fix `type` or install the plugin that provides it"
        )
    cls = found[0].load()
    if not (isinstance(cls, type) and issubclass(cls, Channel)):
        raise ConfigError(f"entry point {type_name!r} does not name a briefbot Channel class")
    return cls


def options_schema(type_name: str) -> type[Options]:
    """The adapter's option schema; built-in ones without importing the adapter."""
    if type_name in BUILT_IN:
        return BUILT_IN[type_name]
    return load_channel_class(type_name).Options


def _parse(name: str, config: ChannelConfig, settings: Settings) -> Options:
    return parse_options(options_schema(config.type), name, config.options,
                         config_source(settings))


def check_channels(settings: Settings) -> None:
    """Every channel's options, checked as the configuration loads: all problems at once.
    A disabled channel of a type that is not installed is left alone."""
    problems = []
    for name, config in settings.config.channels.items():
        if not config.enabled and config.type not in BUILT_IN:
            continue
        try:
            _parse(name, config, settings)
        except ConfigError as error:
            problems.append(str(error))
    if problems:
        raise ConfigError("\n".join(problems))


def missing_credentials(settings: Settings, names: list[str] | None = None) -> list[str]:
    """What keeps the enabled channels (or the named ones) from sending: each unset
    environment variable, named with its `channels.NAME.KEY`. Checked before a run starts,
    so a missing secret fails the start instead of burning deliveries."""
    found = []
    for name, config in settings.config.channels.items():
        if (names is not None and name not in names) or (names is None and not config.enabled):
            continue
        options = _parse(name, config, settings)
        for key, variable in options.credentials().items():
            if not os.environ.get(variable):
                found.append(f"{config_source(settings)}: `channels.{name}.{key}`: environment "
                             f"variable {variable} is not set; export it, or set enabled = "
                             "false for this channel")
    return found


class DryRunSend(RuntimeError):
    """A dry run reached a channel's `send`: a bug in briefbot, never sent."""


def forbid_sending(channel: Channel) -> Channel:
    """Make `channel` unable to reach the outside world: the one guard every dry run goes
    through (`run --dry-run`, `digest send --dry-run`, `preview`). Rendering still works."""

    def refuse(*_args: object, **_kwargs: object) -> object:
        raise DryRunSend(f"dry run: channel {channel.name!r} must not send")

    for name in ("send", "send_email", "send_raw", "send_batch", "reconcile"):
        if hasattr(channel, name):
            setattr(channel, name, refuse)
    channel.dry_run = True
    return channel


def open_channel(name: str, config: ChannelConfig, settings: Settings, *,
                 dry_run: bool = False) -> Channel:
    channel = load_channel_class(config.type)(name, config, settings)
    return forbid_sending(channel) if dry_run else channel


def open_channels(settings: Settings, names: list[str] | None = None, *,
                  dry_run: bool = False) -> dict[str, Channel]:
    """Instantiate the enabled channels (or the named ones) of a configuration; with
    `dry_run`, every one of them is unable to send."""
    channels: dict[str, Channel] = {}
    for name, config in settings.config.channels.items():
        if names is not None and name not in names:
            continue
        if not config.enabled and names is None:
            continue
        channels[name] = open_channel(name, config, settings, dry_run=dry_run)
    if names:
        missing = sorted(set(names) - set(channels))
        if missing:
            raise ConfigError(f"no channel named {', '.join(missing)} in the configuration")
    return channels
