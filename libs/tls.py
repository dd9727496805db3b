"""TLS and mutual TLS for every gRPC hop, and the development certificates `loom certs` makes.

Everything is optional: without `LOOM_TLS_*` settings servers listen in plaintext and
clients call in plaintext, the zero-setup default. With a certificate and key a server
speaks TLS; with a client CA as well it demands a client certificate that CA signed
(mutual TLS), so plaintext callers and certificates of any other CA fail the handshake.
Clients given a CA verify the server against it and present this process's own
certificate, whose common name is the process's service identity.

Files are read again when they change: servers through gRPC's certificate-configuration
fetcher (asked on every new handshake, it costs three `stat` calls), clients each time a
channel is opened. Rotating is writing new files; no process restarts.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from libs.settings import Settings

log = structlog.get_logger("loom.tls")

# What the peer's certificate says in grpc's auth context; its common name is the identity.
COMMON_NAME_PROPERTY = "x509_common_name"
CA_NAMES = ("ca.pem", "ca-key.pem")
CERT_DAYS = 365


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path else None


@dataclass
class _ServerFiles:
    """The server's certificate files, and the modification times last loaded."""

    cert: Path
    key: Path
    client_ca: Path | None
    loaded: tuple[float, ...] = ()

    def _stamp(self) -> tuple[float, ...]:
        return tuple(p.stat().st_mtime_ns for p in (self.cert, self.key, self.client_ca) if p is not None)

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        self.loaded = self._stamp()
        return grpc.ssl_server_certificate_configuration(
            [(self.key.read_bytes(), self.cert.read_bytes())], root_certificates=_read(self.client_ca)
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC asks before each handshake; None keeps the configuration it has."""
        try:
            if self._stamp() == self.loaded:
                return None
            configuration = self.configuration()
        except (OSError, ValueError) as error:  # half-written files: keep serving the old ones
            log.warning("certificate reload failed", error=str(error))
            return None
        log.info("certificates reloaded", cert=str(self.cert))
        return configuration


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS (mutual when a client CA is set) for a gRPC server; None: plaintext."""
    if not settings.tls_cert_file or not settings.tls_key_file:
        return None
    files = _ServerFiles(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    return grpc.dynamic_ssl_server_credentials(
        files.configuration(), files.fetch, require_client_authentication=settings.tls_client_ca_file is not None
    )


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """Credentials for a new channel, read from the files now; None: plaintext."""
    if not settings.tls_ca_file:
        return None
    presents = settings.tls_cert_file is not None and settings.tls_key_file is not None
    return grpc.ssl_channel_credentials(
        root_certificates=settings.tls_ca_file.read_bytes(),
        private_key=_read(settings.tls_key_file) if presents else None,
        certificate_chain=_read(settings.tls_cert_file) if presents else None,
    )


def peer_identity(context) -> str:
    """The common name of the peer's verified client certificate; '' without mutual TLS."""
    auth_context = context.auth_context() or {}
    names = auth_context.get(COMMON_NAME_PROPERTY) or ()
    return names[0].decode() if names else ""


# Development certificates ------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Loom development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(directory: Path, common_name: str = "Loom development CA") -> None:
    """A self-signed CA (ca.pem, ca-key.pem) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=CERT_DAYS * 5))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_key(directory / CA_NAMES[1], key)
    (directory / CA_NAMES[0]).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_certificate(directory: Path, name: str, *, hosts: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """`<name>.pem` and `<name>-key.pem` signed by the CA in `directory`, for serving and
    for presenting as a client: common name `name` (the identity), names `name`,
    localhost, 127.0.0.1, ::1 and `hosts`."""
    ca_cert = x509.load_pem_x509_certificate((directory / CA_NAMES[0]).read_bytes())
    ca_key = serialization.load_pem_private_key((directory / CA_NAMES[1]).read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys((name, "localhost", *hosts))]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "::1")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    # Key first, certificate last: a server that reloads between the two writes sees
    # the certificate change only once its key is in place.
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def tls_env(directory: Path, name: str) -> dict[str, str]:
    """The LOOM_TLS_* variables that run process `name` with mutual TLS from `directory`."""
    return {
        "LOOM_TLS_CERT_FILE": str(directory / f"{name}.pem"),
        "LOOM_TLS_KEY_FILE": str(directory / f"{name}-key.pem"),
        "LOOM_TLS_CA_FILE": str(directory / CA_NAMES[0]),
        "LOOM_TLS_CLIENT_CA_FILE": str(directory / CA_NAMES[0]),
    }


def tls_settings(directory: Path, name: str) -> dict[str, Path]:
    """The same, as Settings field values (in-process servers, tests, benchmarks)."""
    return {key.removeprefix("LOOM_").lower(): Path(value) for key, value in tls_env(directory, name).items()}
