#!/usr/bin/env bash
# Download, on a machine with network, the wheels scripts/gpu-check.sh installs on a GPU machine that
# has its own Python 3.12 and PyTorch but no network: into wheels/ (ignored by git; carry it along).
#
#   bash scripts/gpu-wheels.sh [--without-video] [FOLDER]
#
# Wheels, at the versions pyproject.toml pins, for CPython 3.12 on manylinux x86_64, without
# dependencies (the GPU machine has torch, numpy, pytest, pytest-benchmark, pytest-timeout, pyyaml):
#   xformers  the attention kernels the GPU check compares with SDPA (none for Python 3.12: said so,
#             and the GPU check's xformers tests then fail);
#   av, decord  the video writer and reader the CUDA evaluation test's data stage uses (about 47 MiB;
#             --without-video leaves them out, and the GPU check then does not run that test);
#   jsonschema and what it needs (jsonschema-specifications, referencing, rpds-py), at the versions this
#             interpreter has: the benchmarks read the pipeline's configuration, which jsonschema checks,
#             and a GPU image with PyTorch need not have it (about 0.5 MiB).
# Prints each wheel's size and the total against the 64 MiB a GPU machine's copy of the tree may hold.
set -euo pipefail
cd "$(dirname "$0")/.."
video=1
if [ "${1:-}" = "--without-video" ]; then video=0; shift; fi
folder="${1:-wheels}"
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3
limit_mib=64

pin() {  # the version pyproject.toml pins for package $1
    sed -n "s/^ *\"$1==\([^\"]*\)\".*/\1/p" pyproject.toml | head -n 1
}

download() {  # download the wheel of $1==$2 for CPython 3.12 on manylinux x86_64; status 1 if none exists
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 \
        -d "$folder" "$1==$2"
}

installed() {  # the version of package $1 this interpreter has (for what a pinned package needs)
    "$python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1"
}

mkdir -p "$folder"
packages=(xformers jsonschema)
[ "$video" = 1 ] && packages+=(av decord)
for package in "${packages[@]}"; do
    version="$(pin "$package")"
    if [ -z "$version" ]; then
        echo "gpu-wheels: pyproject.toml pins no version of $package" >&2
        exit 1
    fi
    rm -f "$folder/$package"-*.whl
    if download "$package" "$version"; then
        echo "gpu-wheels: $package $version: $(ls "$folder/$package"-*.whl)"
    elif [ "$package" = xformers ]; then
        echo "gpu-wheels: NO xformers $version wheel for CPython 3.12 on manylinux x86_64 on the package index;" \
             "scripts/gpu-check.sh will report xformers as missing and its xformers tests will fail" >&2
    else
        echo "gpu-wheels: no $package $version wheel for CPython 3.12 on manylinux x86_64" >&2
        exit 1
    fi
done

for package in jsonschema-specifications referencing rpds-py; do
    version="$(installed "$package")" || { echo "gpu-wheels: $python has no $package (install the suite first)" >&2; exit 1; }
    rm -f "$folder/${package//-/_}"-*.whl
    download "$package" "$version" || { echo "gpu-wheels: no $package $version wheel for CPython 3.12 on manylinux x86_64" >&2; exit 1; }
    echo "gpu-wheels: $package $version (jsonschema needs it): $(ls "$folder/${package//-/_}"-*.whl)"
done

xformers_wheel="$(ls "$folder"/xformers-*.whl 2>/dev/null | head -n 1 || true)"
if [ -n "$xformers_wheel" ]; then
    built_for="$("$python" -c 'import json, sys, zipfile
build = json.loads(zipfile.ZipFile(sys.argv[1]).read("xformers/cpp_lib.json"))["version"]
print("torch", build["torch"] + ", CUDA", build["cuda"])' "$xformers_wheel" 2>/dev/null || echo "unknown")"
    echo "gpu-wheels: the xformers wheel's C++ extensions were built for $built_for; on another torch they do not load" \
         "and none of memory_efficient_attention's operators runs (scripts/gpu-check.sh's xformers tests then fail)"
fi

wheels_bytes="$(du -cb "$folder"/*.whl | tail -n 1 | cut -f 1)"
tree_bytes="$( (git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null || true) \
    | awk '$2 == "total" { sum += $1 } END { print sum + 0 }')"
ls -l "$folder"/*.whl | awk '{ printf "  %8.1f MiB  %s\n", $5 / 1048576, $9 }'
awk -v w="$wheels_bytes" -v t="$tree_bytes" -v limit="$limit_mib" 'BEGIN {
    total = (w + t) / 1048576
    printf "gpu-wheels: wheels %.1f MiB + tree %.1f MiB = %.1f MiB of the %d MiB a GPU machine copy may hold\n", \
        w / 1048576, t / 1048576, total, limit
    if (total > limit) { print "gpu-wheels: OVER the limit: rerun with --without-video"; exit 1 }
}'
