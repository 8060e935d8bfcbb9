"""Text-conditioned video Diffusion Transformer (Cross-DiT) with adaLN-single modulation.

The model predicts the noise ``epsilon`` added to a clip in model space ``(B, C, F, H, W)``:

1. **Tubelet patch embedding**: the clip is cut into non-overlapping ``patch = (pt, ph, pw)``
   tubelets; each tubelet's ``C * pt * ph * pw`` values (ordered channel, frame, row, column, as a
   ``Conv3d(kernel=stride=patch)`` weight is) go through ``Linear(patch_dim, d)``. Tokens are ordered
   frame-major: ``index = (t * Gh + h) * Gw + w``.
2. **Positional embedding**: fixed 3D sine-cosine over the (t, h, w) token grid (a buffer, not learned).
3. **Timestep**: 256 sinusoidal features -> ``Linear(256, d) -> SiLU -> Linear(d, d)`` gives ``c``.
   adaLN-single (PixArt-alpha): one shared ``SiLU -> Linear(d, 6 d)`` of ``c`` per clip, plus a learned
   ``(6, d)`` table per block, give each block's shift/scale/gate for self-attention and MLP. Both the
   shared linear and the tables start at zero, so every block starts as the identity.
4. **Captions**: ids -> token table ``(vocab_size, text_width)`` + learned positional embedding
   ``(caption_length, text_width)``, or precomputed embeddings ``(B, M, E)`` when
   ``external_text_width = E`` is set; then the caption projection
   ``Linear(text_width, d) -> GELU -> Linear(d, d)``. The token table is either learned
   (``caption_table="learned"``) or **frozen** (``"frozen"``): fixed unit-variance random vectors
   drawn from a seed of their own, the same for every run, standing in for the paper's frozen text
   encoder. A frozen table costs no gradient and no optimizer update (at the tiny widths a learned
   4,096-row table holds as many parameters as the model and its AdamW update dominates a step).
5. **Blocks** (``depth`` of them), each:
   ``x += gate_sa * SelfAttention(modulate(LN(x), shift_sa, scale_sa))`` over all video tokens;
   ``x += CrossAttention(LN(x), captions)`` with the caption padding mask (output projection starts at
   zero); ``x += gate_mlp * MLP(modulate(LN(x), shift_mlp, scale_mlp))`` with ``MLP = d -> 4d -> d``, GELU
   (exact erf form: the tanh approximation DiT uses is about 8x slower on CPU, the same on CUDA).
6. **Final layer**: ``LN(x)`` modulated by shift/scale from a learned ``(2, d)`` table plus ``c``, then
   ``Linear(d, patch_dim)`` (zero at init) and unpatchify back to ``(B, C, F, H, W)``.

``dit.flops.forward_flops_per_clip`` counts the matrix products of exactly this structure. The paper's
non-embedding parameters ``N = 16 * depth * d**2`` are the block linear weights (self-attention Q, K, V,
O; cross-attention Q, K, V, O; MLP), without biases: :meth:`VideoDiT.non_embedding_parameters`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from dit.attention import BACKENDS, attention
from dit.flops import TIMESTEP_FREQUENCY_DIM, ForwardFlops, forward_flops_per_clip, tokens_per_clip
from dit.model_inputs import check_caption_embeddings, check_caption_ids, check_video
from dit.patches import patchify, sincos_position_embedding_3d, unpatchify
from dit.sizes import get_size
from dit.text import BOS_ID, PAD_ID

#: Kinds of caption token table: trained with the model, or fixed (a frozen text encoder's stand-in).
CAPTION_TABLES = ("learned", "frozen")
#: Seed of the frozen caption table: one table per (vocab_size, text_width), shared by every run.
FROZEN_CAPTION_TABLE_SEED = 20241126
#: ATen's elementwise CPU loops take two vector registers of elements at a time and compute what is left at a
#: tensor's end with the scalar formula. SiLU's scalar ``exp`` rounds differently from its vector form in the
#: last bit (GELU's ``erf`` does not, in tensors of two elements or more: ``tests/test_ensemble.py`` checks both).
#: A tensor padded to a multiple of this many elements (two AVX-512 registers of float32, twice) has no such rest.
CPU_VECTOR_ELEMENTS = 64


def size_independent(function, x: torch.Tensor) -> torch.Tensor:
    """``function(x)`` (an elementwise activation) with every element computed as it is in any other tensor.

    On a CPU, which elements fall in a tensor's scalar rest depends on its size: in a ``(members, clips,
    width)`` tensor they are the last member's, and a run alone has rests of its own. So a run computed other
    bits alone than in an ensemble (and a long run amplifies a last bit, as any chaotic system does). Computed
    on the flattened tensor padded with zeros to a multiple of ``CPU_VECTOR_ELEMENTS``, every element takes
    the vector path; elements that took it before keep their bits. Other devices compute the function as is.
    """
    rest = -x.numel() % CPU_VECTOR_ELEMENTS
    if x.device.type != "cpu" or (not rest and x.is_contiguous()):
        return function(x)
    flat = x.reshape(-1)
    return function(F.pad(flat, (0, rest)))[:flat.numel()].view(x.shape)


class SiLU(nn.SiLU):
    """``nn.SiLU`` whose value at an element does not depend on the tensor's size (``size_independent``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return size_independent(F.silu, x)


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoDiTConfig:
    """Shape of a VideoDiT.

    Attributes:
        width, depth, heads: d, L and attention heads (``dit.sizes.ModelSize``).
        clip_frames, clip_height, clip_width: model input clip shape in frames and pixels.
        patch: tubelet ``(frames, height, width)``; must tile the clip exactly.
        in_channels: channels of the model-space clip.
        mlp_ratio: MLP hidden width over ``width``.
        vocab_size, caption_length: must match the caption tokenizer (``dit.text``).
        text_width: width of the caption token table (None -> ``width``).
        caption_table: ``"learned"`` or ``"frozen"`` token table (module docstring).
        external_text_width: if set, there is no token embedding and ``forward`` takes precomputed
            ``caption_embeddings`` of this width.
        attention: attention backend, ``"auto" | "xformers" | "sdpa" | "math"`` (``dit.attention``).
    """

    width: int
    depth: int
    heads: int
    clip_frames: int
    clip_height: int
    clip_width: int
    patch: tuple[int, int, int] = (2, 4, 4)
    in_channels: int = 3
    mlp_ratio: int = 4
    vocab_size: int = 4096
    caption_length: int = 24
    text_width: Optional[int] = None
    external_text_width: Optional[int] = None
    attention: str = "auto"
    caption_table: str = "frozen"

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch", tuple(int(p) for p in self.patch))
        if len(self.patch) != 3:
            raise ValueError(f"patch must be (frames, height, width), got {self.patch}")
        for name in ("width", "depth", "heads", "in_channels", "mlp_ratio", "vocab_size", "caption_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"VideoDiTConfig.{name} must be a positive integer, got {value!r}")
        for name in ("text_width", "external_text_width"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"VideoDiTConfig.{name} must be None or a positive integer, got {value!r}")
        if self.width % self.heads:
            raise ValueError(f"VideoDiTConfig.width {self.width} is not divisible by heads {self.heads}")
        if self.width % 2 or self.width < 6:
            raise ValueError(
                f"VideoDiTConfig.width must be even and at least 6 for the 3D sine-cosine embedding, got {self.width}"
            )
        if self.caption_table not in CAPTION_TABLES:
            raise ValueError(f"VideoDiTConfig.caption_table {self.caption_table!r} is not one of {', '.join(CAPTION_TABLES)}")
        if self.attention not in BACKENDS:
            raise ValueError(f"VideoDiTConfig.attention {self.attention!r} is not one of {', '.join(BACKENDS)}")
        tokens_per_clip(self.clip_frames, self.clip_height, self.clip_width, self.patch)  # validates tiling

    @classmethod
    def from_size(cls, size_name: str, **overrides) -> "VideoDiTConfig":
        """Config for a named size of ``dit.sizes``; ``overrides`` must give the clip shape."""
        size = get_size(size_name)
        missing = [name for name in ("clip_frames", "clip_height", "clip_width") if name not in overrides]
        if missing:
            raise ValueError(f"VideoDiTConfig.from_size({size_name!r}) needs {', '.join(missing)}")
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown VideoDiTConfig fields {unknown}; known fields: {sorted(known)}")
        values = {"width": size.width, "depth": size.depth, "heads": size.heads}
        values.update(overrides)
        return cls(**values)

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """Video tokens along frames, rows and columns: ``(frames, rows, columns)`` in patches."""
        pt, ph, pw = self.patch
        return self.clip_frames // pt, self.clip_height // ph, self.clip_width // pw


    @property
    def tokens_per_clip(self) -> int:
        """Video tokens (patches) per clip: the self-attention sequence length n_ctx."""
        return tokens_per_clip(self.clip_frames, self.clip_height, self.clip_width, self.patch)

    @property
    def patch_dim(self) -> int:
        """Values per tubelet: ``in_channels * pt * ph * pw``."""
        pt, ph, pw = self.patch
        return self.in_channels * pt * ph * pw

    @property
    def caption_feature_width(self) -> int:
        """Width of the caption features entering the caption projection."""
        if self.external_text_width is not None:
            return self.external_text_width
        return self.text_width if self.text_width is not None else self.width

    @property
    def caption_features_have_gradient(self) -> bool:
        """Whether a training step's backward computes the gradient of the caption features (the input of the caption
        projection): it does for caption ids, whose features carry the learned caption position embedding (and, with
        ``caption_table: learned``, the table's rows), and not for external embeddings, which are data."""
        return self.external_text_width is None

    def forward_flops(self, text_tokens: Optional[int] = None) -> ForwardFlops:
        """FLOPs of one forward pass on one clip, term by term (``dit.flops.forward_flops_per_clip``)."""
        if self.mlp_ratio != 4:
            raise ValueError(f"dit.flops counts an MLP of ratio 4; this config has mlp_ratio={self.mlp_ratio}")
        return forward_flops_per_clip(
            width=self.width,
            depth=self.depth,
            video_tokens=self.tokens_per_clip,
            text_tokens=self.caption_length if text_tokens is None else text_tokens,
            patch_dim=self.patch_dim,
            text_width=self.caption_feature_width,
        )

    def to_dict(self) -> dict:
        record = asdict(self)
        record["patch"] = list(self.patch)
        return record


# --------------------------------------------------------------------------------------------------
# Embedding helpers (tubelets and their positions: dit.patches)
# --------------------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift``; shift/scale broadcast over tokens."""
    return x * (1 + scale) + shift


def timestep_embedding(timesteps: torch.Tensor, dim: int = TIMESTEP_FREQUENCY_DIM, max_period: float = 10000.0):
    """Sinusoidal features ``[cos, sin]`` of (possibly fractional) timesteps ``(B,)`` -> ``(B, dim)``."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    angles = timesteps.float()[:, None] * frequencies[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class TimestepEmbedder(nn.Module):
    """Timesteps ``(B,)`` -> ``(B, d)``: sinusoidal features then ``Linear -> SiLU -> Linear``."""

    def __init__(self, width: int, frequency_dim: int = TIMESTEP_FREQUENCY_DIM):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, width), SiLU(), nn.Linear(width, width))
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(timesteps, self.frequency_dim))


class CaptionEmbedder(nn.Module):
    """Caption ids ``(B, M)`` or external embeddings ``(B, M, E)`` -> caption tokens ``(B, M, d)``."""

    def __init__(self, config: VideoDiTConfig):
        super().__init__()
        self.external = config.external_text_width is not None
        feature_width = config.caption_feature_width
        self.frozen = not self.external and config.caption_table == "frozen"
        if self.frozen:
            self.register_buffer("token_table", frozen_caption_table(config.vocab_size, feature_width))
        elif not self.external:
            self.token_embedding = nn.Embedding(config.vocab_size, feature_width)
            nn.init.normal_(self.token_embedding.weight, std=0.02)
        if not self.external:
            self.position_embedding = nn.Parameter(torch.zeros(config.caption_length, feature_width))
            nn.init.normal_(self.position_embedding, std=0.02)
        self.projection = nn.Sequential(
            nn.Linear(feature_width, config.width),
            nn.GELU(),
            nn.Linear(config.width, config.width),
        )
        for layer in (self.projection[0], self.projection[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, caption_ids: Optional[torch.Tensor] = None, caption_embeddings: Optional[torch.Tensor] = None):
        if self.external:
            features = caption_embeddings
        elif self.frozen:
            features = self.token_table[caption_ids] + self.position_embedding[None]
        else:
            features = self.token_embedding(caption_ids) + self.position_embedding[None]
        return self.projection(features)


def frozen_caption_table(vocab_size: int, text_width: int) -> torch.Tensor:
    """The frozen caption table ``(vocab_size, text_width)``: standard normal values from a fixed seed.

    Drawn on the CPU from a generator of its own, so it is the same for every run and consumes no
    draw of the global random stream (model initialisation is unchanged by its presence).
    """
    generator = torch.Generator(device="cpu").manual_seed(FROZEN_CAPTION_TABLE_SEED)
    return torch.randn(vocab_size, text_width, generator=generator)


# --------------------------------------------------------------------------------------------------
# Cross-DiT block
# --------------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Multi-head self-attention over all video tokens: fused ``Linear(d, 3d)`` for Q, K, V, then ``Linear(d, d)``."""

    def __init__(self, width: int, heads: int, backend: str):
        super().__init__()
        self.heads = heads
        self.backend = backend
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).unbind(2)
        out = attention(q, k, v, backend=self.backend)
        return self.proj(out.reshape(b, n, d))


