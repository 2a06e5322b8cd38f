"""Which network a channel posts as, from the declarations the channel classes carry
(`bot.network`): its own, or the one an outbox or a webhook stands in for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.config import ConfigError
from bot.network import Network

if TYPE_CHECKING:
    from bot.channels.base import Channel


def declared_network(name: str) -> Network:
    """The declaration of the network called `name`: "generic", or the `network` of the
    channel type of that name (found through its entry point, like any adapter)."""
    from bot.channels import load_channel_class
    from bot.render.post import GENERIC  # on demand: `briefbot --help` loads no templates

    if name == GENERIC.name:
        return GENERIC
    network = load_channel_class(name).network
    if network is None:
        raise ConfigError(f"channel type {name!r} declares no network to post as; use "
                          '`network = "generic"` or a social channel type')
    return network


def network_of(channel: Channel) -> Network:
    """What `channel` posts as: its own network, the one it stands in for (an outbox or a
    webhook with `network = "x"`), else a generic post."""
    if channel.network is not None:
        return channel.network
    return declared_network(str(channel.options.get("network") or "generic"))
