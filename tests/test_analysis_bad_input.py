"""Bad input to the analysis commands: one line naming the file or option, exit status 2, and nothing written or
changed. The inputs are the committed results (``results/``) and copies of them changed in one key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from analysis.batch_axis import main as batch_axis_main
from analysis.compare import main as compare_main
from analysis.facts import main as facts_main
from analysis.figures import figure_paths
from analysis.figures import main as figures_main
from analysis.fit import main as fit_main
from analysis.heldout import main as heldout_main
from analysis.plan import main as plan_main
from analysis.propose import main as propose_main
from analysis.report import main as report_main
from analysis.tables import TABLE_FILES
from analysis.tables import main as tables_main
from pipeline.formats import key_problem

RESULTS = Path(__file__).resolve().parent.parent / "results"
EARLIER = "an earlier output\n"


def _changed(source: Path, path: Path, change) -> Path:
    """A copy of the JSON file ``source`` at ``path`` with ``change(document)`` applied."""
    document = json.loads(source.read_text())
    change(document)
    path.write_text(json.dumps(document))
    return path


def _earlier(path: Path) -> Path:
    path.write_text(EARLIER)
    return path


def _refused(capsys, *parts: str) -> str:
    """The command's stderr: one line holding every one of ``parts``."""
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if line.strip()]
    assert len(lines) == 1 and all(part in lines[0] for part in parts), error
    return lines[0]


def _earlier_folder(folder: Path, names) -> Path:
    """``folder`` holding an earlier output: each of ``names`` (paths below it) holding ``EARLIER``."""
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        _earlier(folder / name)
    return folder


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------- fit, batch_axis
def test_fit_refuses_a_negative_seed_from_an_option_or_the_config_file(tmp_path, capsys):
    out = _earlier(tmp_path / "laws.json")
    assert fit_main(["--runs", str(RESULTS / "runs.csv"), "--out", str(out), "--seed", "-1"]) == 2
    _refused(capsys, "analysis.fit: error: seed: must be >= 0, got -1")
    config = tmp_path / "fit.yaml"
    config.write_text("seed: -3\n")
    assert fit_main(["--runs", str(RESULTS / "runs.csv"), "--config", str(config), "--out", str(out)]) == 2
    _refused(capsys, "seed: must be >= 0, got -3")
    assert out.read_text() == EARLIER


def test_fit_and_batch_axis_refuse_an_output_that_is_an_input_or_a_folder(tmp_path, capsys):
    runs = tmp_path / "runs.csv"
    shutil.copy(RESULTS / "runs.csv", runs)
    before = runs.read_bytes()
    assert fit_main(["--runs", str(runs), "--out", str(runs)]) == 2
    _refused(capsys, "analysis.fit: error:", str(runs), "also an input")
    assert batch_axis_main(["--runs", str(runs), "--out", str(tmp_path)]) == 2
    _refused(capsys, "analysis.batch_axis: error:", str(tmp_path), "is a folder")
    assert runs.read_bytes() == before


# ---------------------------------------------------------------------------------------------- propose
@pytest.mark.parametrize("options, message", [
    (["--batch-clips", "0", "1", "2"], "--batch-clips: 0 is not a positive whole number"),
    (["--batch-clips", "1.5", "2", "4"], "--batch-clips: 1.5 is not a positive whole number"),
    (["--learning-rates", "nan", "0.1"], "--learning-rates: nan is not a positive finite number"),
    (["--learning-rates", "-0.1", "0.1"], "--learning-rates: -0.1 is not a positive finite number"),
    (["--tokens", "inf"], "--tokens: inf is not a positive whole number"),
    (["--milestones", "-5", "0"], "--milestones: -5 is not a positive whole number"),
    (["--compute-flops", "-1"], "--compute-flops: -1.0 is not a positive finite number"),
    (["--max-compute-tokens", "0"], "--max-compute-tokens: 0.0 is not a positive whole number"),
    (["--seed", "-1"], "--seed: -1 is negative"),
])
def test_propose_refuses_nonsense_grids_budgets_and_seeds(tmp_path, capsys, options, message):
    out = _earlier(tmp_path / "proposal.json")
    defaults = {"--batch-clips": ["1", "2", "4"], "--learning-rates": ["0.000625", "0.00125"], "--tokens": ["131072"]}
    for option in options:
        defaults.pop(option, None)
    arguments = ["--laws", str(RESULTS / "laws.json"), "--size", "tiny-590k", "--no-compute-optimal", "--out", str(out),
                 *[item for option, values in defaults.items() for item in (option, *values)], *options]
    assert propose_main(arguments) == 2
    _refused(capsys, "analysis.propose: error:", message)
    assert out.read_text() == EARLIER


