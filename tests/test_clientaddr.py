"""The client's address: the TCP peer, or X-Forwarded-For only behind a listed proxy."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cnnlab.app.clientaddr import client_address
from cnnlab.app.settings import Settings


def scope(peer: str, *forwarded: str) -> dict:
    return {"type": "http", "client": (peer, 5000),
            "headers": [(b"x-forwarded-for", f.encode()) for f in forwarded]}


def test_without_trusted_proxies_the_header_is_ignored():
    assert client_address(scope("127.0.0.2", "9.9.9.9")) == "127.0.0.2"


def test_a_header_from_an_untrusted_peer_is_ignored():
    assert client_address(scope("127.0.0.2", "9.9.9.9"), "10.0.0.1") == "127.0.0.2"


def test_behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client():
    # The client may put anything on the left; only what the trusted proxies appended counts.
    assert client_address(scope("10.0.0.1", "6.6.6.6, 203.0.113.7"), "10.0.0.1") == "203.0.113.7"
    assert client_address(scope("10.0.0.1", "6.6.6.6", "203.0.113.7, 10.0.0.2"), "10.0.0.0/24") == "203.0.113.7"


def test_a_proxy_that_forwards_garbage_or_nothing_is_the_client():
    assert client_address(scope("10.0.0.1", "not-an-address"), "10.0.0.1") == "10.0.0.1"
    assert client_address(scope("10.0.0.1"), "10.0.0.1") == "10.0.0.1"


def test_no_client_in_the_scope():
    assert client_address({"type": "http", "headers": []}) == "unknown"


def test_a_bad_trusted_proxy_setting_is_refused_at_start():
    with pytest.raises(ValidationError):
        Settings(trusted_proxies="10.0.0.1, nonsense")
    assert Settings(trusted_proxies="10.0.0.1, 192.168.0.0/16").trusted_proxies
