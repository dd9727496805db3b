"""Prints the image's requirements, one a line, from pyproject.toml's pinned dependencies.

    python deploy/requirements.py            what the services run with
    python deploy/requirements.py --codegen  what only the build stage needs (protoc and its plugins)

Neither list has buf-bin (it lints protos on a workstation) or pgserver (an embedded
PostgreSQL: a container always gets DATABASE_URL). Read by the Dockerfile and by
`make wheelhouse`, so both install the same set. Standard library only: it runs on
the bare base image before anything is installed.
"""

import sys
import tomllib

NOT_IN_THE_IMAGE = ("buf-bin", "pgserver")
CODEGEN_ONLY = ("grpcio-tools", "mypy-protobuf", "types-protobuf")


def requirements(codegen: bool, pyproject: str = "pyproject.toml") -> list[str]:
    with open(pyproject, "rb") as file:
        dependencies = tomllib.load(file)["project"]["dependencies"]
    wanted = [d for d in dependencies if not d.startswith(NOT_IN_THE_IMAGE)]
    return [d for d in wanted if d.startswith(CODEGEN_ONLY) == codegen]


if __name__ == "__main__":
    print("\n".join(requirements(codegen="--codegen" in sys.argv[1:])))
