"""Scaled dot-product attention with one switch for the backend.

Layout: queries ``(B, Lq, H, Dh)``, keys and values ``(B, Lk, H, Dh)``, output ``(B, Lq, H, Dh)``
(batch, sequence in tokens, heads, channels per head; xformers' "BMHK" layout). The scale is
``1 / sqrt(Dh)``; there is no dropout and no causal mask (a diffusion transformer attends to all tokens).

Backends:

* ``"xformers"``: ``xformers.ops.memory_efficient_attention``, CUDA tensors only.
* ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention`` (any device).
* ``"math"``: the explicit ``softmax(Q K^T / sqrt(Dh)) V``, the reference the others are checked against.
  ``torch.utils.flop_counter`` counts its two matrix products as ``bmm``.
* ``"auto"``: ``"xformers"`` on CUDA when xformers imports and a probe call on that device succeeds
  (the answer is cached per device), otherwise ``"sdpa"``.

An explicitly named backend that cannot run raises :class:`AttentionBackendUnavailable`; there is no
silent fallback. ``key_padding_mask`` (``(B, Lk)`` bool, True = the key takes part) is supported by all
backends. A query row whose keys are all masked has no defined output (NaN); callers must keep at
least one key per row (captions always keep their begin token).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "xformers", "sdpa", "math")

#: xformers needs the attention-bias rows to start at addresses aligned to this many elements.
XFORMERS_BIAS_ALIGNMENT = 8


class AttentionBackendUnavailable(RuntimeError):
    """An explicitly requested attention backend cannot run here."""

    def __init__(self, backend: str, reason: str):
        super().__init__(f"attention backend {backend!r} is unavailable: {reason}")
        self.backend = backend
        self.reason = reason


_xformers_ops = None
_xformers_import_error: Optional[str] = None
_xformers_works_on: dict[str, Optional[str]] = {}  # device -> None if it runs, else the reason


def _import_xformers():
    """``xformers.ops`` or None; the import is tried once and its failure reason remembered."""
    global _xformers_ops, _xformers_import_error
    if _xformers_ops is None and _xformers_import_error is None:
        try:
            import xformers.ops as xformers_ops  # deferred: optional at run time (CUDA only), slow, may be broken
        except Exception as error:  # ImportError, or a broken build raising anything else
            _xformers_import_error = f"import xformers.ops failed: {type(error).__name__}: {error}"
        else:
            _xformers_ops = xformers_ops
    return _xformers_ops


def _probe_xformers(ops, device: torch.device) -> None:
    """One forward and backward call with a padding bias, in float32 and bfloat16; raises if any fails.

    Gradients are enabled whatever the caller's context, and no random generator is consumed.
    """
    mask = torch.tensor([[True] * 5 + [False] * 2], device=device)
    with torch.inference_mode(False), torch.enable_grad():
        for dtype in (torch.float32, torch.bfloat16):
            q = torch.linspace(-1, 1, 9 * 2 * 16, device=device).reshape(1, 9, 2, 16).to(dtype).requires_grad_(True)
            kv = torch.linspace(1, -1, 7 * 2 * 16, device=device).reshape(1, 7, 2, 16).to(dtype)
            bias = xformers_attention_bias(mask, heads=2, query_tokens=9, dtype=dtype)
            ops.memory_efficient_attention(q, kv, kv, attn_bias=bias).sum().backward()
    torch.cuda.synchronize(device)


def xformers_unavailable_reason(device: torch.device) -> Optional[str]:
    """Why xformers cannot run on ``device``, or None if a probe call there succeeded (cached)."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"xformers memory_efficient_attention has no kernel for device type {device.type!r} (CUDA only)"
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = str(device)
    if key not in _xformers_works_on:
        ops = _import_xformers()
        if ops is None:
            _xformers_works_on[key] = _xformers_import_error
        else:
            try:
                _probe_xformers(ops, device)
            except Exception as error:
                _xformers_works_on[key] = f"probe call on {key} failed: {type(error).__name__}: {error}"
            else:
                _xformers_works_on[key] = None
    return _xformers_works_on[key]


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend ``attention`` uses for ``backend`` on ``device``.

    Raises:
        ValueError: unknown backend name.
        AttentionBackendUnavailable: ``"xformers"`` was asked for and cannot run on ``device``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        if torch.device(device).type == "cuda" and xformers_unavailable_reason(device) is None:
            return "xformers"
        return "sdpa"
    if backend == "xformers":
        reason = xformers_unavailable_reason(device)
        if reason is not None:
            raise AttentionBackendUnavailable("xformers", reason)
    return backend


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask) -> None:
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        if tensor.ndim != 4:
            raise ValueError(f"{name} must have shape (batch, tokens, heads, head_dim), got {tuple(tensor.shape)}")
    batch, _, heads, head_dim = q.shape
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if (k.shape[0], k.shape[2], k.shape[3]) != (batch, heads, head_dim):
        raise ValueError(
            f"k/v shape {tuple(k.shape)} does not match q shape {tuple(q.shape)} in batch, heads or head_dim"
        )
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise ValueError(f"key_padding_mask must be bool (True = keep), got {key_padding_mask.dtype}")
        if tuple(key_padding_mask.shape) != (batch, k.shape[1]):
            raise ValueError(
                f"key_padding_mask must have shape (batch, key tokens) = {(batch, k.shape[1])}, "
                f"got {tuple(key_padding_mask.shape)}"
            )


