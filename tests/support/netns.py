"""A guard for tests whose WebRTC traffic must stay on this machine."""

from __future__ import annotations

import ipaddress

import ifaddr

ICE_HOST_ADDRESS = ipaddress.ip_address("127.0.0.2")
"""The loopback address that tests/run-in-netns adds for ICE host candidates."""


def assert_loopback_only() -> None:
    """Raise AssertionError unless only loopback addresses exist, 127.0.0.2 among them.

    aioice 0.13 offers every IPv4 address except 127.0.0.1, and every IPv6
    address except ::1 and link-local ones, as an ICE host candidate. Outside
    the namespace of tests/run-in-netns a WebRTC test could therefore send
    packets over a real network interface.
    """
    addresses = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            # ifaddr gives IPv4 as a string and IPv6 as (address, flow, scope).
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            addresses.append((adapter.nice_name, ipaddress.ip_address(text)))

    outside = [
        f"{name} {address}" for name, address in addresses if not address.is_loopback
    ]
    hint = (
        "Run the WebRTC tests through tests/run-in-netns, for example "
        "'tests/run-in-netns .venv/bin/python -m pytest tests', so that ICE "
        "uses only loopback addresses."
    )
    if outside:
        raise AssertionError(
            f"found non-loopback interface addresses {', '.join(outside)}. {hint}"
        )
    if ICE_HOST_ADDRESS not in [address for _, address in addresses]:
        raise AssertionError(f"loopback address {ICE_HOST_ADDRESS} is missing. {hint}")
