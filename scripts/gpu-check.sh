#!/usr/bin/env bash
# The GPU check in one command, for a machine with a CUDA GPU and its own PyTorch, even without network:
#
#   OUT=FOLDER bash scripts/gpu-check.sh            # from the repository root; wheels/ carried along
#
# 1. install: from wheels/ (fetched beforehand by scripts/gpu-wheels.sh), what the interpreter lacks:
#    xformers, av and decord, with --no-deps into a folder of their own put first on PYTHONPATH (the
#    interpreter's own packages are left as they are); a missing wheel is reported, not fatal.
# 2. cuda-tests: the cuda-marked tests of the test files that hold them (the CUDA evaluation test only
#    when av and decord import: its data stage writes and reads videos). On CUDA an xformers that
#    cannot run fails its tests.
# 3. GPU benchmarks: xformers against SDPA at the paper's attention shapes (bench_attention -k paper);
#    the training step's model FLOP/s in bf16 for paper-0.13b at 1,280 tokens per clip, as MFU against
#    the device's measured bf16 matmul rate (bench_model_flops -k paper-0.13b); ensemble against solo
#    at tiny-18k, and the optimizer step there (bench_ensemble -k tiny-18k).
# 4. Writes under $OUT: gpu-check.json (environment, each stage's exit status and seconds, test counts,
#    the headline numbers), gpu-check.log (every stage's output), cuda-tests.xml (JUnit), and
#    bench-attention.json, bench-model_flops.json, bench-ensemble.json (pytest-benchmark, with machine
#    metadata). Prints a short summary. Exit status 0 when every stage passed.
#
# Each stage runs under `timeout`; all of them together stay within TOTAL_S (7 min 50 s).
# --rehearse runs it on a machine without CUDA too (CUDA-only cases skip, the benchmarks time the CPU),
# to check the script itself; without it, a machine without CUDA is refused.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-$ROOT/work/gpu-check}"
WHEELS="${GPU_CHECK_WHEELS:-$ROOT/wheels}"
TOTAL_S="${GPU_CHECK_TOTAL_S:-470}"  # seconds for the whole check (the device gives a command 8 minutes)
REPORT_S=25
rehearse=0
[ "${1:-}" = "--rehearse" ] && rehearse=1

cuda_available="$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)"
if [ "$cuda_available" != 1 ] && [ "$rehearse" != 1 ]; then
    echo "gpu-check: $PYTHON sees no CUDA device (torch: $("$PYTHON" -c 'import torch; print(torch.__version__)' 2>&1));" \
         "this is no GPU check (--rehearse runs it anyway)" >&2
    exit 2
fi

mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
: >"$LOG"
WORK="$(mktemp -d /tmp/gpu-check.XXXXXX)"
STAGES="$WORK/stages.tsv"
SITE="$WORK/site"
: >"$STAGES"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

record() {  # stage name, exit status, seconds, note
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$STAGES"
    echo "gpu-check: $1: exit $2 after $3 s${4:+ ($4)}"
}

run_stage() {  # stage name, limit in seconds, note, command...: the command under timeout, output to the log
    local name="$1" limit="$2" note="$3"
    shift 3
    local left=$((TOTAL_S - REPORT_S - SECONDS))
    if [ "$limit" -gt "$left" ]; then limit="$left"; fi
    if [ "$limit" -lt 10 ]; then
        record "$name" 124 0 "not run: the check's time is used up"
        return
    fi
    local first_line=$(($(wc -l <"$LOG") + 1)) started=$SECONDS status
    echo "== $name (limit ${limit} s): $*" >>"$LOG"
    timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
    status=$?
    [ "$status" -eq 124 ] && note="timed out after ${limit} s; $note"
    record "$name" "$status" $((SECONDS - started)) "$note"
    if [ "$status" -ne 0 ]; then
        echo "---- last lines of $name ----"
        tail -n "+$first_line" "$LOG" | tail -n 25
    fi
}

install_wheels() {  # every wheel in $WHEELS whose distribution the interpreter lacks, into $SITE
    local started=$SECONDS status=0 note="" wheel name
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        record install 1 0 "no wheels in $WHEELS: run scripts/gpu-wheels.sh where there is network and carry wheels/"
        return
    fi
    for wheel in "$WHEELS"/*.whl; do
        name="$(basename "$wheel" | cut -d- -f1)"
        if "$PYTHON" -c 'import importlib.metadata as m, sys; m.version(sys.argv[1])' "$name" 2>/dev/null; then
            note="$note $name:present"
            continue
        fi
        echo "== install $wheel" >>"$LOG"
        if timeout -k 5 60 "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
            --disable-pip-version-check --target "$SITE" "$wheel" >>"$LOG" 2>&1; then
            note="$note $name:installed"
        else
            status=1
            note="$note $name:FAILED"
        fi
    done
    "$PYTHON" -c 'import xformers' >/dev/null 2>&1 || note="$note; xformers does not import: its tests will fail"
    record install "$status" $((SECONDS - started)) "${note# }"
}

install_wheels

mapfile -t cuda_test_files < <(grep -l "pytest.mark.cuda" tests/test_*.py)
video_note=""
if ! "$PYTHON" -c 'import av, decord' >/dev/null 2>&1; then
    mapfile -t cuda_test_files < <(printf '%s\n' "${cuda_test_files[@]}" | grep -v "tests/test_evaluate.py")
    video_note="test_evaluate.py's CUDA test not run: av and decord do not import (scripts/gpu-wheels.sh without --without-video)"
fi
run_stage cuda-tests 170 "$video_note" "$PYTHON" -m pytest -m cuda -q -rA -p no:cacheprovider \
    --junitxml="$OUT/cuda-tests.xml" "${cuda_test_files[@]}"

bench() {  # suite, limit in seconds, -k expression, note
    run_stage "bench-$1" "$2" "$4" "$PYTHON" -m pytest "benchmarks/bench_$1.py" -k "$3" --benchmark-only -q \
        -p no:cacheprovider --benchmark-json="$OUT/bench-$1.json"
}
bench attention 90 paper "backends at the paper's attention shapes"
bench model_flops 110 paper-0.13b "paper-0.13b training step against the measured matmul rate"
bench ensemble 60 tiny-18k "ensemble against solo member-steps/s, and the optimizer step"

timeout -k 5 "$REPORT_S" "$PYTHON" benchmarks/gpu_check_report.py --out "$OUT" --stages "$STAGES" 2>>"$LOG"
status=$?
rm -rf "$WORK"
echo "gpu-check: ${SECONDS} s in all; results in $OUT"
exit "$status"
