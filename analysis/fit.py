"""Fit every law to a runs table: ``python -m analysis.fit --runs results/runs.csv --config FIT.yaml --out results/laws.json``.

Options: ``--config FILE`` (YAML; keys in ``analysis.config``), one ``--key-name YAML`` option per
config key (overrides the file), ``--allow-partial`` (write the file even when a core law could not
be fitted), ``--print-config`` (print the documented default config and exit), ``--quiet``.

Exit status: 0 written; 2 bad input (runs table, config, or an ``--out`` that is a folder, below a file or one of
the inputs: refused before any work); 3 too few completed runs for a core law
(L(N, T), B_opt, LR_opt) - the message names what is missing and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dit.atomic import OutputPathError, atomic_write_json, check_output_files
from dit.provenance import provenance, table_sha256_without_clocks

from analysis.blas import limit_openblas_threads
from analysis.config import FitConfigError, add_config_options, default_config_yaml, load_config, overrides_from_args
from analysis.laws_document import CORE_LAWS, fit_laws
from analysis.runs import RunsTableError, load_runs
from analysis.selection import AnalysisError


def missing_core_laws(document: dict) -> list[str]:
    """``"law: reason"`` for each core law that was not fitted."""
    return [
        f"{name}: {document['laws'][name].get('reason', 'not fitted')}"
        for name in CORE_LAWS
        if document["laws"].get(name, {}).get("status") != "fitted"
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.fit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", help="runs table (CSV or Parquet), one row per (run, token milestone)")
    parser.add_argument("--config", help="fit config YAML (see --print-config)")
    parser.add_argument("--out", help="laws JSON to write (atomically)")
    parser.add_argument("--allow-partial", action="store_true", help="write the laws file even if a core law is not fitted")
    parser.add_argument("--print-config", action="store_true", help="print the default fit config with its documentation and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_config_options(parser)
    args = parser.parse_args(argv)
    if args.print_config:
        sys.stdout.write(default_config_yaml())
        return 0
    if not args.runs or not args.out:
        parser.error("--runs and --out are required")
    limit_openblas_threads()
    log = (lambda message: None) if args.quiet else (lambda message: print(f"analysis.fit: {message}", file=sys.stderr))
    try:
        check_output_files([args.out], [args.runs, args.config])
        config = load_config(args.config, overrides_from_args(args))
        table = load_runs(args.runs)
        document = fit_laws(table, config, log=log)
    except (FitConfigError, RunsTableError, AnalysisError, OutputPathError) as error:
        print(f"analysis.fit: error: {error}", file=sys.stderr)
        return 2
    missing = missing_core_laws(document)
    if missing and not args.allow_partial:
        print(
            "analysis.fit: error: too few completed runs to fit the core laws; nothing written.\n  "
            + "\n  ".join(missing)
            + "\n  (--allow-partial writes the file with these laws marked 'not fitted')",
            file=sys.stderr,
        )
        return 3
    document["provenance"] = provenance({
        "fit_config": config.to_dict(), "runs": str(args.runs),
        "runs_sha256_without_clocks": table_sha256_without_clocks(args.runs), "config_file": args.config,
    })
    atomic_write_json(args.out, document)
    log(f"wrote {args.out} in {document['timing_seconds']:.1f} s")
    for line in summary_lines(document):
        log(line)
    return 0


def summary_lines(document: dict) -> list[str]:
    lines = []
    for name, law in document["laws"].items():
        if law.get("status") == "fitted":
            parameters = ", ".join(f"{k}={v:.4g}" for k, v in law["parameters"].items())
            lines.append(f"{name}: {parameters}" + (f" [{law['warning']}]" if "warning" in law else ""))
        else:
            lines.append(f"{name}: not fitted: {law.get('reason')}")
    comparison = document.get("comparison", {})
    if comparison.get("status") == "computed":
        lines.append(
            f"at C={comparison['target_flops']:.3g} FLOPs: N_opt precise {comparison['precise']['parameters']['value']:.4g}, "
            f"conventional {comparison['conventional']['parameters']['value']:.4g}, "
            f"model-size reduction {100 * comparison['model_size_reduction']['value']:.1f}%"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
