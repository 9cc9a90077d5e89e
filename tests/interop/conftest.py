"""Pytest marker and shared fixtures for the interop tests."""

from __future__ import annotations

from collections.abc import Iterator
import pytest

from .challtestsrv import ChallengePorts, ChallTestSrv, free_port


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pebble: runs real ACME clients against a local Pebble server "
        "(needs the Debian packages pebble, lego, uacme, dehydrated and acme-tiny)",
    )


@pytest.fixture(scope="session")
def challenge_ports() -> ChallengePorts:
    """Pick the challenge ports once, because the ACME server is configured with them."""
    return ChallengePorts(http01=free_port(), tlsalpn01=free_port())


@pytest.fixture(scope="session")
def challtestsrv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChallTestSrv]:
    """A loopback DNS server that resolves every name to 127.0.0.1."""
    with ChallTestSrv(tmp_path_factory.mktemp("challtestsrv")) as server:
        yield server
