#!/bin/sh
# Local base images for a machine that reaches Debian's package mirror but no
# container registry (docs/deploy.md, "Air-gapped builds"):
#
#   loom-local/debian:bookworm  a minimal Debian root from debootstrap, `docker import`ed
#   loom-local/python:3.11      Debian's python3 (3.11) with venv: the Dockerfile's PYTHON_IMAGE
#   loom-local/python:3.11-build  the same with binutils: the Dockerfile's PYTHON_BUILD_IMAGE
#   loom-local/postgres:15      Debian's PostgreSQL server behind the official image's entry
#                               point contract: compose's LOOM_POSTGRES_IMAGE
#
# They are never tagged with the official names: compose and the Dockerfile take them
# through those variables. The debootstrap tarball is cached under LOOM_DEPLOY_CACHE
# (.cache/deploy, git-ignored), and an image already present is kept, so a rerun takes
# seconds. Needs root (debootstrap), debootstrap and a Docker engine.
#
#   deploy/base-images.sh              build what is missing
#   deploy/base-images.sh --print-env  also print the variables that select them
set -eu
cd "$(dirname "$0")/.."
prefix=${LOOM_LOCAL_IMAGES:-loom-local}
cache=${LOOM_DEPLOY_CACHE:-.cache/deploy}
docker=${DOCKER:-docker}
suite=bookworm
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)

# The mirror this machine's apt already uses (deb822 or one-line sources), so the
# root comes from where this host is allowed to fetch Debian packages.
host_mirror() {
    for file in /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] || continue
        awk -v suite="$suite" '
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) found = 1 }
            /^$/ { if (found && uri ~ /debian\/?$/) { print uri; exit } uri = ""; found = 0 }
            END { if (found && uri ~ /debian\/?$/) print uri }' "$file" | head -n 1
    done
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk -v suite="$suite" '$1 == "deb" && $3 == suite && $2 ~ /debian\/?$/ { print $2 }'
    echo http://deb.debian.org/debian
}
mirror=${LOOM_DEBIAN_MIRROR:-$(host_mirror | head -n 1)}

has_image() { "$docker" image inspect "$1" >/dev/null 2>&1; }

rootfs_tarball() {
    tarball="$cache/debian-$suite-minbase-$arch.tar"
    if [ ! -s "$tarball" ]; then
        mkdir -p "$cache"
        root="$cache/rootfs.$$"
        rm -rf "$root"
        echo "base-images: debootstrap $suite from $mirror" >&2
        debootstrap --variant=minbase --arch="$arch" "$suite" "$root" "$mirror" >&2
        # What a container never reads: package lists (every image runs apt-get update
        # first), downloaded packages, documentation and translations.
        printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
            'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' \
            'path-exclude=/usr/share/locale/*' >"$root/etc/dpkg/dpkg.cfg.d/loom-slim"
        printf '%s\n' 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/loom-no-recommends"
        rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/man/* \
            "$root"/usr/share/info/* "$root"/usr/share/locale/*
        find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
        tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$root"
    fi
    echo "$tarball"
}

if ! has_image "$prefix/debian:$suite"; then
    "$docker" import --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' \
        "$(rootfs_tarball)" "$prefix/debian:$suite" >/dev/null
fi
# image, folder under deploy/images, build target ("-" for the last stage)
for spec in python:3.11,python,- python:3.11-build,python,build postgres:15,postgres,-; do
    image=${spec%%,*} folder=${spec#*,} target=${spec##*,}
    folder=${folder%,*}
    # Docker's layer cache makes this a no-op when nothing changed.
    "$docker" build --quiet --build-arg "DEBIAN_IMAGE=$prefix/debian:$suite" \
        $([ "$target" = - ] || echo "--target=$target") \
        -t "$prefix/$image" "deploy/images/$folder" >/dev/null
    echo "base-images: $prefix/$image" >&2
done

if [ "${1:-}" = --print-env ]; then
    echo "LOOM_PYTHON_IMAGE=$prefix/python:3.11"
    echo "LOOM_PYTHON_BUILD_IMAGE=$prefix/python:3.11-build"
    echo "LOOM_POSTGRES_IMAGE=$prefix/postgres:15"
fi