def test_propose_refuses_an_unknown_family_and_an_output_that_is_the_laws_file(tmp_path, capsys):
    laws = tmp_path / "laws.json"
    shutil.copy(RESULTS / "laws.json", laws)
    base = ["--laws", str(laws), "--compute-flops", "1e15", "--batch-clips", "1", "2", "--learning-rates", "1e-3", "2e-3"]
    with pytest.raises(SystemExit) as stopped:
        propose_main([*base, "--family", "bogus", "--out", str(tmp_path / "p.json")])
    assert stopped.value.code == 2 and "--family: invalid choice: 'bogus'" in capsys.readouterr().err
    assert propose_main([*base, "--out", str(laws)]) == 2
    _refused(capsys, "analysis.propose: error:", str(laws), "also an input")
    assert laws.read_bytes() == (RESULTS / "laws.json").read_bytes() and not (tmp_path / "p.json").exists()


# ---------------------------------------------------------------------------------------------- laws files
@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("setup"), "lacks the key 'setup'"),
    (lambda d: d.update(setup="x"), "'setup' is a string, expected an object"),
    (lambda d: d.update(config=None), "'config' is null, expected an object"),
    (lambda d: d["setup"].pop("flop_model"), "lacks the key 'setup.flop_model'"),
    (lambda d: d.pop("optima"), "lacks the key 'optima'"),
    (lambda d: d["laws"].update(learning_rate=[]), "'laws.learning_rate' is a list, expected an object"),
    (lambda d: d["laws"]["loss_optimal"]["parameters"].pop("L_inf"), "lacks the key 'laws.loss_optimal.parameters.L_inf'"),
    (lambda d: d["laws"]["loss_optimal"]["parameters"].update(L_inf="x"),
     "'laws.loss_optimal.parameters.L_inf' is a string, expected a number"),
    (lambda d: d["laws"]["loss_optimal"].update(form="bogus"), "'laws.loss_optimal.form' is 'bogus', not one of the known forms"),
    (lambda d: d["laws"]["learning_rate"]["bootstrap"]["samples"][3].pop(),
     "'laws.learning_rate.bootstrap.samples[3]' has 2 values, expected one per parameter of form LR_opt_law (3)"),
    (lambda d: d["laws"]["kaplan"]["intervals"]["N_c"].__setitem__(0, "low"),
     "'laws.kaplan.intervals.N_c[0]' is a string, expected a number or null"),
    (lambda d: d["laws"]["loss_optimal"]["intervals"].update(L_inf=[0.01]),
     "'laws.loss_optimal.intervals.L_inf' has 1 values, expected 2 (low, high)"),
    (lambda d: d["grids"][2]["cells"][0].pop("learning_rate"), "lacks the key 'grids[2].cells[0].learning_rate'"),
    (lambda d: d["optima"][0].update(interior_batch="yes"), "'optima[0].interior_batch' is a string, expected true or false"),
    (lambda d: d["comparison"]["model_size_reduction"].pop("value"), "lacks the key 'comparison.model_size_reduction.value'"),
    (lambda d: d["recipe_curves"]["cells"][0].update(points="x"), "'recipe_curves.cells[0].points' is a string, expected a list"),
    (lambda d: d["compute_optimal"]["precise"]["parameters"].pop("a"), "lacks the key 'compute_optimal.precise.parameters.a'"),
    (lambda d: d["heldout"]["loss"][3].pop("measured_loss"), "lacks the key 'heldout.loss[3].measured_loss'"),
    (lambda d: d["laws"]["loss_optimal"].pop("fit"), "lacks the key 'laws.loss_optimal.fit'"),
    (lambda d: d["setup"]["noise"]["detail"]["groups"][0].pop("seeds"), "lacks the key 'setup.noise.detail.groups[0].seeds'"),
], ids=["no-setup", "setup-string", "config-null", "no-flop-model", "no-optima", "law-list", "law-parameter-missing",
        "law-parameter-string", "law-form", "law-sample-length", "law-interval", "law-interval-length", "grid-cell",
        "optimum-flag", "comparison-value", "recipe-points", "compute-optimal-parameter", "heldout-loss", "law-fit",
        "noise-group"])
