"""Generates the Python protobuf, gRPC and typing-stub modules from protos/.

`python -m libs.codegen` writes them into gen/; `--check` regenerates into a
scratch folder and fails when gen/ differs (stale or hand-edited code).

protos/ holds every proto a Loom client needs, Loom's own and the third-party
ones it uses or sends (google.api annotations, google.rpc error details,
grpc.health.v1, buf.validate), so a client in any language compiles that one
folder. Python compiles only loom/ and buf/validate/: the other third-party
modules come at run time from the wheels that the services already import
(googleapis-common-protos, grpcio-health-checking), and a second generated copy
would clash with them in the descriptor pool. `--check` proves each vendored
copy still matches what its wheel serves: text for the googleapis copies (the
wheel ships the .proto), descriptors for the others (their wheels ship only the
compiled form).
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
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
GEN_ROOT = ROOT / "gen"
WELL_KNOWN = Path(grpc_tools.__file__).parent / "_proto"
VENDORED = (
    "google/api/annotations.proto",
    "google/api/field_behavior.proto",
    "google/api/http.proto",
    "google/rpc/error_details.proto",
    "google/rpc/status.proto",
)
HEALTH_PROTO = "grpc/health/v1/health.proto"
VALIDATE_PROTO = "buf/validate/validate.proto"


def loom_protos() -> list[Path]:
    return sorted((PROTO_ROOT / "loom").rglob("*.proto"))


def python_protos() -> list[Path]:
    """Protos compiled into gen/: Loom's, and buf.validate (no wheel serves it to google.protobuf)."""
    return [*loom_protos(), PROTO_ROOT / VALIDATE_PROTO]


def _plugin(name: str) -> str:
    scripts = Path(sysconfig.get_paths()["scripts"])
    return f"--plugin=protoc-gen-{name}={scripts / ('protoc-gen-' + name)}"


def _protoc(*args: str) -> None:
    if protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{WELL_KNOWN}", *args]) != 0:
        raise SystemExit("protoc failed")


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _protoc(
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        _plugin("mypy"),
        _plugin("mypy_grpc"),
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *(str(p.relative_to(PROTO_ROOT)) for p in python_protos()),
    )


def descriptor_set(*, include_imports: bool = True, source_info: bool = False) -> descriptor_pb2.FileDescriptorSet:
    """Every proto under protos/ compiled into one FileDescriptorSet (for tools and tests)."""
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "all.binpb"
        flags = [*(["--include_imports"] if include_imports else []), *(["--include_source_info"] if source_info else [])]
        files = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
        _protoc(f"--descriptor_set_out={target}", *flags, *files)
        return descriptor_pb2.FileDescriptorSet.FromString(target.read_bytes())


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


def _shape(file: descriptor_pb2.FileDescriptorProto) -> bytes:
    """What a file declares, without what compilers and packagers vary: comments, JSON
    names, file options (the protovalidate wheel sets its own language packages)."""
    file.ClearField("source_code_info")
    file.ClearField("options")
    for message in _messages(file.message_type):
        for field in message.field:
            field.ClearField("json_name")
    return file.SerializeToString(deterministic=True)


def _messages(messages):
    for message in messages:
        yield message
        yield from _messages(message.nested_type)


def _served_descriptors() -> dict[str, bytes]:
    """The descriptors the wheels serve for the vendored protos they ship only compiled."""
    from grpc_health.v1 import health_pb2
    from protovalidate._gen.buf.validate import validate_pb

    health = descriptor_pb2.FileDescriptorProto.FromString(health_pb2.DESCRIPTOR.serialized_pb)
    health.name = HEALTH_PROTO  # the wheel compiles it as grpc_health/v1/health.proto
    return {
        HEALTH_PROTO: _shape(health),
        VALIDATE_PROTO: _shape(descriptor_pb2.FileDescriptorProto.FromString(validate_pb.desc().proto.to_binary())),
    }


def drifted_vendored_protos() -> list[str]:
    from google.api import annotations_pb2

    wheel_root = Path(annotations_pb2.__file__).parent.parent.parent
    drifted = [p for p in VENDORED if not filecmp.cmp(PROTO_ROOT / p, wheel_root / p, shallow=False)]
    compiled = {f.name: f for f in descriptor_set(include_imports=True).file}
    drifted += [name for name, served in _served_descriptors().items() if _shape(compiled[name]) != served]
    return drifted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when gen/ or the vendored protos are stale")
    args = parser.parse_args()
    if args.check:
        problems = [f"stale generated file: gen/{f}" for f in stale_files()]
        problems += [f"vendored proto differs from the copy its wheel serves: protos/{p}" for p in drifted_vendored_protos()]
        if problems:
            print("\n".join(problems + ["run: make gen"]), file=sys.stderr)
            raise SystemExit(1)
        print("generated code is current")
        return
    shutil.rmtree(GEN_ROOT, ignore_errors=True)
    generate(GEN_ROOT)
    print(f"generated {len(python_protos())} protos into {GEN_ROOT.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
