"""Clips as video tokens: tubelet patches in frame-major order, and their fixed 3D sine-cosine positions.

A clip ``(B, C, F, H, W)`` cut into ``patch = (pt, ph, pw)`` tubelets gives a token grid of
``(F/pt, H/ph, W/pw)`` patches along frames, rows and columns; token ``(t, h, w)`` has index
``(t * Gh + h) * Gw + w``, and carries the tubelet's ``C * pt * ph * pw`` values ordered channel,
frame, row, column (as a ``Conv3d(kernel=stride=patch)`` weight is).
"""

from __future__ import annotations

import torch


def sincos_embedding_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``(len(positions), dim)`` sine-cosine features (``dim`` even), float64."""
    frequencies = 1.0 / 10000.0 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.to(torch.float64)[:, None] * frequencies[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_position_embedding_3d(width: int, token_grid: tuple[int, int, int]) -> torch.Tensor:
    """Fixed 3D sine-cosine positional embedding ``(Gt * Gh * Gw, width)``, frame-major token order.

    Rows and columns get ``2 * (width // 6)`` channels each, frames the rest (all even counts).
    """
    spatial = 2 * (width // 6)
    temporal = width - 2 * spatial
    frames, rows, columns = token_grid
    t, h, w = torch.meshgrid(
        torch.arange(frames), torch.arange(rows), torch.arange(columns), indexing="ij"
    )
    return torch.cat(
        [
            sincos_embedding_1d(t.reshape(-1), temporal),
            sincos_embedding_1d(h.reshape(-1), spatial),
            sincos_embedding_1d(w.reshape(-1), spatial),
        ],
        dim=1,
    ).to(torch.float32)


def patchify(video: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """``(B, C, F, H, W)`` -> ``(B, tokens, C * pt * ph * pw)``, tokens frame-major."""
    b, c, f, h, w = video.shape
    pt, ph, pw = patch
    x = video.reshape(b, c, f // pt, pt, h // ph, ph, w // pw, pw)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)
    return x.reshape(b, (f // pt) * (h // ph) * (w // pw), c * pt * ph * pw)


def unpatchify(tokens: torch.Tensor, patch: tuple[int, int, int], channels: int, token_grid: tuple[int, int, int]):
    """Inverse of :func:`patchify`: ``(B, tokens, patch_dim)`` -> ``(B, C, F, H, W)``; ``token_grid`` in patches."""
    b = tokens.shape[0]
    gt, gh, gw = token_grid
    pt, ph, pw = patch
    x = tokens.reshape(b, gt, gh, gw, channels, pt, ph, pw)
    x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)
    return x.reshape(b, channels, gt * pt, gh * ph, gw * pw)
