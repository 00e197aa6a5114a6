"""IP allowlist values: networks and addresses, parsed and checked, and the allowlist entry.

An entry is a network in CIDR notation whose logins count as lower risk, until it expires
(if it does). The MfaConfig aggregate (`domain.config`) holds the entries and records their
changes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from domain.risk import InvalidValueError

MAX_DESCRIPTION = 256
# The broadest networks an entry may name: an allowlisted network lowers every login's risk
# from it, and `0.0.0.0/0` (or `::ffff:0:0/96`, the same once mapped) would do so for the
# whole internet on one mistaken call.
MIN_PREFIX = {4: 8, 6: 32}

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_network(cidr: str) -> IpNetwork:
    """An IPv4 or IPv6 network in CIDR notation; host bits must be zero (`10.0.0.0/8`, not
    `10.0.0.1/8`). A bare address is a one-address network. An IPv4-mapped IPv6 network
    (`::ffff:192.0.2.0/120`) is its IPv4 network, as `parse_ip` maps its addresses."""
    if "%" in cidr:
        raise InvalidValueError("cidr", "a zone index (`%...`) is not allowed")
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            raise InvalidValueError(
                "cidr", "host bits set: the address must be the network's first address"
            ) from None
        raise InvalidValueError("cidr", "not an IPv4 or IPv6 network in CIDR notation") from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def parse_ip(ip: str) -> IpAddress:
    """An IPv4 or IPv6 address; an IPv4-mapped IPv6 address counts as its IPv4 address."""
    if "%" in ip:
        raise InvalidValueError("ip", "a zone index (`%...`) is not allowed")
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        raise InvalidValueError("ip", "not an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _too_broad(network: IpNetwork) -> bool:
    return network.prefixlen < MIN_PREFIX[network.version]


@dataclass(frozen=True)
class AllowlistEntry:
    """A network whose logins count as lower risk, until it expires (if it does)."""

    entry_id: str
    cidr: str
    description: str
    expires_at: datetime | None
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime

    def network(self) -> IpNetwork:
        return ipaddress.ip_network(self.cidr)

    def is_active(self, at: datetime) -> bool:
        """An entry counts until its expiry (exclusive)."""
        return self.expires_at is None or at < self.expires_at

    def too_broad(self) -> bool:
        """Broader than MIN_PREFIX: stored before that limit, it matches nothing."""
        return _too_broad(self.network())

    def contains(self, address: IpAddress, at: datetime) -> bool:
        """The address is inside this entry's network and the entry has not expired (nor is it
        too broad)."""
        network = self.network()
        return (
            self.is_active(at)
            and not _too_broad(network)
            and address.version == network.version
            and address in network
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape stored in events and shown in the audit log."""
        return {
            "id": self.entry_id,
            "cidr": self.cidr,
            "description": self.description,
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "updated_by": self.updated_by,
            "updated_at": self.updated_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AllowlistEntry:
        expires = data["expires_at"]
        return cls(
            entry_id=str(data["id"]),
            cidr=str(data["cidr"]),
            description=str(data["description"]),
            expires_at=None if expires is None else datetime.fromisoformat(expires),
            created_by=str(data["created_by"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            updated_by=str(data["updated_by"]),
            updated_at=datetime.fromisoformat(data["updated_at"]),
        )


def checked_entry_fields(
    cidr: str, description: str, expires_at: datetime | None, at: datetime
) -> tuple[str, str, datetime | None]:
    """An entry's fields as stored: the network normalised, at most a /8 (IPv4) or a /32
    (IPv6), the expiry in UTC and future."""
    network = parse_network(cidr)
    broadest = MIN_PREFIX[network.version]
    if network.prefixlen < broadest:
        raise InvalidValueError(
            "cidr", f"an IPv{network.version} network may be at most a /{broadest}"
        )
    if len(description) > MAX_DESCRIPTION:
        raise InvalidValueError("description", f"at most {MAX_DESCRIPTION} characters")
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidValueError("expires_at", "must include a time zone")
        if expires_at <= at:
            raise InvalidValueError("expires_at", "must be in the future")
        try:
            expires_at = expires_at.astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:59:59-01:00 is in the year 10000 in UTC
            raise InvalidValueError("expires_at", "must be before the year 10000 in UTC") from None
    return str(network), description, expires_at
