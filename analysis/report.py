"""The reports, rendered from the facts document with Jinja2 templates (``analysis/templates``).

``python -m analysis.report --facts results/facts.json [--summary results/summary.md] [--findings results/paper/FINDINGS.md]``

The templates hold the prose; every number, interval, flag and verdict comes from ``facts.json``
and is only formatted here (``FILTERS``: significant digits, percentages from fractions, the
confidence level as a percentage, intervals, counts as 16.4k / 2.43B).

Refused before anything is written (exit status 2): a facts file that ``analysis.facts.read_facts`` refuses (unreadable,
or of another schema), one that lacks a fact a template shows (written by older code), and a ``--summary`` or
``--findings`` that is a folder, lies below a file, is the facts file or is named twice.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jinja2

from dit.atomic import OutputPathError, atomic_write_text, check_output_files

from analysis.facts import FactsFileError, missing_fact_message, read_facts
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
        check_output_files([args.summary, args.findings], [args.facts])
        facts = read_facts(args.facts)
    except (OutputPathError, FactsFileError) as error:
        print(f"analysis.report: error: {error}", file=sys.stderr)
        return 2
    rendered = {}
    for path, template in ((args.summary, "summary.md.j2"), (args.findings, "findings.md.j2")):
        if path:
            try:
                rendered[path] = render(template, facts)
            except jinja2.UndefinedError as error:
                message = missing_fact_message(args.facts, facts, f"the template {template} shows", error.message)
                print(f"analysis.report: error: {message}", file=sys.stderr)
                return 2
    for path, text in rendered.items():
        atomic_write_text(Path(path), text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
