"""Many runs of one model shape as one model: every parameter stacked on a leading member axis.

``EnsembleDiT(config, members)`` computes exactly what ``members`` separate ``dit.model.VideoDiT``
models of ``config`` compute, each on its own clips, in one sequence of operations:

* every linear layer is one batched matrix product over the members (``torch.baddbmm`` of
  ``(M, rows, in)`` by a ``(M, in, out)`` weight);
* attention folds the members into its batch axis, so one kernel call serves all of them (on CUDA
  that call is xformers' ``memory_efficient_attention``);
* layer norms, modulation and the loss act row by row, so no member ever sees another's numbers.

The frozen caption table (``VideoDiTConfig.caption_table == "frozen"``, the stand-in for a frozen text
encoder) is one buffer shared by all members, as every run shares the same text encoder.

Member ``m``'s parameters convert to and from a ``VideoDiT`` state dict (``member_state_dict``,
``load_member``), so a member is initialised exactly as the same run trained alone (its own seed,
``VideoDiT``'s initialisation) and its trained weights are a plain ``VideoDiT`` checkpoint that
sampling and evaluation load as they load any run.

Shapes: clips ``(M, B, C, F, H, W)``, timesteps ``(M, B)``, caption ids and mask ``(M, B, L)``;
the output has the shape of the clips.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from dit.attention import attention
from dit.model import SiLU, VideoDiT, VideoDiTConfig, timestep_embedding
from dit.patches import patchify, sincos_position_embedding_3d, unpatchify
from dit.text import PAD_ID

LAYER_NORM_EPS = 1e-6


class StackedLinear(nn.Module):
    """``members`` independent ``nn.Linear(in_features, out_features)`` layers: ``(M, rows, in) -> (M, rows, out)``.

    ``weight`` is ``(M, in, out)`` (member ``m``'s ``nn.Linear.weight`` transposed), ``bias`` ``(M, 1, out)``.
    """

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(members, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(members, 1, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = torch.baddbmm(self.bias, x.reshape(shape[0], -1, shape[-1]), self.weight)
        return out.reshape(*shape[:-1], out.shape[-1])


def _stacked(members: int, *shape: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(members, *shape))


def _per_member(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(M, ...)`` values broadcast against ``x`` ``(M, B, tokens, d)`` along the member axis."""
    return values.reshape(values.shape[0], *([1] * (x.ndim - values.ndim)), *values.shape[1:])


class EnsembleSelfAttention(nn.Module):
    def __init__(self, members: int, width: int, heads: int, backend: str):
        super().__init__()
        self.heads, self.backend = heads, backend
        self.qkv = StackedLinear(members, width, 3 * width)
        self.proj = StackedLinear(members, width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(m * b, n, 3, self.heads, d // self.heads).unbind(2)
        return self.proj(attention(q, k, v, backend=self.backend).reshape(m, b, n, d))


class EnsembleCrossAttention(nn.Module):
    def __init__(self, members: int, width: int, heads: int, backend: str):
        super().__init__()
        self.heads, self.backend = heads, backend
        self.q = StackedLinear(members, width, width)
        self.kv = StackedLinear(members, width, 2 * width)
        self.proj = StackedLinear(members, width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        m, b, n, d = x.shape
        tokens = context.shape[2]
        q = self.q(x).reshape(m * b, n, self.heads, d // self.heads)
        k, v = self.kv(context).reshape(m * b, tokens, 2, self.heads, d // self.heads).unbind(2)
        out = attention(q, k, v, backend=self.backend, key_padding_mask=context_mask.reshape(m * b, tokens))
        return self.proj(out.reshape(m, b, n, d))


class EnsembleMlp(nn.Module):
    def __init__(self, members: int, width: int, ratio: int):
        super().__init__()
        self.fc1 = StackedLinear(members, width, ratio * width)
        self.fc2 = StackedLinear(members, ratio * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class EnsembleLayerNorm(nn.Module):
    """``nn.LayerNorm(width)`` with an elementwise affine of its own per member."""

    def __init__(self, members: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, width))
        self.bias = nn.Parameter(torch.zeros(members, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normalized = F.layer_norm(x, x.shape[-1:], eps=LAYER_NORM_EPS)
        return torch.addcmul(_per_member(self.bias, x), normalized, _per_member(self.weight, x))


def _norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=LAYER_NORM_EPS)


class EnsembleBlock(nn.Module):
    """``dit.model.CrossDiTBlock`` for ``members`` models at once."""

    def __init__(self, members: int, width: int, heads: int, mlp_ratio: int, backend: str):
        super().__init__()
        self.attn = EnsembleSelfAttention(members, width, heads, backend)
        self.norm2 = EnsembleLayerNorm(members, width)
        self.cross_attn = EnsembleCrossAttention(members, width, heads, backend)
        self.mlp = EnsembleMlp(members, width, mlp_ratio)
        self.modulation_table = _stacked(members, 6, width)

    def forward(self, x, modulation, context, context_mask):
        """``x`` (M, B, n, d); ``modulation`` (M, B, 6, d)."""
        table = self.modulation_table[:, None]  # (M, 1, 6, d)
        shift_sa, scale_sa, gate_sa, shift_mlp, scale_mlp, gate_mlp = (table + modulation).chunk(6, dim=2)
        x = torch.addcmul(x, gate_sa, self.attn(torch.addcmul(shift_sa, _norm(x), 1 + scale_sa)))
        x = x + self.cross_attn(self.norm2(x), context, context_mask)
        return torch.addcmul(x, gate_mlp, self.mlp(torch.addcmul(shift_mlp, _norm(x), 1 + scale_mlp)))


class EnsembleDiT(nn.Module):
    """``members`` ``VideoDiT`` models of one ``config``, parameters stacked on a leading member axis (module docstring)."""

    def __init__(self, config: VideoDiTConfig, members: int):
        super().__init__()
        if members < 1:
            raise ValueError(f"an ensemble needs at least one member, got {members}")
        if config.external_text_width is not None:
            raise ValueError("EnsembleDiT embeds caption ids itself; external caption embeddings are not supported")
        self.config, self.members = config, members
        d, m = config.width, members
        self.patch_embedding = StackedLinear(m, config.patch_dim, d)
        self.register_buffer("position_embedding", sincos_position_embedding_3d(d, config.token_grid), persistent=False)
        self.timestep_embedder = nn.Module()
        self.timestep_embedder.mlp = nn.ModuleList(
            [StackedLinear(m, 256, d), SiLU(), StackedLinear(m, d, d)]
        )
        self.modulation = nn.ModuleList([SiLU(), StackedLinear(m, d, 6 * d)])
        text_width = config.caption_feature_width
        self.caption_embedder = nn.Module()
        if config.caption_table == "frozen":
            self.caption_embedder.register_buffer("token_table", torch.zeros(config.vocab_size, text_width))
        else:
            self.caption_embedder.token_embedding = nn.Module()
            self.caption_embedder.token_embedding.weight = _stacked(m, config.vocab_size, text_width)
        self.caption_embedder.position_embedding = _stacked(m, config.caption_length, text_width)
        self.caption_embedder.projection = nn.ModuleList(
            [StackedLinear(m, text_width, d), nn.GELU(), StackedLinear(m, d, d)]
        )
        self.blocks = nn.ModuleList(
            EnsembleBlock(m, d, config.heads, config.mlp_ratio, config.attention) for _ in range(config.depth)
        )
        self.final_layer = nn.Module()
        self.final_layer.modulation_table = _stacked(m, 2, d)
        self.final_layer.linear = StackedLinear(m, d, config.patch_dim)

    # ---- members <-> VideoDiT state dicts ----------------------------------------------------------

    def _solo_names(self) -> dict[str, tuple[str, str]]:
        """VideoDiT state-dict name -> (the same name here, how to convert it).

        The module tree mirrors ``VideoDiT``'s (its ``nn.Sequential``s are ``nn.ModuleList``s here), so
        names agree; conversions: "linear_weight" (transposed), "linear_bias", "shared" (the frozen
        caption table), "same" (one slice per member).
        """
        names = {}
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            if isinstance(module, StackedLinear):
                names[f"{prefix}weight"] = (f"{prefix}weight", "linear_weight")
                names[f"{prefix}bias"] = (f"{prefix}bias", "linear_bias")
        for name, _ in self.named_parameters():
            if name not in {own for own, _ in names.values()}:
                names[name] = (name, "same")
        if self.config.caption_table == "frozen":
            names["caption_embedder.token_table"] = ("caption_embedder.token_table", "shared")
        return names

    @torch.no_grad()
    def load_member(self, member: int, state: dict[str, torch.Tensor]) -> None:
        """Set member ``member``'s parameters from a ``VideoDiT`` state dict of the same config."""
        own = dict(self.named_parameters()) | dict(self.named_buffers())
        mapping = self._solo_names()
        missing = sorted(set(mapping) - set(state))
        if missing:
            raise ValueError(f"the state dict lacks {missing[:3]} (is it a VideoDiT of this config?)")
        for solo_name, (name, kind) in mapping.items():
            value = state[solo_name]
            if kind == "linear_weight":
                own[name][member].copy_(value.t())
            elif kind == "linear_bias":
                own[name][member, 0].copy_(value)
            elif kind == "shared":
                if member == 0:
                    own[name].copy_(value)
                elif not torch.equal(own[name], value.to(own[name].device)):
                    raise ValueError("members must share the frozen caption table (it depends on no seed)")
            else:
                own[name][member].copy_(value)

    @torch.no_grad()
    def member_state_dict(self, member: int) -> dict[str, torch.Tensor]:
        """Member ``member`` as a ``VideoDiT`` state dict (CPU tensors, independent of this module's storage)."""
        own = dict(self.named_parameters()) | dict(self.named_buffers())
        state = {}
        for solo_name, (name, kind) in self._solo_names().items():
            value = own[name]
            if kind == "linear_weight":
                value = value[member].t()
            elif kind == "linear_bias":
                value = value[member, 0]
            elif kind != "shared":
                value = value[member]
            state[solo_name] = value.detach().to("cpu", copy=True).contiguous()
        return state

    @classmethod
    def from_members(cls, config: VideoDiTConfig, models: list[VideoDiT]) -> "EnsembleDiT":
        """An ensemble whose member ``m`` equals ``models[m]`` (each a ``VideoDiT`` of ``config``)."""
        ensemble = cls(config, len(models))
        for member, model in enumerate(models):
            ensemble.load_member(member, model.state_dict())
        return ensemble

    # ---- forward -----------------------------------------------------------------------------------

    def encode_captions(self, caption_ids: torch.Tensor, caption_mask: Optional[torch.Tensor] = None):
        """Caption tokens ``(M, B, L, d)`` and key mask ``(M, B, L)`` from ids ``(M, B, L)``."""
        if caption_ids.ndim != 3 or caption_ids.shape[0] != self.members:
            raise ValueError(f"caption_ids must have shape (members={self.members}, batch, tokens), "
                             f"got {tuple(caption_ids.shape)}")
        embedder = self.caption_embedder
        if self.config.caption_table == "frozen":
            features = embedder.token_table[caption_ids]
        else:
            table = embedder.token_embedding.weight  # (M, V, E)
            rows = caption_ids.reshape(self.members, -1, 1).expand(-1, -1, table.shape[-1])
            features = torch.gather(table, 1, rows).reshape(*caption_ids.shape, table.shape[-1])
        features = features + embedder.position_embedding[:, None]
        first, activation, second = embedder.projection
        mask = caption_ids != PAD_ID if caption_mask is None else caption_mask
        return second(activation(first(features))), mask

    def denoise(self, video, timesteps, context, context_mask) -> torch.Tensor:
        c = self.config
        m, b = video.shape[:2]
        tokens = patchify(video.reshape(m * b, *video.shape[2:]), c.patch).reshape(m, b, c.tokens_per_clip, -1)
        x = self.patch_embedding(tokens) + self.position_embedding
        first, activation, second = self.timestep_embedder.mlp
        timestep_features = second(activation(first(timestep_embedding(timesteps.reshape(-1)).reshape(m, b, -1))))
        modulation = self.modulation[1](self.modulation[0](timestep_features)).reshape(m, b, 6, c.width)
        for block in self.blocks:
            x = block(x, modulation, context, context_mask)
        shift, scale = (self.final_layer.modulation_table[:, None] + timestep_features[:, :, None]).chunk(2, dim=2)
        x = self.final_layer.linear(torch.addcmul(shift, _norm(x), 1 + scale))
        return unpatchify(x.reshape(m * b, *x.shape[2:]), c.patch, c.in_channels, c.token_grid).reshape(video.shape)

    def forward(self, video, timesteps, caption_ids, caption_mask=None) -> torch.Tensor:
        """Epsilon predictions ``(M, B, C, F, H, W)`` of every member for its own clips."""
        expected = (self.members, video.shape[1], self.config.in_channels, self.config.clip_frames,
                    self.config.clip_height, self.config.clip_width)
        if tuple(video.shape) != expected or tuple(timesteps.shape) != expected[:2]:
            raise ValueError(f"video must be {expected} and timesteps {expected[:2]}, "
                             f"got {tuple(video.shape)} and {tuple(timesteps.shape)}")
        context, context_mask = self.encode_captions(caption_ids, caption_mask)
        return self.denoise(video, timesteps, context, context_mask)
