#!/bin/sh
# `make wheelhouse`: wheels of every requirement of the image (deploy/requirements.py,
# dependencies included) for the image's platform and Python, so that the image
# builds with `pip install --no-index` where no package index answers (docs/deploy.md).
#
#   deploy/wheelhouse.sh [DIR]     DIR defaults to ./wheelhouse (git-ignored)
#
# PYTHON must be a Python of the image's minor version (it resolves the environment
# markers); LOOM_IMAGE_PYTHON (3.11) and LOOM_IMAGE_ARCH (this machine's) name the target,
# whose C library is Debian bookworm's glibc 2.36 (manylinux wheels up to 2_36 fit).
set -eu
cd "$(dirname "$0")/.."
out=${1:-wheelhouse}
python=${PYTHON:-python3}
target=${LOOM_IMAGE_PYTHON:-3.11}
arch=${LOOM_IMAGE_ARCH:-$(uname -m)}
abi=cp$(echo "$target" | tr -d .)

have=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$have" = "$target" ] || { echo "wheelhouse: $python is $have, the image runs $target (set PYTHON)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" deploy/requirements.py > "$work/requirements.txt"
"$python" deploy/requirements.py --codegen >> "$work/requirements.txt"

# Resolve and build with this interpreter: a package published only as a source
# distribution becomes a wheel here, once, instead of in every image build.
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$work/built" -r "$work/requirements.txt"

# Pure-Python wheels fit any platform; each compiled one is fetched again for the
# image's platform and ABI, which need not be this machine's.
platforms=""
for glibc in 2_36 2_35 2_34 2_31 2_28 2_27 2_24 2_17 2_12 2_5; do
    platforms="$platforms --platform manylinux_${glibc}_$arch"
done
rm -rf "$out"
mkdir -p "$out"
for wheel in "$work"/built/*.whl; do
    file=$(basename "$wheel")
    case "$file" in
    *-none-any.whl) cp "$wheel" "$out/" ;;
    *)
        name=$(echo "$file" | cut -d- -f1)
        version=$(echo "$file" | cut -d- -f2)
        # shellcheck disable=SC2086 # one word per option
        "$python" -m pip download --quiet --disable-pip-version-check --no-deps --dest "$out" \
            --only-binary=:all: --python-version "$target" --implementation cp \
            --abi "$abi" --abi abi3 --abi none \
            $platforms --platform "manylinux2014_$arch" --platform "manylinux2010_$arch" --platform "manylinux1_$arch" \
            "$name==$version"
        ;;
    esac
done
echo "wheelhouse: $(ls "$out" | wc -l) wheels for CPython $target on $arch in $out"
