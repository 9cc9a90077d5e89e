"""The direct ACME dispatch matches exactly the paths, and parameters, that Starlette's routes match."""

from __future__ import annotations

import pytest
from starlette.routing import Match

from fleetca.acme.app import AcmeRouter, _RESOURCES, _routes

# Each endpoint is stood in for by its resource path, so a match names what it found.
ENDPOINTS = {path: path for path, _ in _RESOURCES}
PATHS = [
    "/acme/default/directory",
    "/acme/default/new-nonce",
    "/acme/other-ca/new-order",
    "/acme/default/new-account",
    "/acme/default/new-authz",
    "/acme/default/revoke-cert",
    "/acme/default/key-change",
    "/acme/default/account/A1",
    "/acme/default/account/A1/orders",
    "/acme/default/order/O1",
    "/acme/default/order/O1/finalize",
    "/acme/default/authz/Z1",
    "/acme/default/challenge/C1",
    "/acme/default/cert/X1",
    "/acme/default/renewal-info/aKi.c2VyaWFs",
    "/acme/default/directory/",
    "/acme//directory",
    "/acme/default/order//finalize",
    "/acme/default/order/O1/finalize/extra",
    "/acme/default/order",
    "/acme/default/unknown",
    "/acme/default",
    "/acme/",
    "/directory",
    "/pki/ca/default.crt",
    "//acme/default/directory",
]


def starlette_match(path: str) -> tuple[str, dict[str, str]] | None:
    scope = {"type": "http", "path": path, "root_path": "", "method": "POST"}
    for route in _routes(ENDPOINTS):  # type: ignore[arg-type]
        match, child = route.matches(scope)
        if match is Match.FULL:
            return route.endpoint, child["path_params"]  # type: ignore[return-value]
    return None


@pytest.mark.parametrize("path", PATHS)
def test_router_agrees_with_starlette(path: str) -> None:
    router = AcmeRouter(ENDPOINTS)  # type: ignore[arg-type]

    assert router.match(path) == starlette_match(path)


def test_router_finds_every_resource() -> None:
    router = AcmeRouter(ENDPOINTS)  # type: ignore[arg-type]
    matches = [router.match(path) for path in PATHS]
    found = {match[0] for match in matches if match is not None}

    assert found == set(ENDPOINTS)
