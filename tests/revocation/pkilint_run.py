"""Run pkilint's CRL and OCSP response linters on DER documents and return their findings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def _findings(command: list[str], der: bytes, workdir: Path, name: str) -> list[str]:
    path = workdir / name
    path.write_bytes(der)
    result = subprocess.run([*command, "-s", "WARNING", "--document-format", "DER", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode in (0, 1), result.stderr
    return [line for line in result.stdout.splitlines() if line.strip()]


def crl_findings(der: bytes, workdir: Path, name: str = "shard.crl") -> list[str]:
    """Findings of severity WARNING and above under the Baseline Requirements CRL profile."""
    return _findings([str(BIN / "lint_crl"), "lint", "-t", "CRL", "-p", "BR"], der, workdir, name)


def ocsp_findings(der: bytes, workdir: Path, name: str = "response.der") -> list[str]:
    """Findings of severity WARNING and above of the RFC 6960 response linter."""
    return _findings([str(BIN / "lint_ocsp_response"), "lint"], der, workdir, name)
