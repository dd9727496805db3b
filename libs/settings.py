"""Process settings, read once from the environment into one typed object.

Every variable is `LOOM_<FIELD>` except `DATABASE_URL`. Each service extends
`Settings` with its own fields (services/<name>/settings.py), so one process
holds exactly one settings object. `python -m libs.settings` prints the table
the README carries.
"""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAMES = ("batch", "rules", "tracking", "scheduler")


class Settings(BaseSettings):
    """Settings every Loom process reads."""

    model_config = SettingsConfigDict(env_prefix="LOOM_", extra="ignore", frozen=True, populate_by_name=True)

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "LOOM_DATABASE_URL"),
        description="PostgreSQL URL. Unset: an embedded PostgreSQL (pgserver) under the data dir.",
    )
    data_dir: Path = Field(default=Path(".loom"), description="Embedded database, dev JWT secret and other local state.")
    jwt_secret: str | None = Field(
        default=None, description="HS256 key for bearer tokens. Unset: a random key kept in <data_dir>/jwt-secret."
    )
    jwt_issuer: str = Field(default="loom", description="`iss` claim minted and required.")
    jwt_jwks_url: str | None = Field(
        default=None, description="Identity provider's JWKS URL; set, its RS256/ES256/EdDSA tokens are accepted too."
    )
    jwt_idp_issuer: str | None = Field(default=None, description="`iss` the identity provider's tokens must carry.")
    jwt_audience: str | None = Field(default=None, description="`aud` the identity provider's tokens must carry.")
    jwt_role_claim: str = Field(
        default="role",
        description="Dotted path of the role in IdP tokens: app_metadata.role (Supabase), realm_access.roles (Keycloak).",
    )
    jwt_role_map: dict[str, str] = Field(
        default={}, description='IdP role names to Loom roles (JSON), e.g. {"loom-admin": "admin"}; unmapped names as is.'
    )
    bind_host: str = Field(default="127.0.0.1", description="Address servers listen on (0.0.0.0 in containers).")
    log_level: str = Field(default="info", description="debug, info, warning or error.")
    batch_port: int = Field(default=50051, description="Batch service gRPC port.")
    rules_port: int = Field(default=50052, description="Rules service gRPC port.")
    tracking_port: int = Field(default=50053, description="Tracking service gRPC port.")
    scheduler_port: int = Field(default=50054, description="Scheduler service gRPC port.")
    gateway_port: int = Field(default=8080, description="Gateway HTTP port.")
    batch_metrics_port: int = Field(default=9101, description="Batch Prometheus metrics port (0: off).")
    rules_metrics_port: int = Field(default=9102, description="Rules Prometheus metrics port (0: off).")
    tracking_metrics_port: int = Field(default=9103, description="Tracking Prometheus metrics port (0: off).")
    scheduler_metrics_port: int = Field(default=9104, description="Scheduler Prometheus metrics port (0: off).")
    gateway_metrics_port: int = Field(default=9105, description="Gateway Prometheus metrics port (0: off).")
    batch_target: str | None = Field(default=None, description="Where clients reach batch. Unset: 127.0.0.1:<batch_port>.")
    rules_target: str | None = Field(default=None, description="Where clients reach rules. Unset: 127.0.0.1:<rules_port>.")
    tracking_target: str | None = Field(
        default=None, description="Where clients reach tracking. Unset: 127.0.0.1:<tracking_port>."
    )
    scheduler_target: str | None = Field(
        default=None, description="Where clients reach the scheduler. Unset: 127.0.0.1:<scheduler_port>."
    )
    trusted_proxies: list[str] = Field(
        default=["127.0.0.1/32", "::1/128"],
        description="CIDRs whose X-Forwarded-For the gateway believes (JSON list): the load balancer in front of it. "
        "Behind the gateway only its own identity is believed.",
    )
    tls_cert_file: Path | None = Field(
        default=None,
        description="This process's certificate (PEM): served by its gRPC server or HTTPS, presented by its clients.",
    )
    tls_key_file: Path | None = Field(default=None, description="The private key of `LOOM_TLS_CERT_FILE` (PEM).")
    tls_ca_file: Path | None = Field(
        default=None, description="CA that clients verify servers against; set, every client call uses TLS."
    )
    tls_client_ca_file: Path | None = Field(
        default=None, description="CA whose client certificates gRPC servers demand (mutual TLS). Unset: none asked."
    )
    audit_retention_days: int = Field(
        default=365, description="Age after which the services' retention jobs delete audit records."
    )
    db_pool_size: int = Field(
        default=10, ge=1, description="Connections each process's pool keeps open (docs/deploy.md: the connection budget)."
    )
    db_max_overflow: int = Field(default=10, ge=0, description="Extra connections the pool opens under load.")
    db_reserved_connections: int = Field(
        default=5,
        ge=0,
        description="Connections of the server's max_connections that `loom up` leaves to others "
        "(psql, monitoring, backups) besides the superuser's reserve.",
    )
    db_prepared_statements: bool = Field(
        default=True,
        description="Let the driver prepare frequent statements; false behind PgBouncer in transaction mode "
        "(docs/deploy.md).",
    )
    db_retry_attempts: int = Field(default=6, description="Attempts for a transaction that hits a transient error.")
    grpc_max_message_bytes: int = Field(default=4 * 1024 * 1024, description="Largest request a server accepts.")
    client_deadline_seconds: float = Field(default=10.0, description="Default deadline of service-to-service calls.")
    shutdown_grace_seconds: float = Field(default=10.0, description="How long SIGTERM lets in-flight calls finish.")
    grpc_max_connection_age_seconds: float = Field(
        default=300.0,
        ge=0,
        description="A gRPC server closes each client connection (GOAWAY) after about this long, so long-lived "
        "clients resolve their target again and spread over replicas that came or went (0: never).",
    )
    grpc_max_connection_age_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long calls still open on a connection past its maximum age may go on before it is cut "
        "(streams longer than this are ended with UNAVAILABLE; the gateway resubscribes its SSE streams).",
    )
    metrics_sample_seconds: float = Field(
        default=15.0,
        gt=0,
        description="How often business gauges (backlogs, statuses, last successes) are read from the database.",
    )

    def port_of(self, service: str) -> int:
        return getattr(self, f"{service}_port")

    def metrics_port_of(self, service: str) -> int:
        return getattr(self, f"{service}_metrics_port")

    def target_of(self, service: str) -> str:
        return getattr(self, f"{service}_target") or f"127.0.0.1:{self.port_of(service)}"

    @cached_property
    def jwt_key(self) -> str:
        """The token signing key: configured, or a development key kept on disk."""
        if self.jwt_secret:
            return self.jwt_secret
        path = self.data_dir / "jwt-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(48))
        return path.read_text().strip()


