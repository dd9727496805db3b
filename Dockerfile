# syntax=docker/dockerfile:1
# One image for every Loom process: `docker run loom serve batch`, `... migrate`, `... health rules`.
# Build stage: install the pinned dependencies and generate the protobuf code.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# Dependencies first: this layer is rebuilt only when pyproject.toml changes.
# buf is only for linting the protos and stays out of the image.
COPY pyproject.toml ./
RUN python - <<'PY'
import subprocess, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
subprocess.check_call([sys.executable, "-m", "pip", "install", *(d for d in deps if not d.startswith("buf-bin"))])
PY
COPY protos ./protos
COPY libs ./libs
COPY services ./services
# Code generation at build time: gen/ is never copied from a workstation. The code
# generators, and the embedded PostgreSQL (containers always get DATABASE_URL), then go.
RUN python -m libs.codegen \
 && pip uninstall --yes grpcio-tools mypy-protobuf types-protobuf pgserver \
 && python -m compileall -q libs services gen

# Runtime stage: the virtualenv and the application, run as an unprivileged user.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin loom
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app/libs /app/libs
COPY --from=build /app/services /app/services
COPY --from=build /app/gen /app/gen
COPY --from=build /app/protos /app/protos
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOOM_BIND_HOST=0.0.0.0 \
    LOOM_DATA_DIR=/tmp/loom
WORKDIR /app
USER loom:loom
EXPOSE 50051 50052 50053 50054 8080 9101 9102 9103 9104 9105
ENTRYPOINT ["python", "-m", "libs.cli"]
CMD ["--help"]