def test_plan_names_the_laws_file_and_the_key_it_lacks(tmp_path, capsys, change, message):
    laws = _changed(RESULTS / "laws.json", tmp_path / "laws.json", change)
    assert plan_main(["--laws", str(laws), "--flops", "1e15"]) == 2
    _refused(capsys, "analysis.plan: error: laws file", str(laws), message)


def test_heldout_refuses_a_broken_laws_file_a_proposal_without_groups_and_an_output_that_is_an_input(tmp_path, capsys):
    laws = _changed(RESULTS / "laws.json", tmp_path / "laws.json", lambda d: d.update(config=None))
    proposal = tmp_path / "proposal.json"
    proposal.write_text(json.dumps({"schema": "analysis.proposal/1", "runs": []}))
    out = _earlier(tmp_path / "heldout.json")
    arguments = ["--runs", str(RESULTS / "runs.csv"), "--proposal", str(proposal)]
    assert heldout_main([*arguments, "--laws", str(laws), "--out", str(out)]) == 2
    _refused(capsys, "analysis.heldout: error: laws file", "'config' is null")
    assert heldout_main([*arguments, "--laws", str(RESULTS / "laws.json"), "--out", str(out)]) == 2
    _refused(capsys, f"analysis.heldout: error: proposal {proposal} lacks the key 'groups'")
    before = laws.read_bytes()
    assert heldout_main([*arguments, "--laws", str(laws), "--out", str(laws)]) == 2
    _refused(capsys, "analysis.heldout: error:", str(laws), "also an input")
    assert out.read_text() == EARLIER and laws.read_bytes() == before


@pytest.mark.parametrize("laws", ["{}", "null"])
def test_compare_refuses_a_laws_file_that_is_not_one(tmp_path, capsys, laws):
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        shutil.copy(RESULTS / "runs.csv", tmp_path / side / "runs.csv")
        shutil.copy(RESULTS / "laws.json", tmp_path / side / "laws.json")
    (tmp_path / "b" / "laws.json").write_text(laws)
    out = _earlier(tmp_path / "comparison.json")
    assert compare_main([str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(out)]) == 2
    captured = capsys.readouterr()
    assert "agree within noise" not in captured.out
    assert "analysis.compare: laws file" in captured.err and "is not an analysis.laws/2 document" in captured.err
    assert compare_main([str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(tmp_path / "a" / "laws.json")]) == 2
    _refused(capsys, "cannot write --json", "also an input")
    assert out.read_text() == EARLIER
    assert (tmp_path / "a" / "laws.json").read_bytes() == (RESULTS / "laws.json").read_bytes()


# ---------------------------------------------------------------------------------------------- facts
def _facts_arguments(tmp_path: Path, **changes) -> tuple[list[str], Path, Path]:
    """The facts command on the committed results, with ``changes`` (option -> path) and an earlier facts.json and
    scorecard.json in ``tmp_path``."""
    options = {"--laws": RESULTS / "laws.json", "--runs": RESULTS / "runs.csv", "--heldout": RESULTS / "heldout.json",
               "--performance": RESULTS / "performance.json", "--batch-axis": RESULTS / "batch_axis.json",
               "--out": _earlier(tmp_path / "facts.json"), "--scorecard": _earlier(tmp_path / "scorecard.json")}
    options.update({f"--{name.replace('_', '-')}": path for name, path in changes.items()})
    return [item for option, path in options.items() for item in (option, str(path))], options["--out"], options["--scorecard"]


def test_facts_refuses_an_input_of_another_kind_or_that_cannot_be_read(tmp_path, capsys):
    proposal = tmp_path / "proposal.json"
    proposal.write_text(json.dumps({"schema": "analysis.proposal/1", "groups": [], "runs": []}))
    truncated = tmp_path / "trunc.json"
    truncated.write_text((RESULTS / "heldout.json").read_text()[:500])
    cases = [
        ({"batch_axis": RESULTS / "performance.json"}, "--batch-axis", "'schema' is None, expected 'analysis.batch_axis/1'"),
        ({"heldout": proposal}, "--heldout", "'schema' is 'analysis.proposal/1', expected 'analysis.heldout/1'"),
        ({"heldout": truncated}, "--heldout", "not valid JSON"),
        ({"performance": tmp_path / "nope.json"}, "--performance", "cannot read the grid performance file"),
        ({"performance": RESULTS / "batch_axis.json"}, "--performance", "lacks the key 'grid_model_flops'"),
    ]
    for changes, option, message in cases:
        arguments, out, card = _facts_arguments(tmp_path, **changes)
        assert facts_main(arguments) == 2
        _refused(capsys, f"analysis.facts: error: {option} {next(iter(changes.values()))}", message)
        assert out.read_text() == EARLIER and card.read_text() == EARLIER


