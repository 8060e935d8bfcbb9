"""The pipeline config (``config/*.yaml``): loaded once, defaults filled in, validated once.

``validate_pipeline_config(config)`` fills in the defaults of ``workflow/schemas/config.schema.yaml``
(the one owner of every default of the pipeline config), checks the config against the schema and
then what a schema cannot say (size names exist, milestones increase, the clip shape tiles into
patches, every run's training config is valid, the analysis keys are valid). Every error names the
key, e.g. ``grid.learning_rates[2]: -0.01 is less than or equal to the minimum of 0``.

``python -m pipeline.config check --config FILE`` runs the same checks from the command line;
``python -m pipeline.config fit-config (--config FILE | --fit-json JSON) --out FIT.yaml`` writes
the fit config that ``python -m analysis.fit`` reads: the ``analysis`` section plus the fitting sizes,
held-out sizes and conventional cell that the grid defines (``fit_config``), validated by
``analysis.config``. Refused before anything is written (exit status 2): ``--fit-json`` text that is not
a JSON object, and an ``--out`` that is a folder, lies below a file or is the ``--config`` file.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml

from analysis.config import FitConfigError, InferenceSetup
from analysis.config import config_from_dict as fit_config_from_dict
from dit.atomic import OutputPathError, atomic_write_text, check_output_files
from dit.config import ConfigError, config_from_dict, read_yaml_mapping
from dit.flops import tokens_per_clip
from dit.sizes import SIZES
from dit.text import CaptionTokenizer
from pipeline.runs import SEED_STRIDE, RunSpec, grid_runs, grid_seeds, same_rate, training_config

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


class PipelineConfigError(ValueError):
    """The pipeline config is invalid; the message names the key."""


def _key_path(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "config"


def _filling_defaults(validator_class):
    """A validator class that also writes each property's schema ``default`` where the instance lacks it."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


def validate_pipeline_config(config: dict[str, Any], schema_path: Path = SCHEMA_PATH) -> None:
    """Fill in the schema's defaults (in place), then raise ``PipelineConfigError`` naming the first bad key."""
    schema = yaml.safe_load(schema_path.read_text())
    validator = _filling_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        error = errors[0]
        if error.context:  # oneOf/anyOf: an alternative of the value's own type says what is wrong
            relevant = [e for e in error.context if not (e.validator == "type" and len(e.relative_path) == 0)]
            error = jsonschema.exceptions.best_match(relevant or error.context)
        raise PipelineConfigError(f"{_key_path(error.absolute_path)}: {error.message}")
    _cross_check(config)


def _fail(key: str, message: str) -> None:
    raise PipelineConfigError(f"{key}: {message}")


def _known_size(key: str, name: str) -> None:
    if name not in SIZES:
        _fail(key, f"unknown model size {name!r}; known sizes: {', '.join(SIZES)}")