def env_name(cls: type[BaseSettings], field: str) -> str:
    alias = cls.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def settings_classes() -> list[tuple[str, type[Settings]]]:
    """Settings and every service's extension of it, keyed by who reads them."""
    import importlib

    classes: list[tuple[str, type[Settings]]] = [("all", Settings)]
    for service in (*SERVICE_NAMES, "gateway"):
        try:
            module = importlib.import_module(f"services.{service}.settings")
        except ModuleNotFoundError:
            continue
        classes.append((service, module.SETTINGS_CLASS))
    return classes


def markdown_table() -> str:
    rows = ["| variable | read by | default | meaning |", "| --- | --- | --- | --- |"]
    seen: set[str] = set()
    for reader, cls in settings_classes():
        for name, field in cls.model_fields.items():
            variable = env_name(cls, name)
            if variable in seen:
                continue
            seen.add(variable)
            default = "" if field.default is None else f"`{field.default}`"
            rows.append(f"| `{variable}` | {reader} | {default} | {field.description or ''} |")
    return "\n".join(rows)


TABLE_START, TABLE_END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def with_table(document: str) -> str:
    """The document with the text between the table markers replaced by the current table."""
    head, start, rest = document.partition(TABLE_START)
    _, end, tail = rest.partition(TABLE_END)
    if not (start and end):
        raise ValueError(f"the document has no {TABLE_START} ... {TABLE_END} block")
    return f"{head}{TABLE_START}\n{markdown_table()}\n{TABLE_END}{tail}"


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--write"]:
        target = Path(sys.argv[2])
        target.write_text(with_table(target.read_text()))
    else:
        print(markdown_table())
