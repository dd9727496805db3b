"""The benchmark registry and the helpers every benchmark uses.

A benchmark module (bench/<area>_<what>.py) registers coroutines with
`@benchmark("dotted.name", figures=("dotted.name.figure", ...))`. Each gets a
`BenchContext` (a fresh migrated database, run count) and returns `Figure`s,
each a median over `ctx.runs` runs with the ratio to a baseline measured in
the same run, so a noisy machine moves both sides alike.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import pkgutil
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    ratio: float | None
    vs: str

    def line(self) -> str:
        ratio = "n/a" if self.ratio is None else f"{self.ratio:.3g}"
        return f"{self.name} {self.value:.4g} {self.unit} ratio={ratio} vs={self.vs}"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class BenchContext:
    database_url: str
    runs: int
    quick: bool

    def size(self, env: str, full: int, quick: int) -> int:
        """A workload size: $env when set, else the quick or full default."""
        return int(os.environ.get(env) or (quick if self.quick else full))


BenchFn = Callable[[BenchContext], Awaitable[list[Figure]]]


@dataclass(frozen=True)
class Benchmark:
    name: str
    figures: tuple[str, ...]
    run: BenchFn


REGISTRY: dict[str, Benchmark] = {}


def benchmark(name: str, *, figures: tuple[str, ...]) -> Callable[[BenchFn], BenchFn]:
    def register(fn: BenchFn) -> BenchFn:
        REGISTRY[name] = Benchmark(name, figures, fn)
        return fn

    return register


def discover() -> dict[str, Benchmark]:
    for module in pkgutil.iter_modules([str(BENCH_DIR)]):
        if module.name not in ("harness", "report", "__main__"):
            importlib.import_module(f"bench.{module.name}")
    return REGISTRY


def selected(names: list[str]) -> list[Benchmark]:
    """Benchmarks whose name, or one of whose figures, starts with any given name."""
    benchmarks = discover().values()
    if not names:
        return list(benchmarks)
    chosen = [
        b for b in benchmarks if any(b.name.startswith(n) or any(f.startswith(n) for f in b.figures) for n in names)
    ]
    unknown = [n for n in names if not any(b.name.startswith(n) or any(f.startswith(n) for f in b.figures) for b in benchmarks)]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; see --list")
    return chosen


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of values, nearest-rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))
    return ordered[rank]


async def timed(work: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await work()
    return time.perf_counter() - started


async def closed_loop(
    call: Callable[[int], Awaitable[object]], *, clients: int, total: int
) -> tuple[float, list[float]]:
    """`clients` concurrent callers share `total` calls; returns (calls/s, latencies in seconds)."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def client() -> None:
        for i in counter:
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return total / (time.perf_counter() - started), latencies


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        cpu = model
    except (OSError, StopIteration):
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB, Python {platform.python_version()}, {platform.system()}"
