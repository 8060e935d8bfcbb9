"""The record of one ``scripts/gpu-check.sh`` run: ``OUT/gpu-check.json`` and a few printed lines.

``python benchmarks/gpu_check_report.py --out OUT --stages STAGES_TSV`` reads what the script left in
``OUT`` (pytest's JUnit XML of the CUDA tests, pytest-benchmark's JSON of each benchmark) and the
stage table the script wrote (name, exit status, seconds, note; tab-separated), looks at this
interpreter's environment (Python, torch, CUDA device, xformers and whether its C++ extensions
loaded, av, decord), and writes ``OUT/gpu-check.json``: the environment, every stage, the test
counts, and the headline numbers: xformers against SDPA at the paper's attention shapes (median ms
and the ratio), the paper-size training step's model FLOP/s against the measured bf16 matmul rate
(MFU), and ensemble against solo member-steps/s. Exit status 0 when every stage passed.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import platform
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import torch

from dit.attention import xformers_unavailable_reason


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Python, torch, CUDA device and driver, xformers (version, C++ extensions, usable on CUDA), av, decord."""
    cuda = torch.cuda.is_available()
    record = {
        "python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cuda_available": cuda, "device_name": torch.cuda.get_device_name() if cuda else None,
        "xformers": package_version("xformers"), "av": package_version("av"), "decord": package_version("decord"),
    }
    if record["xformers"]:
        import xformers  # only here: importing it prints a warning when its C++ extensions do not load

        record["xformers_cpp_extensions_loaded"] = bool(getattr(xformers, "_has_cpp_library", False))
    if cuda:
        record["xformers_unavailable_reason"] = xformers_unavailable_reason(torch.device("cuda"))
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=20)
            record["driver"] = driver.stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            record["driver"] = None
    return record


def read_stages(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return [{"stage": name, "exit_status": int(status), "seconds": int(seconds), "note": note}
                for name, status, seconds, note in csv.reader(handle, delimiter="\t")]


def cuda_test_counts(path: Path) -> dict | None:
    """Tests, failures, errors and skips from pytest's JUnit XML, with the failing tests' names."""
    if not path.exists():
        return None
    root = ElementTree.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    failing = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
               if case.find("failure") is not None or case.find("error") is not None]
    return {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")} | {"failing": failing}


def benchmarks(path: Path) -> list[dict]:
    return json.loads(path.read_text())["benchmarks"] if path.exists() else []


def attention_digest(records: list[dict]) -> list[dict]:
    """Per shape, kind and mode: median ms of each backend (timed in turns) and SDPA's time over xformers'."""
    digest = []
    for record in records:
        info = record["extra_info"]
        medians = {backend: timing["median_s"] * 1e3 for backend, timing in info["backends"].items()}
        ratio = medians["sdpa"] / medians["xformers"] if "sdpa" in medians and "xformers" in medians else None
        digest.append({"shape": f"n{info['query_tokens']}-h{info['heads']}x{info['head_dim']}-b{info['batch_clips']}",
                       "kind": info["kind"], "mode": info["mode"], "median_ms": medians, "sdpa_over_xformers": ratio})
    return digest


def training_step_digest(records: list[dict]) -> list[dict]:
    keys = ("size", "batch_clips", "tokens_per_s", "flops_per_s", "matmul_flops_per_s", "fraction_of_matmul",
            "attention_resolved", "dtype", "peak_memory_gib")
    return [{key: record["extra_info"].get(key) for key in keys} for record in records]


def ensemble_digest(records: list[dict]) -> list[dict]:
    keys = ("size", "members", "before_member_steps_per_s", "solo_member_steps_per_s", "ensemble_member_steps_per_s",
            "ensemble_over_before", "ensemble_over_solo", "meets_target")
    return [{key: record["extra_info"].get(key) for key in keys} for record in records
            if "ensemble_member_steps_per_s" in record["extra_info"]]  # member-step records, not the optimizer's


def summary_lines(report: dict) -> list[str]:
    env = report["environment"]
    lines = [f"gpu-check: {env['device_name'] or 'no CUDA device'}, torch {env['torch']} (CUDA {env['torch_cuda']}), "
             f"xformers {env['xformers'] or 'MISSING'}"
             + (f" ({env['xformers_unavailable_reason'] or 'runs on CUDA'})" if env.get("cuda_available") else "")]
    for stage in report["stages"]:
        state = "passed" if stage["exit_status"] == 0 else f"FAILED (exit {stage['exit_status']})"
        lines.append(f"  {stage['stage']:<22}{state:<20}{stage['seconds']:>5} s  {stage['note']}")
    tests = report["cuda_tests"]
    if tests:
        lines.append(f"  cuda tests: {tests['tests']} run, {tests['failures']} failed, {tests['errors']} errors, "
                     f"{tests['skipped']} skipped" + (f"; failing: {', '.join(tests['failing'])}" if tests["failing"] else ""))
    for row in report["attention"]:
        timed = ", ".join(f"{backend} {ms:.3f} ms" for backend, ms in row["median_ms"].items())
        ratio = f"sdpa/xformers {row['sdpa_over_xformers']:.2f}" if row["sdpa_over_xformers"] is not None else "xformers not timed"
        lines.append(f"  attention {row['shape']} {row['kind']} {row['mode']}: {timed} ({ratio})")
    for row in report["training_step"]:
        lines.append(f"  training step {row['size']} ({row['batch_clips']} clips, {row['dtype']}, attention "
                     f"{row['attention_resolved']}): {row['flops_per_s'] / 1e12:.3g} model TFLOP/s, "
                     f"{row['fraction_of_matmul']:.1%} of the measured matmul {row['matmul_flops_per_s'] / 1e12:.3g} TFLOP/s"
                     + (f", peak {row['peak_memory_gib']:.1f} GiB" if row.get("peak_memory_gib") is not None else ""))
    for row in report["ensemble"]:
        lines.append(f"  ensemble {row['size']} x{row['members']}: {row['ensemble_member_steps_per_s']:.0f} member-steps/s, "
                     f"{row['ensemble_over_solo']:.2f}x solo, {row['ensemble_over_before']:.2f}x before")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="the folder gpu-check.sh writes its results to")
    parser.add_argument("--stages", required=True, type=Path, help="the stage table (name, exit status, seconds, note)")
    args = parser.parse_args(argv)
    report = {
        "environment": environment(),
        "stages": read_stages(args.stages),
        "cuda_tests": cuda_test_counts(args.out / "cuda-tests.xml"),
        "attention": attention_digest(benchmarks(args.out / "bench-attention.json")),
        "training_step": training_step_digest(benchmarks(args.out / "bench-model_flops.json")),
        "ensemble": ensemble_digest(benchmarks(args.out / "bench-ensemble.json")),
    }
    report["passed"] = all(stage["exit_status"] == 0 for stage in report["stages"])
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print("\n".join(summary_lines(report)))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
