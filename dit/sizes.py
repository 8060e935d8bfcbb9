"""Named model sizes and the paper's parameter-counting convention.

Non-embedding parameters ``N`` are counted as the paper does (``../shared/REFERENCE.md``, compute
accounting): each Cross-DiT block holds ``16 * d**2`` weights that count,

* self-attention Q, K, V, O: ``4 d^2``
* cross-attention Q, K, V, O (text projected to width ``d``): ``4 d^2``
* MLP with hidden width ``4 d``: ``8 d^2``

so ``N = 16 * depth * width**2``. Not counted: biases, norms, the adaLN-single modulation (shared MLP
and per-block tables), the timestep embedder, the patch embedding, positional embeddings, the final
layer and the whole text path (token embedding, caption projection). ``dit.flops`` states how these
uncounted terms show up in measured FLOPs.

This module does not import torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

PARAMETERS_PER_BLOCK_PER_WIDTH_SQUARED = 16


@dataclass(frozen=True)
class ModelSize:
    """Shape of one named model size.

    Attributes:
        name: registry key, e.g. ``"tiny-262k"`` or ``"paper-0.72b"``.
        width: hidden width ``d`` (channels per token).
        depth: number of Cross-DiT blocks ``L``.
        heads: attention heads; ``width`` must be divisible by it.
        family: ``"tiny"`` (the embedded CPU grid) or ``"paper"`` (the paper's model family).
        target_parameters: for the paper family, the paper's nominal N in parameters (raw count).
    """

    name: str
    width: int
    depth: int
    heads: int
    family: str
    target_parameters: float | None = None

    def __post_init__(self) -> None:
        if self.width <= 0 or self.depth <= 0 or self.heads <= 0:
            raise ValueError(f"model size {self.name!r}: width, depth and heads must be positive")
        if self.width % self.heads:
            raise ValueError(
                f"model size {self.name!r}: width {self.width} is not divisible by heads {self.heads}"
            )

    @property
    def head_dim(self) -> int:
        """Channels per attention head."""
        return self.width // self.heads

    @property
    def non_embedding_parameters(self) -> int:
        """N under the paper's convention, in parameters (raw count)."""
        return non_embedding_parameters(self.width, self.depth)

    def to_dict(self) -> dict:
        record = asdict(self)
        record["non_embedding_parameters"] = self.non_embedding_parameters
        return record


def non_embedding_parameters(width: int, depth: int) -> int:
    """Non-embedding parameter count N = 16 * depth * width**2 (raw count), the paper's convention."""
    if width <= 0 or depth <= 0:
        raise ValueError(f"width and depth must be positive, got width={width}, depth={depth}")
    return PARAMETERS_PER_BLOCK_PER_WIDTH_SQUARED * depth * width * width


#: Channels per attention head the paper's family uses; tiny sizes come as close as their width allows.
PAPER_HEAD_DIM = 64


def _tiny(name: str, width: int, depth: int) -> ModelSize:
    """A CPU-sized model with paper-like heads: ``width // 64`` heads of 64 channels, or one head below 128."""
    heads = max(1, width // PAPER_HEAD_DIM)
    while width % heads:
        heads -= 1
    return ModelSize(name=name, width=width, depth=depth, heads=heads, family="tiny")


def _paper(name: str, width: int, depth: int, target_billions: float) -> ModelSize:
    return ModelSize(
        name=name,
        width=width,
        depth=depth,
        heads=width // PAPER_HEAD_DIM,
        family="paper",
        target_parameters=target_billions * 1e9,
    )


#: Every named size. Tiny sizes run on a laptop CPU; the paper family matches the paper's N within 3%.
#: Tiny sizes have one attention head up to width 127 (head dim 16 to 96) and heads of 64 channels above:
#: on a CPU, attention over 64 tokens at head dim 8 ran at about 10 GFLOP/s and took 43% of a step.
SIZES: dict[str, ModelSize] = {
    size.name: size
    for size in (
        _tiny("tiny-4k", 16, 1),  # N = 4,096
        _tiny("tiny-8k", 16, 2),  # N = 8,192
        _tiny("tiny-9k", 24, 1),  # N = 9,216
        _tiny("tiny-18k", 24, 2),  # N = 18,432
        _tiny("tiny-33k", 32, 2),  # N = 32,768
        _tiny("tiny-66k", 32, 4),  # N = 65,536
        _tiny("tiny-147k", 48, 4),  # N = 147,456
        _tiny("tiny-262k", 64, 4),  # N = 262,144
        _tiny("tiny-590k", 96, 4),  # N = 589,824
        _tiny("tiny-1m", 128, 4),  # N = 1,048,576
        _tiny("tiny-1.6m", 128, 6),  # N = 1,572,864
        _tiny("tiny-2.5m", 160, 6),  # N = 2,457,600
        _tiny("tiny-4.2m", 192, 7),  # N = 4,128,768
        _paper("paper-0.017b", 256, 16, 0.017),  # N = 16.78M (-1.3%)
        _paper("paper-0.057b", 384, 24, 0.057),  # N = 56.62M (-0.7%)
        _paper("paper-0.13b", 512, 31, 0.13),  # N = 130.02M (+0.0%)
        _paper("paper-0.26b", 768, 28, 0.26),  # N = 264.24M (+1.6%)
        _paper("paper-0.72b", 1152, 34, 0.72),  # N = 721.94M (+0.3%)
        _paper("paper-1.07b", 1280, 41, 1.07),  # N = 1074.79M (+0.4%)
    )
}


def get_size(name: str) -> ModelSize:
    """Look up a named size; an unknown name raises ``KeyError`` listing the known ones."""
    try:
        return SIZES[name]
    except KeyError:
        known = ", ".join(SIZES)
        raise KeyError(f"unknown model size {name!r}; known sizes: {known}") from None


def sizes_in_family(family: str) -> list[ModelSize]:
    """All registered sizes of one family, smallest N first."""
    return sorted(
        (size for size in SIZES.values() if size.family == family),
        key=lambda size: size.non_embedding_parameters,
    )


def width_for_parameters(parameters: float, family: str = "paper") -> float:
    """Width ``d`` for a model of ``parameters`` non-embedding parameters (raw count).

    Inside the family's range, ``log d`` is interpolated linearly in ``log N`` between the registered
    sizes; outside it, the aspect-ratio rule ``d = k * N**p`` fitted by least squares to all sizes of
    the family is used. The paper's C_token formula needs the width of a model of arbitrary size.
    """
    if parameters <= 0:
        raise ValueError(f"parameters must be positive, got {parameters}")
    members = sizes_in_family(family)
    if len(members) < 2:
        raise ValueError(f"family {family!r} has fewer than two sizes")
    log_n = [math.log(size.non_embedding_parameters) for size in members]
    log_d = [math.log(size.width) for size in members]
    x = math.log(parameters)
    if log_n[0] <= x <= log_n[-1]:
        i = max(j for j in range(len(members) - 1) if log_n[j] <= x)
        slope = (log_d[i + 1] - log_d[i]) / (log_n[i + 1] - log_n[i])
        return math.exp(log_d[i] + slope * (x - log_n[i]))
    exponent, log_k = aspect_ratio_rule(family)
    return math.exp(log_k + exponent * x)


def aspect_ratio_rule(family: str = "paper") -> tuple[float, float]:
    """Least-squares fit ``log d = log_k + p * log N`` over a family; returns ``(p, log_k)``."""
    members = sizes_in_family(family)
    xs = [math.log(size.non_embedding_parameters) for size in members]
    ys = [math.log(size.width) for size in members]
    mean_x = sum(xs) / len(xs)
    mean_y = sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    return slope, mean_y - slope * mean_x
