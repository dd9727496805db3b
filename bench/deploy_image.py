"""The Loom image and the compose topology on a real Docker engine, built the air-gapped way.

- `deploy.image.build.cold`: `docker build --no-cache` (classic builder) on the local
  base image, dependencies from the wheelhouse; no baseline (the ratio is n/a).
- `deploy.image.build.warm`: the rebuild after a code-only change (a line added to one
  service module): layer caching keeps the dependencies; ratio against the cold build.
- `deploy.image.size`: the runtime image; ratio against its base image (what Loom adds).
- `deploy.up.healthy`: from `compose up` of an empty project to every healthcheck passing;
  ratio against two healthcheck intervals (services, then the gateway that waits for them),
  the floor the compose file's timings allow.

The build context is a temporary copy of the repository's, so the change never touches
the work tree. Needs a Docker engine (or root to start one: deploy/docker-engine.sh).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from bench.harness import BenchContext, Figure, benchmark, median
from tests.deploy.compose import ROOT, services
from tests.deploy.engine import (
    BUILD_ENV,
    Project,
    base_images,
    ensure_engine,
    image_build_args,
    image_size_bytes,
    run,
    wheelhouse,
)

TAG = "loom:bench"
CHANGED_MODULE = Path("services/batch/__init__.py")


def _build_context(into: Path) -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    shutil.copy2(ROOT / ".dockerignore", into / ".dockerignore")
    shutil.copy2(ROOT / "Dockerfile", into / "Dockerfile")
    for entry in (line[1:].rstrip("/") for line in lines if line.startswith("!")):
        source, target = ROOT / entry, into / entry
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.exists():
            shutil.copy2(source, target)


def _build(context: Path, images: dict[str, str], *extra: str) -> float:
    started = time.perf_counter()
    run(["docker", "build", "--quiet", *extra, *image_build_args(images), "-t", TAG, str(context)],
        timeout=1800, env=BUILD_ENV)
    return time.perf_counter() - started


def _up_until_healthy(images: dict[str, str]) -> float:
    project = Project(images, image=TAG)
    try:
        started = time.perf_counter()
        project.up()
        project.wait_healthy(timeout=600)
        return time.perf_counter() - started
    finally:
        project.down()


def _interval_seconds(service: str) -> float:
    return float(services()[service]["healthcheck"]["interval"].removesuffix("s"))


def _measure(ctx: BenchContext) -> list[Figure]:
    ensure_engine()
    wheelhouse()
    images = base_images()
    python_image = images["LOOM_PYTHON_IMAGE"]
    expensive_runs = 1 if ctx.quick else min(ctx.runs, 3)
    with tempfile.TemporaryDirectory(prefix="loom-bench-image-") as folder:
        context = Path(folder)
        _build_context(context)
        cold = [_build(context, images, "--no-cache") for _ in range(expensive_runs)]
        warm = []
        for i in range(ctx.runs):
            with (context / CHANGED_MODULE).open("a") as module:
                module.write(f"# code-only change {i}\n")
            warm.append(_build(context, images))
    size = image_size_bytes(TAG)
    base = image_size_bytes(python_image)
    up = [_up_until_healthy(images) for _ in range(expensive_runs)]
    floor = _interval_seconds("batch") + _interval_seconds("gateway")
    return [
        Figure("deploy.image.build.cold", median(cold), "s", None, "no baseline"),
        Figure("deploy.image.build.warm", median(warm), "s", median(warm) / median(cold), "cold build"),
        Figure("deploy.image.size", size / 1e6, "MB", size / base, f"base image {python_image}"),
        Figure("deploy.up.healthy", median(up), "s", median(up) / floor, "two healthcheck intervals"),
    ]


@benchmark(
    "deploy.image",
    figures=("deploy.image.build.cold", "deploy.image.build.warm", "deploy.image.size", "deploy.up.healthy"),
)
async def image(ctx: BenchContext) -> list[Figure]:
    return await asyncio.to_thread(_measure, ctx)
