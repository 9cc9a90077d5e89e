"""ARI certIDs, suggested windows, newOrder "replaces" and the operator actions, without a server."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import insert

from fleetca.acme.problems import AcmeProblem
from fleetca.acme.renewal_info import (
    IMMEDIATE_WIDTH,
    cert_id,
    check_replaces,
    mark_replaced,
    parse_cert_id,
    suggested_window,
)
from fleetca.domain import Identifier, IssuedCertificate
from fleetca.revocation.operator import Selection, SelectionError, normalize_serial, renew_now, revoke
from fleetca.storage.tables import orders
from tests.revocation.conftest import START, LocalCa


def test_cert_id_keeps_leading_zero_byte() -> None:
    # The example certID of RFC 9773: serial 0x0087654321 keeps its leading zero byte.
    assert cert_id(bytes.fromhex("69885b6b87464041e1b37b847ba0ae2cde01c8d4"), 0x87654321) == \
        "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_parse_cert_id_cases() -> None:
    key = bytes.fromhex("69885b6b87464041e1b37b847ba0ae2cde01c8d4")
    cases = {
        "ok/der-serial": ("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE", (key, 0x87654321)),
        "ok/serial-without-leading-zero": ("aYhba4dGQEHhs3uEe6CuLN4ByNQ.h2VDIQ", (key, 0x87654321)),
        "ok/padded": ("aYhba4dGQEHhs3uEe6CuLN4ByNQ=.AIdlQyE=", (key, 0x87654321)),
    }
    for name, (text, expected) in cases.items():
        assert parse_cert_id(text) == expected, name
    for name, text in {"fail/no-dot": "aYhba4dGQEHhs3uEe6CuLN4ByNQ", "fail/two-dots": "a.b.c",
                       "fail/not-base64url": "aY+b.AIdlQyE", "fail/zero-serial": "aYhb.AA",
                       "fail/empty-key": ".AIdlQyE"}.items():
        with pytest.raises(AcmeProblem) as raised:
            parse_cert_id(text)
        assert raised.value.type == "malformed", name


def certificate_at(serial: str) -> IssuedCertificate:
    return IssuedCertificate(id=serial, serial=serial, ca_name="default", account_id="a", order_id="o", der=b"",
                             not_before=START, not_after=START + timedelta(days=7), profile="default",
                             revoked_at=None, revocation_reason=None)


def test_windows_spread_over_fleet() -> None:
    # 2000 certificates issued in the same second, with consecutive serials.
    windows = [suggested_window(certificate_at(format(0x10000000 + n, "x"))) for n in range(2000)]
    lifetime = timedelta(days=7)

    for start, end in windows:
        assert START + lifetime / 2 <= start < end <= START + lifetime * 3 / 4
    starts_per_minute = Counter(start.replace(second=0, microsecond=0) for start, _ in windows)
    # The starts spread over about 35 hours (2100 minutes). Placed at random, 2000
    # starts would fill about 1290 distinct minutes with at most 6 or so in one.
    assert len(starts_per_minute) > 1150
    assert max(starts_per_minute.values()) <= 8
    starts_per_hour = Counter(start.replace(minute=0, second=0, microsecond=0) for start, _ in windows)
    assert max(starts_per_hour.values()) < 2 * len(windows) / len(starts_per_hour)


def test_window_is_stable_for_one_certificate() -> None:
    certificate = certificate_at("0a1b2c3d4e5f")
    assert suggested_window(certificate) == suggested_window(certificate)


def test_window_cases_revoked_and_renew_now() -> None:
    base = certificate_at("0a1b2c3d4e5f")
    revoked_at = START + timedelta(days=1)
    start, end = suggested_window(replace(base, revoked_at=revoked_at, revocation_reason=1))
    assert (start, end) == (revoked_at - IMMEDIATE_WIDTH, revoked_at)

    renew_from = START + timedelta(hours=2)
    start, end = suggested_window(replace(base, renew_from=renew_from))
    assert (start, end) == (renew_from - IMMEDIATE_WIDTH, renew_from)

    # A renew-now moment after the regular window leaves the regular window in force.
    regular = suggested_window(base)
    assert suggested_window(replace(base, renew_from=START + timedelta(days=6, hours=23))) == regular


def add_order(local: LocalCa, order_id: str, status: str, account_id: str | None = None,
              expires_in: timedelta = timedelta(hours=1)) -> None:
    # Only the orders row matters here; Repository.add_order needs authorizations too.
    with local.database.engine.begin() as conn:
        conn.execute(insert(orders).values(
            id=order_id, account_id=account_id or local.account_id, status=status,
            expires=local.clock.now() + expires_in, identifiers=[], created_at=local.clock.now()))


def replaces_for(local: LocalCa, certificate: IssuedCertificate) -> str:
    from cryptography import x509

    ski = local.ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    return cert_id(ski, int(certificate.serial, 16))


def check(local: LocalCa, replaces: object, names: list[str], account_id: str | None = None) -> str:
    with local.database.transaction() as repo:
        return check_replaces(repo, account_id or local.account_id, replaces,
                              [Identifier("dns", n) for n in names], local.clock.now())


def test_check_replaces_cases(local_ca: LocalCa) -> None:
    certificate = local_ca.add_certificate(name="d1.devices.example.test", signed=True)
    replaces = replaces_for(local_ca, certificate)
    other_account = local_ca.add_account()

    assert check(local_ca, replaces, ["d1.devices.example.test", "d2.devices.example.test"]) == certificate.id
    failures = {
        "fail/not-a-string": (42, ["d1.devices.example.test"], None, "malformed"),
        "fail/unknown-serial": (replaces.split(".")[0] + ".AQID", ["d1.devices.example.test"], None, "malformed"),
        "fail/other-account": (replaces, ["d1.devices.example.test"], other_account, "unauthorized"),
        "fail/no-shared-identifier": (replaces, ["d9.devices.example.test"], None, "malformed"),
    }
    for name, (value, names, account_id, problem) in failures.items():
        with pytest.raises(AcmeProblem) as raised:
            check(local_ca, value, names, account_id)
        assert raised.value.type == problem, name


def test_replaces_accepted_once_until_order_fails(local_ca: LocalCa) -> None:
    certificate = local_ca.add_certificate(name="d1.devices.example.test", signed=True)
    replaces = replaces_for(local_ca, certificate)
    add_order(local_ca, "first", "pending")
    replaced_id = check(local_ca, replaces, ["d1.devices.example.test"])
    with local_ca.database.transaction() as repo:
        mark_replaced(repo, replaced_id, "first", local_ca.clock.now())

    with pytest.raises(AcmeProblem) as raised:
        check(local_ca, replaces, ["d1.devices.example.test"])
    assert raised.value.type == "alreadyReplaced"
    assert raised.value.status == 409

    # Once the replacing order is invalid, another order may replace the certificate.
    with local_ca.database.transaction() as repo:
        assert repo.transition_order("first", "pending", "invalid")
    assert check(local_ca, replaces, ["d1.devices.example.test"]) == certificate.id
    add_order(local_ca, "second", "pending")
    with local_ca.database.transaction() as repo:
        mark_replaced(repo, certificate.id, "second", local_ca.clock.now())
        assert repo.get_certificate(certificate.id).replaced_by_order == "second"  # type: ignore[union-attr]


def test_mark_replaced_loses_race(local_ca: LocalCa) -> None:
    certificate = local_ca.add_certificate(name="d1.devices.example.test", signed=True)
    add_order(local_ca, "winner", "ready")
    add_order(local_ca, "loser", "pending")
    with local_ca.database.transaction() as repo:
        mark_replaced(repo, certificate.id, "winner", local_ca.clock.now())
    with pytest.raises(AcmeProblem) as raised, local_ca.database.transaction() as repo:
        mark_replaced(repo, certificate.id, "loser", local_ca.clock.now())
    assert raised.value.type == "alreadyReplaced"


def test_operator_selection_cases(local_ca: LocalCa) -> None:
    other_account = local_ca.add_account()
    by_eab = local_ca.add_certificate(eab_key_id="kid-1")
    by_account = local_ca.add_certificate(account_id=other_account)
    by_profile = local_ca.add_certificate(profile="sensors")
    by_serial = local_ca.add_certificate()
    by_ca_and_profile = local_ca.add_certificate(profile="meters")
    expired = local_ca.add_certificate(lifetime=timedelta(hours=1))
    local_ca.clock.advance(timedelta(hours=2))
    now = local_ca.clock.now()

    cases = {
        "eab-key": (Selection(eab_key_id="kid-1"), {by_eab.serial}),
        "account": (Selection(account_id=other_account), {by_account.serial}),
        "profile": (Selection(profile="sensors"), {by_profile.serial}),
        "serials-skip-expired": (Selection(serials=(by_serial.serial, expired.serial)), {by_serial.serial}),
        "ca-and-profile": (Selection(ca_name="default", profile="meters"), {by_ca_and_profile.serial}),
        "already-revoked": (Selection(serials=(by_eab.serial,)), set()),
    }
    for name, (selection, expected) in cases.items():
        result = revoke(local_ca.database, selection, 5, now, "tester")
        assert {serial for _, serial in result.revoked} == expected, name

    with local_ca.database.transaction() as repo:
        events = repo.audit_events("certificate.revoked")
    assert sorted(e["details"]["serial"] for e in events) == sorted([by_eab.serial, by_account.serial,
                                                                      by_profile.serial, by_serial.serial,
                                                                      by_ca_and_profile.serial])
    with pytest.raises(SelectionError):
        revoke(local_ca.database, Selection(), 5, now, "tester")


def test_renew_now_spreads_windows(local_ca: LocalCa) -> None:
    certificates = [local_ca.add_certificate() for _ in range(50)]
    now = local_ca.clock.now()

    changed = renew_now(local_ca.database, Selection(ca_name="default"), now, "tester", spread=timedelta(hours=2))

    assert changed == 50
    with local_ca.database.transaction() as repo:
        stored = [repo.get_certificate(c.id) for c in certificates]
    renew_from = [c.renew_from for c in stored if c is not None]
    assert all(now <= r < now + timedelta(hours=2) for r in renew_from if r is not None)
    assert len({r.replace(second=0, microsecond=0) for r in renew_from if r is not None}) > 20
    for certificate in stored:
        assert certificate is not None
        assert suggested_window(certificate)[1] == certificate.renew_from


def test_normalize_serial_cases() -> None:
    cases = {"0x00AB": "ab", "0a:bc:DE": "abcde", "  ff ": "ff"}
    for text, expected in cases.items():
        assert normalize_serial(text) == expected, text
    with pytest.raises(SelectionError):
        normalize_serial("xyz")
