"""Compute accounting: tokens per clip, the paper's C_token, plain 6N, and a term-by-term FLOP count.

Units: FLOPs are floating-point operations (a multiply-add is 2 FLOPs); tokens are video tokens
(patches); N is non-embedding parameters as a raw count (``dit.sizes``).

Two conventions for training compute ``C = C_token * T`` (T in video tokens):

* ``paper``: ``C_token = (3/4) * N * (7 + n_ctx / d)``, which equals ``6 * (14/16) * N + 12 * L * n_ctx * d``
  for ``N = 16 L d^2``: 6 FLOPs per weight per token for the 14 d^2 per-layer weights that act on
  video tokens plus the self-attention score and value FLOPs (forward 4 L n_ctx d, training 3x).
* ``6n``: ``C_token = 6 * N``.

``forward_flops_per_clip`` counts every matrix product of the model's forward pass, including the
terms neither convention counts (patch embedding, timestep MLP, adaLN-single modulation, the text
path, cross-attention keys/values over caption tokens, cross-attention scores, final layer); the
tests compare it with ``torch.utils.flop_counter.FlopCounterMode`` on the real model.

This module does not import torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Sequence

from dit.sizes import non_embedding_parameters

FlopConvention = Literal["paper", "6n"]

#: Width of the sinusoidal timestep features fed to the timestep MLP.
TIMESTEP_FREQUENCY_DIM = 256


def tokens_per_clip(frames: int, height: int, width: int, patch: Sequence[int]) -> int:
    """Video tokens per clip for a tubelet patch ``(frames, height, width)`` that tiles the clip exactly."""
    pt, ph, pw = patch
    for name, size, p in (("frames", frames, pt), ("height", height, ph), ("width", width, pw)):
        if p <= 0 or size <= 0:
            raise ValueError(f"{name}: clip size {size} and patch size {p} must be positive")
        if size % p:
            raise ValueError(f"{name}: clip size {size} is not divisible by patch size {p}")
    return (frames // pt) * (height // ph) * (width // pw)


def paper_flops_per_token(parameters: float, context_tokens: float, width: float) -> float:
    """The paper's training FLOPs per video token: ``(3/4) N (7 + n_ctx/d)``.

    Args:
        parameters: N, non-embedding parameters (raw count).
        context_tokens: n_ctx, video tokens per clip (the self-attention sequence length).
        width: d, the model width.
    """
    return 0.75 * parameters * (7.0 + context_tokens / width)


def six_n_flops_per_token(parameters: float) -> float:
    """Plain training FLOPs per token: ``6 N`` (N raw count)."""
    return 6.0 * parameters


def flops_per_token(
    parameters: float, context_tokens: float, width: float, convention: FlopConvention = "paper"
) -> float:
    """Training FLOPs per video token under ``convention`` (``"paper"`` or ``"6n"``)."""
    if convention == "paper":
        return paper_flops_per_token(parameters, context_tokens, width)
    if convention == "6n":
        return six_n_flops_per_token(parameters)
    raise ValueError(f"unknown FLOP convention {convention!r}; use 'paper' or '6n'")


def training_flops(
    tokens: float,
    width: int,
    depth: int,
    context_tokens: int,
    convention: FlopConvention = "paper",
) -> float:
    """Training compute C in FLOPs for ``tokens`` video tokens of a ``width`` x ``depth`` model."""
    parameters = non_embedding_parameters(width, depth)
    return tokens * flops_per_token(parameters, context_tokens, width, convention)


@dataclass(frozen=True)
class ForwardFlops:
    """Forward-pass FLOPs of one clip, term by term (FLOPs, multiply-add = 2).

    ``counted_by_paper`` is the part the paper's C_token counts in a forward pass
    (``2 * 14 d^2`` per token per layer plus the self-attention scores and values).
    """

    patch_embedding: float
    timestep_embedding: float
    modulation: float
    text_projection: float
    self_attention_projections: float
    self_attention_scores: float
    cross_attention_query_output: float
    cross_attention_key_value: float
    cross_attention_scores: float
    mlp: float
    final_layer: float

    @property
    def total(self) -> float:
        return float(sum(asdict(self).values()))

    @property
    def counted_by_paper(self) -> float:
        return (
            self.self_attention_projections
            + self.self_attention_scores
            + self.cross_attention_query_output
            + self.mlp
        )

    def to_dict(self) -> dict:
        record = asdict(self)
        record["total"] = self.total
        record["counted_by_paper"] = self.counted_by_paper
        return record


def forward_flops_per_clip(
    width: int,
    depth: int,
    video_tokens: int,
    text_tokens: int,
    patch_dim: int,
    text_width: int,
    frequency_dim: int = TIMESTEP_FREQUENCY_DIM,
) -> ForwardFlops:
    """Every matrix product in one forward pass of the Cross-DiT (``dit.model.VideoDiT``) on one clip.

    Args:
        width: d. depth: L.
        video_tokens: n, patches per clip. text_tokens: m, caption tokens (keys of cross-attention),
            padding included (padded keys are masked, not skipped).
        patch_dim: values per patch (channels x patch frames x patch height x patch width).
        text_width: width of the text features entering the caption projection.
        frequency_dim: width of the sinusoidal timestep features.

    The model structure this counts: patch embedding ``Linear(patch_dim, d)`` per video token;
    timestep MLP ``Linear(frequency_dim, d) -> SiLU -> Linear(d, d)`` once per clip; adaLN-single
    ``Linear(d, 6 d)`` once per clip (the per-block tables are added, not multiplied); caption projection
    ``Linear(text_width, d) -> GELU -> Linear(d, d)`` per text token; per block self-attention (fused
    QKV ``d -> 3d`` and O ``d -> d`` per video token, scores ``Q K^T`` and ``A V`` over n keys),
    cross-attention (Q and O per video token; fused K, V ``d -> 2d`` per text token; ``Q K^T`` and
    ``A V`` over m keys), MLP ``d -> 4d -> d``; final ``Linear(d, patch_dim)`` per video token.
    Norms, modulation, softmax, activations and the positional-embedding sums are elementwise and not
    counted. ``torch.utils.flop_counter.FlopCounterMode`` measures exactly ``total`` for a forward pass
    with the ``"math"`` attention backend; a training step measures ``3 * total`` minus the input
    gradients the first layers do not need (patch embedding ``2 n patch_dim d`` and timestep MLP's
    first linear ``2 frequency_dim d``, plus the caption projection's first linear
    ``2 m text_width d`` when captions come as external embeddings that need no gradient).
    """
    d, n, m = float(width), float(video_tokens), float(text_tokens)
    per_layer = float(depth)
    return ForwardFlops(
        patch_embedding=2 * n * patch_dim * d,
        timestep_embedding=2 * (frequency_dim * d + d * d),
        modulation=2 * d * 6 * d,
        text_projection=2 * m * (text_width * d + d * d),
        self_attention_projections=per_layer * 2 * n * 4 * d * d,
        self_attention_scores=per_layer * 4 * n * n * d,
        cross_attention_query_output=per_layer * 2 * n * 2 * d * d,
        cross_attention_key_value=per_layer * 2 * m * 2 * d * d,
        cross_attention_scores=per_layer * 4 * n * m * d,
        mlp=per_layer * 2 * n * 8 * d * d,
        final_layer=2 * n * d * patch_dim,
    )


def training_flops_per_clip(forward: ForwardFlops, text_width: int, text_tokens: int, width: int,
                            text_input_gradient: bool, frequency_dim: int = TIMESTEP_FREQUENCY_DIM) -> float:
    """FLOPs of one training step's matrix products per clip: forward, then backward (twice the forward).

    The backward computes no gradient of the inputs of the first layers: the patch embedding's and
    the timestep MLP's first linear, and the caption projection's first linear unless the caption
    features themselves learn (``text_input_gradient``, ``VideoDiTConfig.caption_features_have_gradient``:
    features of caption ids do, as the caption position embedding learns whether the token table is
    learned or frozen; external embeddings do not). ``FlopCounterMode`` measures exactly this with
    "math" attention.
    """
    skipped = forward.patch_embedding + 2.0 * frequency_dim * width
    if not text_input_gradient:
        skipped += 2.0 * text_tokens * text_width * width
    return 3.0 * forward.total - skipped


def inference_flops_per_video(
    width: int,
    depth: int,
    video_tokens: int,
    text_tokens: int,
    patch_dim: int,
    text_width: int,
    sampling_steps: int,
    classifier_free_guidance: bool = False,
) -> float:
    """FLOPs to generate one video: ``sampling_steps`` forward passes (two per step with guidance).

    The caption projection runs once per video (its output does not depend on the step); everything
    else runs at every step. Attention is included. The VAE decoder and text encoder are not.
    """
    if sampling_steps <= 0:
        raise ValueError(f"sampling_steps must be positive, got {sampling_steps}")
    forward = forward_flops_per_clip(width, depth, video_tokens, text_tokens, patch_dim, text_width)
    passes = 2 if classifier_free_guidance else 1
    per_step = forward.total - forward.text_projection
    return sampling_steps * passes * per_step + passes * forward.text_projection
