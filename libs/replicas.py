"""Which processes `loom up --replicas N` runs, on which ports, and how they find each other.

N replicas each of batch, rules, tracking and the gateway; two schedulers once N > 1 (one
leads, the other stands by). Replica i (from 0) of a process listens on its configured
port plus i x REPLICA_PORT_STEP, and so does its metrics endpoint: with the default
ports, batch answers on 50051, 50061, 50071..., the gateway on 8080, 8090... Every
process's client of a replicated service gets a multi-address target
(`ipv4:127.0.0.1:50051,127.0.0.1:50061`) that its channel balances round-robin.
"""

from __future__ import annotations

from dataclasses import dataclass

from libs.settings import SERVICE_NAMES, Settings

PROCESSES = (*SERVICE_NAMES, "gateway")
# Default ports differ in their last digit (50051-50054, 8080, 9101-9105), so a step of
# ten never lands one process's replica on another's port.
REPLICA_PORT_STEP = 10
MAX_REPLICAS = 9
SCHEDULER_REPLICAS = 2


@dataclass(frozen=True)
class Instance:
    """One replica of one process."""

    process: str
    replica: int  # from 0

    @property
    def name(self) -> str:
        """`batch` for the first replica, `batch-2` for the second..."""
        return self.process if self.replica == 0 else f"{self.process}-{self.replica + 1}"

    def port(self, settings: Settings) -> int:
        base = settings.gateway_port if self.process == "gateway" else settings.port_of(self.process)
        return replica_port(base, self.replica)

    def metrics_port(self, settings: Settings) -> int:
        base = settings.metrics_port_of(self.process)
        return replica_port(base, self.replica) if base else 0


def replica_port(base: int, replica: int) -> int:
    return base + REPLICA_PORT_STEP * replica


def replica_counts(replicas: int) -> dict[str, int]:
    """How many of each process: `replicas` of each, but one scheduler alone or two."""
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ValueError(f"--replicas must be between 1 and {MAX_REPLICAS}")
    schedulers = 1 if replicas == 1 else SCHEDULER_REPLICAS
    return {process: schedulers if process == "scheduler" else replicas for process in PROCESSES}


def instances(replicas: int) -> list[Instance]:
    return [Instance(process, i) for process, count in replica_counts(replicas).items() for i in range(count)]


def targets(settings: Settings, replicas: int) -> dict[str, str]:
    """LOOM_<SERVICE>_TARGET for every replicated service: all its replicas' addresses."""
    found = {}
    for service, count in replica_counts(replicas).items():
        if service in SERVICE_NAMES and count > 1:
            addresses = ",".join(f"127.0.0.1:{replica_port(settings.port_of(service), i)}" for i in range(count))
            found[f"LOOM_{service.upper()}_TARGET"] = f"ipv4:{addresses}"
    return found


def instance_env(instance: Instance, settings: Settings, replicas: int) -> dict[str, str]:
    """What an instance's environment adds to the suite's: its own ports and the targets of the others."""
    prefix = f"LOOM_{instance.process.upper()}"
    return {
        **targets(settings, replicas),
        f"{prefix}_PORT": str(instance.port(settings)),
        f"{prefix}_METRICS_PORT": str(instance.metrics_port(settings)),
    }
