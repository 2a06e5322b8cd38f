"""Which network addresses a fetch of a user-supplied URL may reach.

A hero image URL comes from a brief, so whoever writes briefs could otherwise make the bot fetch
from the machine it runs on (127.0.0.1, a database port), the newsroom's private network or the
cloud metadata service (169.254.169.254). `resolve_checked` resolves a host once and refuses
any address that is not public, unless the host (or its address) is on an explicit allow-list;
the caller then connects to exactly the address that was checked, so a DNS answer that changes
between the check and the connection (rebinding) cannot move the fetch elsewhere.

Standard library only: the configuration validates allow-list entries with `parse_allow_entry`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[..., list]

# NAT64 (RFC 6052) embeds an IPv4 address in the last 32 bits; a gateway would reach it.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class AddressRefused(Exception):
    """A host resolved to an address a fetch may not reach; the message says how to allow it."""

    def __init__(self, host: str, address: str, kind: str):
        self.host, self.address, self.kind = host, address, kind
        where = f"is a {kind} address" if host == address else (
            f"resolves to a {kind} address ({address})"
        )
        super().__init__(f"{host} {where}; add it to images.allow_hosts if this is your intranet")


class Unresolvable(Exception):
    """A host name had no address (or the resolver failed)."""


@dataclass(frozen=True)
class AllowEntry:
    """One allow-list entry: a host name (``*.`` for its subdomains) or an IP network, and
    optionally one port."""

    text: str
    host: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    def allows_host(self, host: str, port: int) -> bool:
        if self.host is None or (self.port is not None and self.port != port):
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and host != self.host[2:]
        return host == self.host

    def allows_address(self, address: IPAddress, port: int) -> bool:
        if self.network is None or (self.port is not None and self.port != port):
            return False
        return address.version == self.network.version and address in self.network


def parse_allow_entry(text: str) -> AllowEntry:
    """``intranet.example``, ``*.intranet.example``, ``cms.example:8443``, ``10.1.2.3``,
    ``10.0.0.0/8``, ``fd00::/8``, ``[::1]:8080``; raises ValueError saying what is expected."""
    raw = text.strip()
    expected = (
        f"expected a host name, host:port, IP address, [IPv6]:port or IP network "
        f"such as 10.0.0.0/8, got {text!r}"
    )
    if not raw or "://" in raw or any(c in raw for c in " @?#\\"):
        raise ValueError(expected)
    port: int | None = None
    body = raw
    if body.startswith("["):
        inside, sep, rest = body[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(expected)
        body, port = inside, _port(rest[1:], text) if rest else None
    elif body.count(":") == 1:
        body, _, port_text = body.partition(":")
        port = _port(port_text, text)
    try:
        network = ipaddress.ip_network(body, strict=False)
    except ValueError:
        network = None
    if network is not None:
        if port is not None and network.num_addresses != 1:
            raise ValueError(f"a port goes with one address, not a network, got {text!r}")
        return AllowEntry(text, network=network, port=port)
    host = _normal_host(body)
    labels = host.removeprefix("*.").split(".")
    if "/" in host or "*" in host.removeprefix("*.") or not all(labels):
        raise ValueError(expected)
    return AllowEntry(text, host=host, port=port)


class AllowList:
    """The parsed ``images.allow_hosts``: hosts and networks that may be private."""

    def __init__(self, entries: Iterable[str | AllowEntry] = ()):
        self.entries = tuple(e if isinstance(e, AllowEntry) else parse_allow_entry(e)
                             for e in entries)

    def allows_host(self, host: str, port: int) -> bool:
        host = _normal_host(host)
        return any(entry.allows_host(host, port) for entry in self.entries)

    def allows_address(self, address: IPAddress, port: int) -> bool:
        return any(entry.allows_address(address, port) for entry in self.entries)


def refusal_kind(address: IPAddress) -> str | None:
    """Why a fetch may not reach `address` (``"loopback"``, ``"private"``, …), or None when it
    is a public address. IPv6 forms that carry an IPv4 address are judged by that address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return refusal_kind(embedded)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "non-public"
    return None


def resolve_checked(host: str, port: int, allow: AllowList,
                    *, resolver: Resolver | None = None) -> list[IPAddress]:
    """Every address `host` resolves to, each checked; connect only to these.

    Raises AddressRefused when any address is not public and neither the host nor that address
    is allowed (one bad answer among good ones is refused too: a client may pick any of them),
    Unresolvable when the name has no address.
    """
    name = _normal_host(host)
    resolve = resolver or socket.getaddrinfo
    try:
        infos = resolve(name, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
        raise Unresolvable(f"{name} could not be resolved ({reason})") from None
    addresses: list[IPAddress] = []
    for info in infos:
        literal = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 scope id
        address = ipaddress.ip_address(literal)
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise Unresolvable(f"{name} could not be resolved (no address)")
    if allow.allows_host(name, port):
        return addresses
    for address in addresses:
        kind = refusal_kind(address)
        if kind is not None and not allow.allows_address(address, port):
            raise AddressRefused(name, str(address), kind)
    return addresses


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"expected a port from 1 to 65535 after the colon, got {entry!r}")
    return int(text)