def _damaged(source: Path, target: Path, damage) -> Path:
    document = json.loads(source.read_text())
    damage(document)
    target.write_text(json.dumps(document))
    return target


EVALUATION = RESULTS / "evaluation" / "largest"


@pytest.mark.parametrize("name, source, damage, message", [
    ("heldout", RESULTS / "heldout.json", lambda d: d["groups"][1].pop("tokens"), "lacks the key 'groups[1].tokens'"),
    ("heldout", RESULTS / "heldout.json", lambda d: d["groups"][0]["cells"][2].update(learning_rate="fast"),
     "'groups[0].cells[2].learning_rate' is a string, expected a number"),
    ("heldout", RESULTS / "heldout.json", lambda d: d["groups"][0]["predicted_cell"].pop("batch_tokens"),
     "lacks the key 'groups[0].predicted_cell.batch_tokens'"),
    ("caption_match", EVALUATION / "caption_match.json", lambda d: d["reference"]["direction"].pop("chance"),
     "lacks the key 'reference.direction.chance'"),
    ("caption_match", EVALUATION / "caption_match.json", lambda d: d["samples"]["colour"]["interval"].__setitem__(0, "low"),
     "'samples.colour.interval[0]' is a string, expected a number"),
    ("caption_conditioning", EVALUATION / "caption_conditioning.json",
     lambda d: d["differences"]["swapped_minus_captions"].pop("relative"),
     "lacks the key 'differences.swapped_minus_captions.relative'"),
    ("performance", RESULTS / "performance.json", lambda d: d["parts"]["validation"].pop("seconds"),
     "lacks the key 'parts.validation.seconds'"),
    ("batch_axis", RESULTS / "batch_axis.json", lambda d: d["sizes"][0]["points"][0].pop("batches"),
     "lacks the key 'sizes[0].points[0].batches'"),
], ids=["heldout-tokens", "heldout-cell-rate", "heldout-predicted-cell", "match-reference-chance", "match-interval",
        "conditioning-relative", "performance-part", "batch-axis-points"])
def test_facts_refuses_an_input_lacking_a_nested_key_or_holding_one_of_another_kind(tmp_path, capsys, name, source, damage,
                                                                                     message):
    """Every value the facts read below an input's top level is checked before any work: a damaged one is named by its
    place in the file, with exit status 2, and the earlier outputs stay (not a KeyError or TypeError from deep inside)."""
    damaged = _damaged(source, tmp_path / f"damaged-{source.name}", damage)
    arguments, out, card = _facts_arguments(tmp_path, **{name: damaged})
    assert facts_main(arguments) == 2
    _refused(capsys, f"analysis.facts: error: --{name.replace('_', '-')} {damaged}: {message}")
    assert out.read_text() == EARLIER and card.read_text() == EARLIER


def test_key_problem_reads_dotted_keys_through_lists_and_objects():
    document = {"a": {"b": 1}, "g": [{"t": 1}, {"t": "x"}, {}], "m": {"x": {"v": 1}, "y": {"v": None}}, "o": None}
    assert key_problem(document, {"a.b": float, "m{}.v": (float, None), "g[]": dict}) is None
    assert key_problem(document, {"a.c": float}) == "lacks the key 'a.c'"
    assert key_problem(document, {}, {"a.c": float}) is None, "an optional key may be absent"
    assert key_problem(document, {"g[].t": float}) == "'g[1].t' is a string, expected a number"
    assert key_problem(document, {"g[].t": (float, str)}) == "lacks the key 'g[2].t'"
    assert key_problem(document, {"m{}.v": float}) == "'m.y.v' is null, expected a number"
    assert key_problem(document, {"z.c": float, "o.c": float}) is None, "not looked for below an absent or null parent"
    assert key_problem(document, {"a.b": str}, where="groups[2]") == "'groups[2].a.b' is a number, expected a string"


