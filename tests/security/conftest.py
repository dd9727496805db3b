"""Certificates for the security tests: the suite's development CA (made by `loom certs`) and a rogue one."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs import cli, tls


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Path:
    """`loom certs` output: ca.pem and a certificate per process, plus `rogue/` signed by another CA."""
    directory = tmp_path_factory.mktemp("pki")
    with pytest.raises(SystemExit) as done:
        cli.main(["certs", "--dir", str(directory)])
    assert done.value.code == 0
    tls.make_ca(directory / "rogue", "Someone else's CA")
    tls.make_certificate(directory / "rogue", "rules")
    return directory


mtls = tls.tls_settings  # settings overrides that run a process with mutual TLS from a directory
