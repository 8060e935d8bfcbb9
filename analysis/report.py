"""The reports, rendered from the facts document with Jinja2 templates (``analysis/templates``).

``python -m analysis.report --facts results/facts.json [--summary results/summary.md] [--findings results/paper/FINDINGS.md]``

The templates hold the prose; every number, interval, flag and verdict comes from ``facts.json``
and is only formatted here (``FILTERS``: significant digits, percentages from fractions, the
confidence level as a percentage, intervals, counts as 16.4k / 2.43B).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import jinja2

from dit.atomic import atomic_write_text

from analysis.facts import SCHEMA
from analysis.formatting import (
    cell,
    count,
    estimate_text,
    interval,
    level,
    percent,
    percent_estimate,
    percent_interval,
    percent_significant,
    percent_significant_interval,
    significant,
)

TEMPLATES = Path(__file__).parent / "templates"


FILTERS = {"sig": significant, "pct": percent, "level": level, "count": count, "interval": interval,
           "pct_interval": percent_interval, "pct_estimate": percent_estimate, "estimate": estimate_text, "cell": cell,
           "pct_sig": percent_significant, "pct_sig_interval": percent_significant_interval}


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters.update(FILTERS)
    return env


def render(template: str, facts: dict) -> str:
    """``template`` (a file in ``analysis/templates``) rendered with the facts' top-level keys."""
    text = "\n".join(line.rstrip() for line in environment().get_template(template).render(**facts).splitlines())
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts", required=True, help="facts.json from analysis.facts")
    parser.add_argument("--summary", help="summary Markdown to write (e.g. results/summary.md)")
    parser.add_argument("--findings", help="findings Markdown to write (e.g. results/paper/FINDINGS.md)")
    args = parser.parse_args(argv)
    if not args.summary and not args.findings:
        parser.error("give --summary, --findings or both")
    try:
        facts = json.loads(Path(args.facts).read_text())
    except (OSError, json.JSONDecodeError) as error:
        print(f"analysis.report: error: cannot read facts {args.facts}: {error}", file=sys.stderr)
        return 2
    if not isinstance(facts, dict) or facts.get("schema") != SCHEMA:
        found = facts.get("schema") if isinstance(facts, dict) else type(facts).__name__
        print(f"analysis.report: error: {args.facts} is not a facts document of schema {SCHEMA} (found {found!r}); "
              "write one with python -m analysis.facts", file=sys.stderr)
        return 2
    rendered = {}
    for path, template in ((args.summary, "summary.md.j2"), (args.findings, "findings.md.j2")):
        if path:
            try:
                rendered[path] = render(template, facts)
            except jinja2.UndefinedError as error:
                commit = facts.get("provenance", {}).get("code_version", {}).get("commit") or "unknown"
                print(f"analysis.report: error: {args.facts} lacks a fact the template {template} shows ({error.message}): "
                      f"it was written by analysis.facts at commit {commit[:12]}, before this report's facts; write it "
                      "again with this code's python -m analysis.facts from its laws file (nothing was written)",
                      file=sys.stderr)
                return 2
    for path, text in rendered.items():
        atomic_write_text(Path(path), text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
