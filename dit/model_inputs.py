"""Checks of what ``dit.model.VideoDiT`` is given: noisy clips, timesteps and captions.

Each check raises ``ValueError`` naming the argument, its expected shape (batch, channels, frames,
height, width in model space; captions in tokens) and what it got.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from dit.text import PAD_ID

if TYPE_CHECKING:  # dit.model imports this module
    from dit.model import VideoDiTConfig


def check_video(config: VideoDiTConfig, video: torch.Tensor, timesteps: torch.Tensor) -> None:
    """``video`` float ``(B, C, F, H, W)`` of the config's clip shape, ``timesteps`` ``(B,)``."""
    expected = (config.in_channels, config.clip_frames, config.clip_height, config.clip_width)
    if video.ndim != 5 or tuple(video.shape[1:]) != expected:
        raise ValueError(
            f"video must have shape (batch, channels, frames, height, width) = (B, {', '.join(map(str, expected))}) "
            f"for this model, got {tuple(video.shape)}"
        )
    if not video.is_floating_point():
        raise ValueError(f"video must be a float tensor in model space, got dtype {video.dtype}")
    if timesteps.ndim != 1 or timesteps.shape[0] != video.shape[0]:
        raise ValueError(
            f"timesteps must have shape (batch,) = ({video.shape[0]},), got {tuple(timesteps.shape)}"
        )


def check_caption_ids(
    config: VideoDiTConfig,
    batch_clips: int,
    caption_ids: Optional[torch.Tensor],
    caption_mask: Optional[torch.Tensor],
    caption_embeddings: Optional[torch.Tensor],
) -> torch.Tensor:
    """Checked caption ids ``(B, caption_length)`` for a model with a token table; returns their key mask."""
    if caption_embeddings is not None:
        raise ValueError("caption_embeddings given, but this model has a token embedding; pass caption_ids")
    if caption_ids is None:
        raise ValueError("caption_ids are required (this model embeds caption tokens itself)")
    if tuple(caption_ids.shape) != (batch_clips, config.caption_length):
        raise ValueError(
            f"caption_ids must have shape (batch, caption_length) = ({batch_clips}, {config.caption_length}), "
            f"got {tuple(caption_ids.shape)}"
        )
    if caption_ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"caption_ids must be an integer tensor, got {caption_ids.dtype}")
    if caption_mask is None:
        caption_mask = caption_ids != PAD_ID
    check_caption_mask(caption_mask, (batch_clips, config.caption_length))
    # One device-to-host transfer for both value checks.
    out_of_range, empty_caption = torch.stack(
        [((caption_ids < 0) | (caption_ids >= config.vocab_size)).any(), (~caption_mask.any(dim=1)).any()]
    ).tolist()
    if out_of_range:
        raise ValueError(f"caption_ids must lie in [0, vocab_size={config.vocab_size})")
    if empty_caption:
        raise ValueError("caption_mask masks every token of some caption; keep at least one (the BOS token)")
    return caption_mask


def check_caption_embeddings(
    config: VideoDiTConfig,
    batch_clips: int,
    caption_ids: Optional[torch.Tensor],
    caption_mask: Optional[torch.Tensor],
    caption_embeddings: Optional[torch.Tensor],
) -> torch.Tensor:
    """Checked external caption embeddings ``(B, M, external_text_width)``; returns their key mask."""
    width = config.external_text_width
    if caption_ids is not None:
        raise ValueError("caption_ids given, but this model takes external caption_embeddings")
    if caption_embeddings is None:
        raise ValueError(
            f"caption_embeddings (batch, tokens, {width}) are required (this model has external_text_width set)"
        )
    if caption_embeddings.ndim != 3 or caption_embeddings.shape[0] != batch_clips or caption_embeddings.shape[2] != width:
        raise ValueError(
            f"caption_embeddings must have shape (batch, tokens, external_text_width) = ({batch_clips}, M, {width}), "
            f"got {tuple(caption_embeddings.shape)}"
        )
    tokens = caption_embeddings.shape[1]
    if caption_mask is None:
        return torch.ones(batch_clips, tokens, dtype=torch.bool, device=caption_embeddings.device)
    check_caption_mask(caption_mask, (batch_clips, tokens))
    if not bool(caption_mask.any(dim=1).all()):
        raise ValueError("caption_mask masks every token of some caption; keep at least one")
    return caption_mask


def check_caption_mask(caption_mask: torch.Tensor, shape: tuple[int, int]) -> None:
    """``caption_mask`` bool of ``shape`` (batch, caption tokens)."""
    if caption_mask.dtype != torch.bool or tuple(caption_mask.shape) != shape:
        raise ValueError(
            f"caption_mask must be bool with shape {shape}, got {caption_mask.dtype} {tuple(caption_mask.shape)}"
        )