def math_attention(q, k, v, key_padding_mask=None):
    """Reference attention: explicit ``softmax(Q K^T / sqrt(Dh)) V`` in (B, L, H, Dh) layout."""
    q, k, v = (tensor.transpose(1, 2) for tensor in (q, k, v))  # (B, H, L, Dh)
    scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if key_padding_mask is not None:
        scores = scores.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.matmul(weights, v).transpose(1, 2)


def sdpa_attention(q, k, v, key_padding_mask=None):
    """``torch.nn.functional.scaled_dot_product_attention`` in (B, L, H, Dh) layout."""
    mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def xformers_attention_bias(key_padding_mask: torch.Tensor, heads: int, query_tokens: int, dtype) -> torch.Tensor:
    """Additive bias (0 = keep, -inf = masked) of shape (B, H, Lq, Lk) in the memory layout xformers needs.

    The storage's last dimension is padded to a multiple of ``XFORMERS_BIAS_ALIGNMENT`` and then sliced
    back to ``Lk``; heads and query rows are broadcast (stride 0).
    """
    batch, key_tokens = key_padding_mask.shape
    padded = -(-key_tokens // XFORMERS_BIAS_ALIGNMENT) * XFORMERS_BIAS_ALIGNMENT
    storage = torch.zeros(batch, 1, 1, padded, device=key_padding_mask.device, dtype=dtype)
    bias = storage[..., :key_tokens]
    bias.masked_fill_(~key_padding_mask[:, None, None, :], float("-inf"))
    return bias.expand(batch, heads, query_tokens, key_tokens)


def xformers_attention(q, k, v, key_padding_mask=None):
    """``xformers.ops.memory_efficient_attention`` (CUDA only) in (B, L, H, Dh) layout."""
    ops = _import_xformers()
    if ops is None:
        raise AttentionBackendUnavailable("xformers", _xformers_import_error)
    bias = None
    if key_padding_mask is not None:
        bias = xformers_attention_bias(key_padding_mask, q.shape[2], q.shape[1], q.dtype)
    return ops.memory_efficient_attention(q, k, v, attn_bias=bias)


_IMPLEMENTATIONS = {"math": math_attention, "sdpa": sdpa_attention, "xformers": xformers_attention}


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    backend: str = "auto",
    key_padding_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Multi-head attention ``softmax(Q K^T / sqrt(Dh)) V``.

    Args:
        q: queries ``(B, Lq, H, Dh)``.
        k, v: keys and values ``(B, Lk, H, Dh)``.
        backend: ``"auto"``, ``"xformers"``, ``"sdpa"`` or ``"math"`` (module docstring).
        key_padding_mask: optional ``(B, Lk)`` bool, True where the key takes part.

    Returns:
        ``(B, Lq, H, Dh)``, the dtype of ``q``.
    """
    _check_inputs(q, k, v, key_padding_mask)
    return _IMPLEMENTATIONS[resolve_backend(backend, q.device)](q, k, v, key_padding_mask)
