"""Attention backends at the shapes training uses: the embedded default's and the paper's.

Run: ``.venv/bin/python -m pytest benchmarks/bench_attention.py --benchmark-only -q``
(add ``--benchmark-json FILE`` to keep the numbers; about 1 to 2 minutes on a 2-core CPU).
On CUDA, ``-k paper`` keeps the paper's shapes (what ``scripts/gpu-check.sh`` runs).

Shapes, queries ``(batch, tokens, heads, head_dim)``; self-attention over the video tokens and
cross-attention to the caption tokens under a caption padding mask (each row keeps its begin token
and 1 to L-1 words, as ``dit.text`` pads), both as the model calls them:

* ``default``: the embedded default's model-space clip (``config/config.yaml``: 64 tokens), its 24
  caption tokens, the heads of each size it trains (one head of 24 to 64 channels, two of 64 for
  its held-out size), at the batch attention sees in a training job: the grid's middle batch times
  the members the job folds into attention's batch (for the held-out size, as many as the grid has
  learning rates);
* ``default-former-heads``: the same sizes with the heads they had before commit f1962f2 (head dim
  8 or 16), the shapes the change of heads left behind;
* ``paper``: 1,280 tokens per clip and 120 caption tokens (``config/paper.yaml``), the width of the
  paper's middle fitting size (paper-0.13b, 512) as heads of 64 and of 128 channels, at the clips one
  GPU holds in the paper's smallest batch (64 clips over 8 GPUs: 8) on CUDA, and 1 clip on a CPU.

Backends: ``math`` (the reference), ``sdpa`` and, on CUDA where xformers can run, ``xformers``,
timed in turns in one test per shape, kind and mode. Where it cannot (an xformers whose C++ extensions
were built for another torch), every record carries ``xformers_unavailable_reason`` and the other
backends are still timed: the cuda-marked tests are what fail on an xformers that cannot run. Modes: forward, and forward + backward (gradients of q, k and v). Inputs are built outside the
timed calls; every call ends with a device sync; fp32 on a CPU, bf16 on CUDA, with the CPU threads
of one training job (``training.threads``). The table at the end gives each shape's median per
backend, the spread of the fastest, and the ratio of the backend ``auto`` resolves to (sdpa on a
CPU, xformers on CUDA where it runs) to the fastest (1.00: auto picks the best).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from dit.attention import attention, resolve_backend, xformers_unavailable_reason
from dit.sizes import get_size
from dit.text import PAD_ID
from harness import DEVICE, FORMER_TINY_HEADS, Experiment, InterleavedTimer, caption_ids, run_context

DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
XFORMERS_UNAVAILABLE = xformers_unavailable_reason(DEVICE) if DEVICE.type == "cuda" else None
BACKENDS = ["math", "sdpa"] + (["xformers"] if DEVICE.type == "cuda" and XFORMERS_UNAVAILABLE is None else [])
MODES = ["forward", "forward_backward"]
KINDS = ["self", "cross"]
PAPER_HEAD_DIMS = (64, 128)


@dataclass(frozen=True)
class AttentionShape:
    """Queries ``(batch, tokens, heads, head_dim)``; cross-attention keys are ``caption_tokens`` long."""

    label: str
    tokens: int
    caption_tokens: int
    heads: int
    head_dim: int
    batch: int
    vocab_size: int

    def key_tokens(self, kind: str) -> int:
        return self.tokens if kind == "self" else self.caption_tokens

    @property
    def id(self) -> str:
        return f"{self.label}-n{self.tokens}-h{self.heads}x{self.head_dim}-b{self.batch}"


def default_shapes() -> list[AttentionShape]:
    """The embedded default's shapes, with today's heads and with the heads before f1962f2."""
    default = Experiment.load("config")
    batch = default.middle_batch_clips

    def members(size: str) -> int:  # a held-out size has no grid job: as many members as the grid has learning rates
        try:
            return len(default.job_learning_rates(size, batch))
        except KeyError:
            return len(default.config["grid"]["learning_rates"])

    shapes = []
    for label, heads_of in (("default", lambda size: get_size(size).heads), ("default-former-heads", FORMER_TINY_HEADS.get)):
        for size in [*default.sizes, *default.heldout_sizes]:
            if heads_of(size) is None:  # a size added after f1962f2 had no former heads
                continue
            config = default.model_config(size, heads=heads_of(size))
            shape = AttentionShape(label, config.tokens_per_clip, config.caption_length, config.heads,
                                   config.width // config.heads, members(size) * batch, config.vocab_size)
            if shape not in shapes:
                shapes.append(shape)
    return shapes


def paper_shapes() -> list[AttentionShape]:
    """1,280 tokens, the paper's middle fitting size's width as heads of 64 and 128 channels."""
    paper = Experiment.load("paper")
    config = paper.model_config(paper.sizes[len(paper.sizes) // 2])
    batch = min(paper.config["grid"]["batch_clips"]) // paper.processes if DEVICE.type == "cuda" else 1
    return [AttentionShape("paper", config.tokens_per_clip, config.caption_length, config.width // head_dim, head_dim,
                           batch, config.vocab_size) for head_dim in PAPER_HEAD_DIMS]


SHAPES = default_shapes() + paper_shapes()
_timings: dict[tuple, dict] = {}


AUTO = resolve_backend("auto", DEVICE)  # what ``auto`` runs here


def _inputs(shape: AttentionShape, kind: str, requires_grad: bool):
    generator = torch.Generator().manual_seed(0)
    keys = shape.key_tokens(kind)
    q = torch.randn(shape.batch, shape.tokens, shape.heads, shape.head_dim, generator=generator)
    k, v = (torch.randn(shape.batch, keys, shape.heads, shape.head_dim, generator=generator) for _ in range(2))
    q, k, v = (t.to(DEVICE, DTYPE).requires_grad_(requires_grad) for t in (q, k, v))
    mask = None
    if kind == "cross":
        ids = caption_ids((shape.batch,), shape.vocab_size, shape.caption_tokens, generator)
        mask = (ids != PAD_ID).to(DEVICE)
    return q, k, v, mask


def summary_lines() -> list[str]:
    if not _timings:
        return []
    first = next(iter(_timings.values()))
    lines = ["", f"attention medians in ms on {DEVICE} ({DTYPE}, {first['threads']} threads, torch {torch.__version__}), "
                 f"backends timed in turns; auto resolves to {AUTO}; IQR: of the fastest backend"
                 + (f"; xformers not timed: {XFORMERS_UNAVAILABLE.splitlines()[0]}" if XFORMERS_UNAVAILABLE else ""),
             f"{'shape':<42}{'kind':>6}{'mode':>17}" + "".join(f"{b:>10}" for b in BACKENDS) + f"{'IQR':>8}{'auto/best':>11}"]
    for (shape_id, kind, mode), record in _timings.items():
        spreads = record["backends"]
        best = min(spreads.values(), key=lambda timing: timing["median_s"])
        cells = "".join(f"{spreads[b]['median_s'] * 1e3:>10.3f}" for b in BACKENDS)
        lines.append(f"{shape_id:<42}{kind:>6}{mode:>17}{cells}{best['iqr_s'] * 1e3:>8.3f}{record['auto_over_best']:>11.2f}")
    return lines


def _call(backend: str, q, k, v, mask, mode: str):
    """One attention call of ``backend`` (forward, or forward and the gradients of q, k and v)."""
    def forward():
        with torch.no_grad():
            attention(q, k, v, backend=backend, key_padding_mask=mask)

    def forward_backward():
        out = attention(q, k, v, backend=backend, key_padding_mask=mask)
        torch.autograd.grad(out.sum(), (q, k, v))

    return forward if mode == "forward" else forward_backward


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.id)
def test_attention_backends(benchmark, training_threads, shape, kind, mode):
    q, k, v, mask = _inputs(shape, kind, requires_grad=mode != "forward")
    timer = InterleavedTimer({backend: _call(backend, q, k, v, mask, mode) for backend in BACKENDS}, DEVICE)
    large = shape.tokens * shape.key_tokens(kind) * shape.batch * shape.heads > 2**23
    timer.warm_up(2)
    benchmark.extra_info.update(run_context(DEVICE, DTYPE, shape.batch, {"tokens": shape.tokens}, "auto"))
    benchmark.extra_info.update(shape=shape.label, kind=kind, mode=mode, query_tokens=shape.tokens,
                                key_tokens=shape.key_tokens(kind), heads=shape.heads, head_dim=shape.head_dim,
                                caption_padding_mask=mask is not None, xformers_unavailable_reason=XFORMERS_UNAVAILABLE)
    benchmark.pedantic(timer.round, rounds=7 if large and DEVICE.type == "cpu" else 20, iterations=1)
    spreads = timer.spreads()
    best = min(timing["median_s"] for timing in spreads.values())
    record = {"backends": spreads, "auto_over_best": spreads[AUTO]["median_s"] / best, "threads": torch.get_num_threads()}
    benchmark.extra_info.update(record)
    _timings[(shape.id, kind, mode)] = record