class CrossAttention(nn.Module):
    """Video tokens attend to caption tokens: Q from video, K and V from captions, padded keys masked."""

    def __init__(self, width: int, heads: int, backend: str):
        super().__init__()
        self.heads = heads
        self.backend = backend
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: Optional[torch.Tensor]) -> torch.Tensor:
        b, n, d = x.shape
        m = context.shape[1]
        q = self.q(x).reshape(b, n, self.heads, d // self.heads)
        k, v = self.kv(context).reshape(b, m, 2, self.heads, d // self.heads).unbind(2)
        out = attention(q, k, v, backend=self.backend, key_padding_mask=context_mask)
        return self.proj(out.reshape(b, n, d))


class Mlp(nn.Module):
    """``Linear(d, r d) -> GELU -> Linear(r d, d)``."""

    def __init__(self, width: int, ratio: int):
        super().__init__()
        self.fc1 = nn.Linear(width, ratio * width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(ratio * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CrossDiTBlock(nn.Module):
    """Self-attention, cross-attention, MLP; adaLN-single modulation from a per-block ``(6, d)`` table."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, backend: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(width, heads, backend)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.cross_attn = CrossAttention(width, heads, backend)
        self.norm3 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(width, mlp_ratio)
        # Per-block table added to the shared modulation; zero so the block starts as the identity.
        self.modulation_table = nn.Parameter(torch.zeros(6, width))

    def forward(self, x, modulation, context, context_mask):
        """``x`` (B, n, d); ``modulation`` (B, 6, d) from the shared adaLN-single linear."""
        shift_sa, scale_sa, gate_sa, shift_mlp, scale_mlp, gate_mlp = (
            self.modulation_table[None] + modulation
        ).chunk(6, dim=1)
        x = x + gate_sa * self.attn(modulate(self.norm1(x), shift_sa, scale_sa))
        x = x + self.cross_attn(self.norm2(x), context, context_mask)
        x = x + gate_mlp * self.mlp(modulate(self.norm3(x), shift_mlp, scale_mlp))
        return x

    def non_embedding_weights(self) -> list[torch.Tensor]:
        """The block's weights counted in the paper's N (linear weights, no biases)."""
        return [
            self.attn.qkv.weight,
            self.attn.proj.weight,
            self.cross_attn.q.weight,
            self.cross_attn.kv.weight,
            self.cross_attn.proj.weight,
            self.mlp.fc1.weight,
            self.mlp.fc2.weight,
        ]


class FinalLayer(nn.Module):
    """``LN`` modulated by a learned ``(2, d)`` table plus the timestep embedding, then ``Linear(d, patch_dim)``."""

    def __init__(self, width: int, patch_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation_table = nn.Parameter(torch.zeros(2, width))
        self.linear = nn.Linear(width, patch_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, timestep_features: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation_table[None] + timestep_features[:, None]).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class VideoDiT(nn.Module):
    """Text-conditioned video Cross-DiT predicting epsilon (module docstring)."""

    def __init__(self, config: VideoDiTConfig):
        super().__init__()
        self.config = config
        d = config.width
        self.patch_embedding = nn.Linear(config.patch_dim, d)
        self.register_buffer(
            "position_embedding", sincos_position_embedding_3d(d, config.token_grid)[None], persistent=False
        )
        self.timestep_embedder = TimestepEmbedder(d)
        # adaLN-single: one modulation linear shared by all blocks.
        self.modulation = nn.Sequential(SiLU(), nn.Linear(d, 6 * d))
        self.caption_embedder = CaptionEmbedder(config)
        self.blocks = nn.ModuleList(
            CrossDiTBlock(d, config.heads, config.mlp_ratio, config.attention) for _ in range(config.depth)
        )
        self.final_layer = FinalLayer(d, config.patch_dim)
        self._initialize()

    def _initialize(self) -> None:
        """DiT-style: xavier-uniform block linears and patch embedding, zero modulation and outputs."""
        for block in self.blocks:
            for layer in block.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.zeros_(layer.bias)
            # Cross-attention output starts at zero: the block's caption path starts as the identity.
            nn.init.zeros_(block.cross_attn.proj.weight)
            nn.init.zeros_(block.cross_attn.proj.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight)
        nn.init.zeros_(self.patch_embedding.bias)
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    # ---- inputs -----------------------------------------------------------------------------------

    def null_caption(self, batch_clips: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids and mask of the empty caption ``tokenizer.encode("")`` = [BOS, PAD, ...] for ``batch_clips`` clips."""
        if self.config.external_text_width is not None:
            raise ValueError("this model takes external caption embeddings; give the null caption's embeddings")
        ids = torch.full((batch_clips, self.config.caption_length), PAD_ID, dtype=torch.long, device=device)
        ids[:, 0] = BOS_ID
        return ids, ids != PAD_ID

    def encode_captions(
        self,
        batch_clips: int,
        caption_ids: Optional[torch.Tensor] = None,
        caption_mask: Optional[torch.Tensor] = None,
        caption_embeddings: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption tokens ``(B, M, d)`` and their key mask ``(B, M)`` bool, checked against the config.

        With a token embedding, ``caption_ids`` ``(B, caption_length)`` long is required and a missing
        ``caption_mask`` means ``caption_ids != PAD_ID``. With ``external_text_width = E``,
        ``caption_embeddings`` ``(B, M, E)`` is required and a missing mask keeps every token.
        """
        if self.config.external_text_width is None:
            caption_mask = check_caption_ids(self.config, batch_clips, caption_ids, caption_mask, caption_embeddings)
            context = self.caption_embedder(caption_ids=caption_ids.long())
        else:
            caption_mask = check_caption_embeddings(self.config, batch_clips, caption_ids, caption_mask, caption_embeddings)
            context = self.caption_embedder(caption_embeddings=caption_embeddings)
        return context, caption_mask

    # ---- forward ----------------------------------------------------------------------------------

    def denoise(
        self, video: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor
    ) -> torch.Tensor:
        """Epsilon prediction from already encoded captions (``encode_captions``)."""
        check_video(self.config, video, timesteps)
        x = self.patch_embedding(patchify(video, self.config.patch)) + self.position_embedding
        timestep_features = self.timestep_embedder(timesteps)
        modulation = self.modulation(timestep_features).reshape(-1, 6, self.config.width)
        for block in self.blocks:
            x = block(x, modulation, context, context_mask)
        x = self.final_layer(x, timestep_features)
        return unpatchify(x, self.config.patch, self.config.in_channels, self.config.token_grid)

    def forward(
        self,
        video: torch.Tensor,
        timesteps: torch.Tensor,
        caption_ids: Optional[torch.Tensor] = None,
        caption_mask: Optional[torch.Tensor] = None,
        caption_embeddings: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Epsilon prediction.

        Args:
            video: noisy clips in model space, float ``(B, C, F, H, W)`` matching the config.
            timesteps: ``(B,)`` diffusion timesteps, long or float.
            caption_ids, caption_mask, caption_embeddings: see :meth:`encode_captions`.

        Returns:
            ``(B, C, F, H, W)``, same shape as ``video``.
        """
        check_video(self.config, video, timesteps)
        context, context_mask = self.encode_captions(video.shape[0], caption_ids, caption_mask, caption_embeddings)
        return self.denoise(video, timesteps, context, context_mask)

    # ---- accounting -------------------------------------------------------------------------------

    def non_embedding_parameters(self) -> int:
        """N as the paper counts it: block linear weights without biases (== 16 * depth * width**2 at mlp_ratio 4)."""
        return sum(weight.numel() for block in self.blocks for weight in block.non_embedding_weights())

    def total_parameters(self) -> int:
        """Every trainable parameter (raw count)."""
        return sum(parameter.numel() for parameter in self.parameters())