def test_facts_checks_its_outputs_before_any_work(tmp_path, capsys):
    arguments, out, card = _facts_arguments(tmp_path)
    assert facts_main([*arguments, "--scorecard", str(tmp_path)]) == 2
    _refused(capsys, "analysis.facts: error:", str(tmp_path), "is a folder")
    assert facts_main([*arguments, "--scorecard", str(out)]) == 2
    _refused(capsys, "analysis.facts: error:", str(out), "named twice")
    assert out.read_text() == EARLIER and card.read_text() == EARLIER


def test_facts_prints_its_notes_as_warnings(tmp_path, capsys):
    arguments, out, _ = _facts_arguments(tmp_path)
    assert facts_main([*arguments, "--benchmarks", str(tmp_path / "no-benchmarks")]) == 0
    error = capsys.readouterr().err
    assert f"analysis.facts: warning: benchmarks folder {tmp_path / 'no-benchmarks'} does not exist" in error
    assert json.loads(out.read_text())["notes"] == [f"benchmarks folder {tmp_path / 'no-benchmarks'} does not exist"]


# ---------------------------------------------------------------------------------------------- report, tables, figures
def test_report_checks_every_output_before_writing_any(tmp_path, capsys):
    summary = _earlier(tmp_path / "summary.md")
    (tmp_path / "adir").mkdir()
    facts = RESULTS / "facts.json"
    assert report_main(["--facts", str(facts), "--summary", str(summary), "--findings", str(tmp_path / "adir")]) == 2
    _refused(capsys, "analysis.report: error:", str(tmp_path / "adir"), "is a folder")
    copy = tmp_path / "facts.json"
    shutil.copy(facts, copy)
    assert report_main(["--facts", str(copy), "--summary", str(copy)]) == 2
    _refused(capsys, "analysis.report: error:", str(copy), "also an input")
    assert summary.read_text() == EARLIER and copy.read_bytes() == facts.read_bytes()


def test_tables_refuse_another_document_and_build_every_table_before_writing_any(tmp_path, capsys):
    out = _earlier_folder(tmp_path / "tables", TABLE_FILES)
    before = _files(out)
    assert tables_main(["--facts", str(RESULTS / "laws.json"), "--out", str(out)]) == 2
    _refused(capsys, "analysis.tables: error:", "is not a facts document of schema analysis.facts/1 (found 'analysis.laws/2')")
    facts = _changed(RESULTS / "facts.json", tmp_path / "facts.json", lambda d: d.pop("sources"))
    assert tables_main(["--facts", str(facts), "--out", str(out)]) == 2  # every table would be written before 'sources'
    _refused(capsys, "analysis.tables: error:", str(facts), "lacks a fact the tables show (KeyError: 'sources')")
    assert tables_main(["--facts", str(facts), "--out", str(facts)]) == 2
    _refused(capsys, "analysis.tables: error:", f"{facts} is a file, not a folder")
    assert _files(out) == before and set(before.values()) == {EARLIER}


def test_figures_refuse_a_broken_laws_file_and_draw_every_figure_before_writing_any(tmp_path, capsys):
    out = _earlier_folder(tmp_path / "figures", [p.relative_to(tmp_path / "figures")
                                                 for p in figure_paths(tmp_path / "figures", "both")])
    before = _files(out)
    laws = _changed(RESULTS / "laws.json", tmp_path / "laws.json", lambda d: d.pop("optima"))
    assert figures_main(["--facts", str(RESULTS / "facts.json"), "--laws", str(laws), "--out", str(out)]) == 2
    _refused(capsys, "analysis.figures: error: laws file", "lacks the key 'optima'")
    assert figures_main(["--facts", str(RESULTS / "laws.json"), "--which", "paper", "--out", str(out)]) == 2
    _refused(capsys, "analysis.figures: error:", "is not a facts document of schema analysis.facts/1")
    facts = _changed(RESULTS / "facts.json", tmp_path / "facts.json", lambda d: d.pop("figures"))
    assert figures_main(["--facts", str(facts), "--which", "paper", "--out", str(out)]) == 2  # the first figure needs none
    _refused(capsys, "analysis.figures: error:", str(facts), "lacks what the figures show (KeyError: 'figures')")
    assert _files(out) == before and set(before.values()) == {EARLIER}
