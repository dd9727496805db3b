"""Generates the Python protobuf, gRPC and typing-stub modules from protos/.

`python -m libs.codegen` writes them into gen/; `--check` regenerates into a
scratch folder and fails when gen/ differs (stale or hand-edited code).
The google/api and google/rpc protos in protos/ are verbatim copies of the ones
googleapis-common-protos ships; their Python modules come from that wheel, so
only loom/ is compiled, and `--check` also proves the copies have not drifted.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
GEN_ROOT = ROOT / "gen"
VENDORED = ("google/api/annotations.proto", "google/api/http.proto", "google/rpc/status.proto")


def loom_protos() -> list[Path]:
    return sorted((PROTO_ROOT / "loom").rglob("*.proto"))


def _plugin(name: str) -> str:
    scripts = Path(sysconfig.get_paths()["scripts"])
    return f"--plugin=protoc-gen-{name}={scripts / ('protoc-gen-' + name)}"


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        _plugin("mypy"),
        _plugin("mypy_grpc"),
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *(str(p.relative_to(PROTO_ROOT)) for p in loom_protos()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def _files(folder: Path) -> set[str]:
    """Generated files under folder; bytecode Python caches beside them is not ours to compare."""
    return {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".stamp" and "__pycache__" not in p.parts
    }


def stale_files() -> list[str]:
    """Files of gen/ that differ from a fresh generation (missing, extra or changed)."""
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        generate(fresh)
        expected, actual = _files(fresh), _files(GEN_ROOT) if GEN_ROOT.exists() else set()
        differing = sorted(expected ^ actual)
        differing += [f for f in sorted(expected & actual) if not filecmp.cmp(fresh / f, GEN_ROOT / f, shallow=False)]
        return differing


def drifted_vendored_protos() -> list[str]:
    from google.api import annotations_pb2

    wheel_root = Path(annotations_pb2.__file__).parent.parent.parent
    return [p for p in VENDORED if not filecmp.cmp(PROTO_ROOT / p, wheel_root / p, shallow=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when gen/ or the vendored protos are stale")
    args = parser.parse_args()
    if args.check:
        problems = [f"stale generated file: gen/{f}" for f in stale_files()]
        problems += [f"vendored proto differs from googleapis-common-protos: protos/{p}" for p in drifted_vendored_protos()]
        if problems:
            print("\n".join(problems + ["run: make gen"]), file=sys.stderr)
            raise SystemExit(1)
        print("generated code is current")
        return
    shutil.rmtree(GEN_ROOT, ignore_errors=True)
    generate(GEN_ROOT)
    print(f"generated {len(loom_protos())} protos into {GEN_ROOT.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