def _cross_check(config: Mapping[str, Any]) -> None:
    grid = config["grid"]
    for i, name in enumerate(grid["sizes"]):
        _known_size(f"grid.sizes[{i}]", name)
    for i, name in enumerate(config["heldout"]["sizes"]):
        _known_size(f"heldout.sizes[{i}]", name)
        if name in grid["sizes"]:
            _fail(f"heldout.sizes[{i}]", f"{name} is also a fitting size in grid.sizes")
    if config["heldout"]["compute_optimal_size"]:
        _known_size("heldout.compute_optimal_size", config["heldout"]["compute_optimal_size"])
    seen = set()
    for i, entry in enumerate(grid.get("extra_learning_rates") or []):
        size, rates = entry["size"], entry["learning_rates"]
        if size not in grid["sizes"]:
            _fail(f"grid.extra_learning_rates[{i}].size", f"{size} is not one of grid.sizes")
        if size in seen:
            _fail(f"grid.extra_learning_rates[{i}].size", f"{size} has an entry already")
        seen.add(size)
        repeated = [lr for lr in rates if any(same_rate(float(lr), float(other)) for other in grid["learning_rates"])]
        if repeated:
            _fail(f"grid.extra_learning_rates[{i}].learning_rates", f"{repeated[0]} is already in grid.learning_rates")
    for i, cell in enumerate(config["noise"]["cells"]):
        _known_size(f"noise.cells[{i}].size", cell["size"])
    shared = sorted(set(grid_seeds(config)) & set(config["noise"]["seeds"]))
    if shared:
        _fail("noise.seeds", f"seed {shared[0]} is a grid seed (training.seed + j x {SEED_STRIDE} for j < grid.seeds_per_cell)")
    last = _check_milestones(grid)
    if config["heldout"]["tokens"] > last:
        _fail("heldout.tokens", f"{config['heldout']['tokens']} lies beyond the grid's last milestone {last}")
    prepare = config["data"]["prepare"]
    frames = config["model"]["frames"] or prepare["frames"]
    if frames > prepare["frames"]:
        _fail("model.frames", f"the model takes {frames} frames but data.prepare.frames stores {prepare['frames']}")
    shape = (frames, prepare["height"], prepare["width"])
    latent = config["data"]["latent"]
    if latent:
        try:
            tokens_per_clip(*shape, latent["patch"])
        except ValueError as error:
            _fail("data.latent.patch", f"does not tile the prepared clips ({frames}x{prepare['height']}x{prepare['width']}): {error}")
        shape = tuple(s // p for s, p in zip(shape, latent["patch"]))
        values = 3 * latent["patch"][0] * latent["patch"][1] * latent["patch"][2]
        if latent["channels"] > values:
            _fail("data.latent.channels", f"{latent['channels']} exceeds the {values} values of a {latent['patch']} RGB tubelet")
    try:
        tokens_per_clip(*shape, config["model"]["patch"])
    except ValueError as error:
        where = "the latent grid" if latent else "the prepared clips"
        _fail("model.patch", f"does not tile {where} ({shape[0]}x{shape[1]}x{shape[2]}): {error}")
    values = token_values(config)
    for key, sizes in (("grid.sizes", grid["sizes"]), ("heldout.sizes", config["heldout"]["sizes"])):
        for name in sizes:
            width = SIZES[name].width
            if width <= values:
                _fail(key, f"{name} has width {width}, which does not exceed the {values} values each token carries "
                           f"(data.latent channels x model.patch): the paper's widths (256 and up) exceed its 16, and "
                           f"width-16 models on 16-value tokens lay far above the other sizes' loss law (README)")
    if config["data"]["source"] is None and config["data"]["captions"] is not None:
        _fail("data.captions", "a captions CSV needs data.source (the embedded set writes its own captions)")
    _check_caption_contrasts(caption_contrasts(config))
    for key, value in (("workdir", config["workdir"]), ("results", config["results"]),
                       ("data.source", config["data"]["source"]), ("data.captions", config["data"]["captions"])):
        if value is not None and any(character.isspace() for character in str(value)):
            _fail(key, f"{value!r} contains whitespace, which the pipeline's shell commands do not quote: use a path "
                       "without spaces (a symbolic link to the folder will do)")
    for run in grid_runs(config):
        _check_run(config, run)
    for size in config["heldout"]["sizes"]:
        _check_run(config, RunSpec("heldout", size, grid["batch_clips"][0], grid["learning_rates"][0],
                                   config["training"]["seed"], (config["heldout"]["tokens"],)))
    given = (config["analysis"] or {}).get("inference") or {}
    for key, value in inference_shape(config).items():
        if key in given and given[key] != value:
            _fail(f"analysis.inference.{key}", f"{given[key]} differs from the {value} the models' inputs have "
                                               f"(pipeline.config.inference_shape); leave it out")
    try:
        fit_config_from_dict(fit_config(config))
    except FitConfigError as error:
        _fail("analysis", str(error))


def _check_caption_contrasts(words: Mapping[str, list]) -> None:
    key = "evaluation.caption_contrasts"
    for word in [w for pair in words["swap"] for w in pair] + words["exchange"]:
        if len(CaptionTokenizer.words(word)) != 1:
            _fail(key, f"{word!r} is not one caption word (the tokenizer reads {CaptionTokenizer.words(word)})")
        if word in (":", ","):
            _fail(key, f"{word!r} separates the words of dit.evaluate's --swap A:B and --exchange W1,W2 and cannot be one")
    swapped = [CaptionTokenizer.words(w)[0] for pair in words["swap"] for w in pair]
    if len(set(swapped)) != len(swapped):
        _fail(f"{key}.swap", f"each word may appear in one pair only, got {words['swap']}")
    if len(words["exchange"]) == 1:
        _fail(f"{key}.exchange", "needs two or more words (the first two in a caption trade places)")


def _check_milestones(grid: Mapping[str, Any]) -> int:
    """Check that every list of milestones increases and that a per-size mapping covers the grid's sizes;
    returns the largest milestone [tokens] of the grid's sizes.

    A per-size mapping may name a known size that ``grid.sizes`` leaves out: an overlay config that cuts
    the grid to fewer sizes cannot remove the default's entries (Snakemake merges mappings), and such an
    entry is not used. A name that is no model size at all is an error."""
    milestones = grid["milestones_tokens"]
    lists = milestones if isinstance(milestones, Mapping) else {"": milestones}
    used = {}
    for size, budgets in lists.items():
        key = f"grid.milestones_tokens.{size}" if size else "grid.milestones_tokens"
        if list(budgets) != sorted(budgets):
            _fail(key, f"token budgets must increase, got {list(budgets)}")
        if size and size not in grid["sizes"]:
            _known_size(key, size)
            continue
        used[size] = budgets
    missing = [size for size in grid["sizes"] if isinstance(milestones, Mapping) and size not in milestones]
    if missing:
        _fail("grid.milestones_tokens", f"no budgets for {', '.join(missing)} (give a list per size of grid.sizes)")
    return max(max(budgets) for budgets in used.values())


def _check_run(config: Mapping[str, Any], run) -> None:
    record = training_config(config, run, data_root="(prepared data)", codec_path="(latent codec)")
    try:
        checked = config_from_dict(record)
    except ConfigError as error:
        raise PipelineConfigError(f"the training config of run {run.run_id} is invalid: {error}") from None
    processes = int(config["training"]["processes"]) * int(config["training"]["nodes"])
    try:
        checked.validate_world_size(processes)
    except ConfigError as error:
        raise PipelineConfigError(
            f"run {run.run_id} cannot be split over training.processes={processes}: {error}"
        ) from None


def fit_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``analysis.fit`` config: the ``analysis`` section plus what the grid defines."""
    record = dict(config["analysis"] or {})
    record.setdefault("fitting_sizes", list(config["grid"]["sizes"]))
    record.setdefault("heldout_sizes", list(config["heldout"]["sizes"]))
    record.setdefault(
        "conventional_cell",
        {
            "batch_clips": int(config["conventional"]["batch_clips"]),
            "learning_rate": float(config["conventional"]["learning_rate"]),
        },
    )
    inference = {**inference_shape(config), **(record.get("inference") or {})}
    record["inference"] = {key: inference[key] for key in sorted(inference, key=_inference_key_order)}
    return record


#: ``analysis.inference`` keys in ``InferenceSetup``'s order (unknown keys are refused by ``analysis.config``).
INFERENCE_KEYS = [field.name for field in dataclasses.fields(InferenceSetup)]


def _inference_key_order(key: str) -> int:
    return INFERENCE_KEYS.index(key) if key in INFERENCE_KEYS else len(INFERENCE_KEYS)


def inference_shape(config: Mapping[str, Any]) -> dict[str, int]:
    """What a generated video's cost takes from the models' inputs (``analysis.inference``): the values each video
    token carries (``patch_dim``, ``token_values``) and the caption tokens (``text_tokens``, the prepared length)."""
    return {"patch_dim": token_values(config), "text_tokens": int(config["data"]["prepare"]["caption_length"])}


def caption_contrasts(config: Mapping[str, Any]) -> dict[str, list]:
    """``{"swap": [[A, B], ...], "exchange": [W, ...]}`` of ``evaluation.caption_contrasts`` (``auto``: the embedded
    set's words when ``data.source`` is null, none otherwise)."""
    given = config["evaluation"].get("caption_contrasts", "auto")
    if given == "auto":
        if config["data"]["source"] is not None:
            return {"swap": [], "exchange": []}
        from dit.data.synthetic import caption_contrast_words

        return caption_contrast_words()
    return {"swap": [list(pair) for pair in given.get("swap", [])], "exchange": list(given.get("exchange", []))}


def caption_contrast_arguments(config: Mapping[str, Any]) -> str:
    """The ``--swap``/``--exchange`` arguments of ``python -m dit.evaluate captions`` for ``caption_contrasts``."""
    words = caption_contrasts(config)
    arguments = [f"--swap {shlex.quote(f'{first}:{second}')}" for first, second in words["swap"]]
    if words["exchange"]:
        arguments.append("--exchange " + shlex.quote(",".join(words["exchange"])))
    return " ".join(arguments)


def sample_caption_arguments(config: Mapping[str, Any]) -> str:
    """The ``--caption`` arguments of ``python -m dit.sample`` for ``samples.captions``, each quoted for the shell."""
    return " ".join(f"--caption {shlex.quote(caption)}" for caption in (config["samples"]["captions"] or []))


def load_pipeline_config(path: str | Path) -> dict[str, Any]:
    """Read a pipeline config file (``yaml.safe_load``); it still has to be validated."""
    return dict(read_yaml_mapping(path, "pipeline config", PipelineConfigError))


def token_values(config: Mapping[str, Any]) -> int:
    """Values each video token carries into the model: the latent channels (``data.latent``; 3 RGB channels without
    one) times the DiT patch's volume (``model.patch``)."""
    latent = config["data"].get("latent")
    channels = latent["channels"] if latent else 3
    patch = config["model"]["patch"]
    return channels * patch[0] * patch[1] * patch[2]


def model_tokens_per_clip(config: Mapping[str, Any]) -> int:
    """Video tokens per clip the models see: the prepared clip's frames (``model.frames``, else all), height and width,
    through the latent codec's patch (``data.latent``) and the DiT's patch (``model.patch``), which must tile them
    (``validate_pipeline_config`` checks)."""
    prepare = config["data"]["prepare"]
    shape = (config["model"].get("frames") or prepare["frames"], prepare["height"], prepare["width"])
    if config["data"].get("latent"):
        shape = tuple(s // p for s, p in zip(shape, config["data"]["latent"]["patch"]))
    return tokens_per_clip(*shape, config["model"]["patch"])


def fit_json_record(text: str) -> dict[str, Any]:
    """The fit config given as ``--fit-json`` text; ``PipelineConfigError`` unless it is a JSON object."""
    try:
        record = json.loads(text)
    except ValueError as error:
        raise PipelineConfigError(f"--fit-json: not valid JSON ({error})") from None
    if not isinstance(record, dict):
        shown = json.dumps(record)
        raise PipelineConfigError(f"--fit-json: must be a JSON object (the fit config), got "
                                  f"{shown if len(shown) <= 40 else shown[:37] + '...'}")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.config", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate a pipeline config")
    check.add_argument("--config", required=True, type=Path)
    fit = commands.add_parser("fit-config", help="write the analysis.fit config of a pipeline config")
    source = fit.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="pipeline config YAML")
    source.add_argument("--fit-json", help="the fit config itself as JSON (fit_config of the pipeline config)")
    fit.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            config = load_pipeline_config(args.config)
            validate_pipeline_config(config)
            print(f"{args.config}: valid")
            return 0
        try:
            check_output_files([args.out], [args.config])
        except OutputPathError as error:
            print(f"pipeline.config: {error}", file=sys.stderr)
            return 2
        if args.fit_json is not None:
            record = fit_json_record(args.fit_json)
        else:
            config = load_pipeline_config(args.config)
            validate_pipeline_config(config)
            record = fit_config(config)
        try:
            fit_config_from_dict(record)
        except FitConfigError as error:
            raise PipelineConfigError(f"analysis: {error}") from None
        atomic_write_text(args.out, yaml.safe_dump(record, sort_keys=False))
        return 0
    except PipelineConfigError as error:
        print(f"pipeline.config: invalid pipeline config: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
