#!/bin/sh
# A Docker engine for the container tests (`make test`, CI) on a Debian machine:
# installs Debian's docker.io, docker-compose and debootstrap when they are missing,
# and starts dockerd when no engine answers. Does nothing where one already answers.
# Needs root for either step; without it, says why and exits 1.
set -eu
answers() { docker info >/dev/null 2>&1; }
answers && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "docker-engine: no Docker engine answers, and installing or starting one needs root" >&2
    exit 1
fi
if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose debootstrap >/dev/null
fi
answers && exit 0
# Detached from this shell, so it outlives the test run that started it.
log=${LOOM_DOCKERD_LOG:-/var/log/loom-dockerd.log}
setsid dockerd >>"$log" 2>&1 </dev/null &
for _ in $(seq 60); do
    answers && exit 0
    sleep 1
done
echo "docker-engine: dockerd did not answer within 60 s; see $log" >&2
exit 1
