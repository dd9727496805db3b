"""The image's build, replayed without Docker: only what the build context admits, code
generated from it, and every process importable from that tree alone.

The Dockerfile copies pyproject.toml, protos/, libs/ and services/ (the .dockerignore
allow-list) and runs `python -m libs.codegen`; a service that imported something
outside those (tests/, bench/, a file the context leaves out) would start here and
fail in the container.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from libs.cli import PROCESSES
from tests.deploy.compose import ROOT

pytestmark = pytest.mark.timeout(180)


def build_context() -> list[str]:
    """The entries the .dockerignore allow-list lets into the build."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    return [line[1:].rstrip("/") for line in lines if line.startswith("!")]


@pytest.fixture(scope="module")
def image_tree():
    # its own temporary directory: concurrent pytest sessions prune each other's tmp_path bases
    home = Path(tempfile.mkdtemp(prefix="loom-image-"))
    app = home / "app"
    app.mkdir()
    for entry in build_context():
        source = ROOT / entry
        if entry == "wheelhouse":  # wheels, not code (and present only after `make wheelhouse`)
            continue
        (app / entry).parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, app / entry, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, app / entry)
    subprocess.run([sys.executable, "-m", "libs.codegen"], cwd=app, check=True, capture_output=True, timeout=120)
    yield app
    shutil.rmtree(home, ignore_errors=True)


def run_isolated(app, code: str) -> subprocess.CompletedProcess:
    """Python with only the image's tree on the path (not this checkout, not its gen/)."""
    bootstrap = textwrap.dedent(f"""
        import sys
        checkout = {{{str(ROOT)!r}, {str(ROOT / 'gen')!r}, ""}}
        sys.path[:] = [{str(app)!r}, {str(app / 'gen')!r}] + [p for p in sys.path if p not in checkout]
    """)
    return subprocess.run([sys.executable, "-c", bootstrap + code], cwd=app, capture_output=True, text=True, timeout=120)


def test_code_generation_runs_on_the_build_context_alone(image_tree):
    assert (image_tree / "gen" / "loom" / "batch" / "v1" / "batch_pb2.py").exists()


def test_every_process_and_the_cli_import_from_the_image_tree_alone(image_tree):
    modules = ["libs.cli", *(f"services.{p}.wiring" for p in PROCESSES if p != "gateway"), "services.gateway.app"]
    code = "import importlib\n" + "".join(
        f"m = importlib.import_module({m!r}); assert m.__file__.startswith({str(image_tree)!r}), m.__file__\n" for m in modules
    )
    done = run_isolated(image_tree, code)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_entrypoint_answers(image_tree):
    done = run_isolated(
        image_tree, "import sys, runpy; sys.argv = ['loom', '--help']; runpy.run_module('libs.cli', run_name='__main__')"
    )
    assert done.returncode == 0 and "health" in done.stdout, done.stderr[-2000:]
