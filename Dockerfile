# One image for every Loom process: `docker run loom serve batch`, `... migrate`, `... health rules`.
# Builds on the classic builder and on BuildKit alike: no heredocs, no `# syntax=` front end
# to pull. The base images are build arguments: python:3.11-slim to run on and python:3.11
# (which has binutils' strip) to build the virtualenv on, from a registry, or the local
# stand-ins deploy/base-images.sh makes (loom-local/python:3.11 and :3.11-build).
# With a wheelhouse in the context (`make wheelhouse`) nothing is fetched from a package
# index (--no-index); without one, pip installs from the index. See docs/deploy.md.
ARG PYTHON_IMAGE=python:3.11-slim
ARG PYTHON_BUILD_IMAGE=python:3.11

# Dependencies: a virtualenv of the runtime requirements. Rebuilt only when
# pyproject.toml or the wheelhouse changes, so a code change reuses it.
FROM ${PYTHON_BUILD_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
COPY pyproject.toml ./
# The wheelhouse when the context has one: the glob may match nothing, and requirements.py,
# which always matches, keeps the classic builder from rejecting the COPY then.
COPY deploy/requirements.py wheelhous[e] /wheelhouse/
# pip's settings for this stage and the next: offline from the wheelhouse when it has wheels.
ENV PIP_CONFIG_FILE=/build/pip.conf
RUN if ls /wheelhouse/*.whl >/dev/null 2>&1; then printf '[global]\nno-index = true\nfind-links = /wheelhouse\n' > pip.conf; fi \
 && python /wheelhouse/requirements.py > runtime.txt \
 && python /wheelhouse/requirements.py --codegen > codegen.txt \
 && pip install -r runtime.txt

# Code generation: protoc and its plugins on a throwaway copy of the virtualenv, so the
# image never carries them. gen/ is never copied from a workstation.
FROM deps AS codegen
RUN pip install -r /build/codegen.txt
WORKDIR /app
COPY protos ./protos
COPY libs/__init__.py libs/codegen.py ./libs/
RUN python -m libs.codegen

# The virtualenv the image carries: without the installer, as nothing is installed at run time;
# geoip2fast's ASN databases go too: tracking looks up countries (the default database).
# Wheels ship some extensions with their symbols (uvloop's alone is 12 MB of them): stripped,
# the image sheds about 30 MB, and a traceback never needed them. The packages' own test
# suites and the C/Cython sources of their compiled parts are never run or read here.
FROM deps AS venv
RUN python -m pip uninstall --yes --quiet pip setuptools \
 && rm /opt/venv/lib/python3*/site-packages/geoip2fast/geoip2fast-asn*.dat.gz \
 && { command -v strip >/dev/null || { echo "PYTHON_BUILD_IMAGE has no strip (binutils)" >&2; exit 1; }; } \
 && find /opt/venv -type f -name '*.so*' -exec strip --strip-unneeded {} + \
 && find /opt/venv/lib/python3*/site-packages -mindepth 2 -type d \( -name tests -o -name testing \) -prune \
      -exec rm -r {} + \
 && find /opt/venv/lib/python3*/site-packages -type f \( -name '*.c' -o -name '*.cpp' -o -name '*.h' \
      -o -name '*.pyx' -o -name '*.pxd' \) -delete

# Runtime: the dependencies' virtualenv, the code and its generated modules, run as
# an unprivileged user.
FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin loom
COPY --from=venv /opt/venv /opt/venv
COPY --from=codegen /app/gen /app/gen
COPY protos /app/protos
COPY libs /app/libs
COPY services /app/services
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOOM_BIND_HOST=0.0.0.0 \
    LOOM_DATA_DIR=/tmp/loom
# Bytecode compiled once here: the code is read-only to `loom`, and every healthcheck
# starts a Python process.
RUN python -m compileall -q /app/libs /app/services /app/gen
WORKDIR /app
USER loom:loom
EXPOSE 50051 50052 50053 50054 8080 9101 9102 9103 9104 9105
ENTRYPOINT ["python", "-m", "libs.cli"]
CMD ["--help"]
