"""Attention backends agree with the explicit softmax reference; unavailable backends fail loudly."""

import pytest
import torch

from dit import attention as attention_module
from dit.attention import (
    AttentionBackendUnavailable,
    attention,
    math_attention,
    resolve_backend,
    xformers_attention_bias,
)

# (batch, query tokens, key tokens, heads, head_dim): self-attention (Lq == Lk) and cross-attention shapes,
# odd lengths included.
SHAPES = [
    (2, 32, 32, 4, 16),
    (3, 37, 37, 2, 8),
    (2, 33, 7, 4, 16),
    (1, 50, 24, 1, 32),
]


def _inputs(batch, query_tokens, key_tokens, heads, head_dim, seed=0, device="cpu", dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, query_tokens, heads, head_dim, generator=generator, dtype=torch.float32)
    k = torch.randn(batch, key_tokens, heads, head_dim, generator=generator, dtype=torch.float32)
    v = torch.randn(batch, key_tokens, heads, head_dim, generator=generator, dtype=torch.float32)
    return [t.to(device=device, dtype=dtype).requires_grad_(True) for t in (q, k, v)]


def _padding_mask(batch, key_tokens, device="cpu"):
    """Rows keep 1, about half, and all keys (begin token always kept)."""
    mask = torch.ones(batch, key_tokens, dtype=torch.bool, device=device)
    if batch > 1:
        mask[0, 1:] = False
    if batch > 2:
        mask[2, key_tokens // 2 :] = False
    if batch == 1:
        mask[0, key_tokens // 3 :] = False
    return mask


def _outputs_and_gradients(backend, q, k, v, mask):
    out = attention(q, k, v, backend=backend, key_padding_mask=mask)
    weights = torch.linspace(-1, 1, out.numel(), device=out.device, dtype=out.dtype).reshape(out.shape)
    grads = torch.autograd.grad((out * weights).sum(), (q, k, v))
    return out.detach(), grads


@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "padding-mask"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_sdpa_matches_math_outputs_and_gradients(shape, use_mask):
    q, k, v = _inputs(*shape)
    mask = _padding_mask(shape[0], shape[2]) if use_mask else None
    ref_out, ref_grads = _outputs_and_gradients("math", q, k, v, mask)
    out, grads = _outputs_and_gradients("sdpa", q, k, v, mask)
    assert out.shape == (shape[0], shape[1], shape[3], shape[4])
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    for name, grad, ref in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-5, msg=lambda m: f"grad {name}: {m}")


def test_math_attention_is_softmax_of_scaled_scores():
    q, k, v = _inputs(1, 3, 4, 1, 2)
    mask = torch.tensor([[True, False, True, True]])
    scores = (q[0, :, 0] @ k[0, :, 0].T) / 2**0.5
    scores[:, 1] = float("-inf")
    expected = torch.softmax(scores, dim=-1) @ v[0, :, 0]
    torch.testing.assert_close(math_attention(q, k, v, mask)[0, :, 0], expected)


def test_masked_keys_do_not_change_the_output():
    q, k, v = _inputs(2, 9, 6, 2, 8)
    mask = torch.tensor([[True, True, True, False, False, False]] * 2)
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[:, 3:] = 100.0
    v2[:, 3:] = -100.0
    for backend in ("math", "sdpa"):
        torch.testing.assert_close(
            attention(q, k, v, backend=backend, key_padding_mask=mask),
            attention(q, k2, v2, backend=backend, key_padding_mask=mask),
        )


def test_auto_resolves_to_sdpa_on_cpu():
    assert resolve_backend("auto", torch.device("cpu")) == "sdpa"
    q, k, v = _inputs(2, 5, 5, 1, 4)
    torch.testing.assert_close(attention(q, k, v, backend="auto"), attention(q, k, v, backend="sdpa"))


def test_explicit_xformers_on_cpu_raises_clear_error():
    q, k, v = _inputs(1, 4, 4, 1, 8)
    with pytest.raises(AttentionBackendUnavailable, match="'xformers' is unavailable.*CUDA only") as raised:
        attention(q, k, v, backend="xformers")
    assert raised.value.backend == "xformers"


def test_xformers_import_failure_is_reported_not_hidden(monkeypatch):
    monkeypatch.setattr(attention_module, "_xformers_ops", None)
    monkeypatch.setattr(attention_module, "_xformers_import_error", "import xformers.ops failed: ImportError: gone")
    monkeypatch.setattr(attention_module, "_xformers_works_on", {})
    with pytest.raises(AttentionBackendUnavailable, match="ImportError: gone"):
        attention_module.xformers_attention(*_inputs(1, 4, 4, 1, 8))


def test_unknown_backend_and_bad_shapes_raise():
    q, k, v = _inputs(2, 5, 3, 2, 4)
    with pytest.raises(ValueError, match="unknown attention backend 'flash'.*auto, xformers, sdpa, math"):
        attention(q, k, v, backend="flash")
    with pytest.raises(ValueError, match="q must have shape"):
        attention(q[0], k, v)
    with pytest.raises(ValueError, match="does not match q shape"):
        attention(q, k[:1], v[:1])
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(batch, key tokens\) = \(2, 3\)"):
        attention(q, k, v, key_padding_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_padding_mask must be bool"):
        attention(q, k, v, key_padding_mask=torch.ones(2, 3))


def test_xformers_bias_layout_is_padded_and_broadcast():
    mask = torch.tensor([[True] * 5 + [False] * 6, [True] * 11])
    bias = xformers_attention_bias(mask, heads=3, query_tokens=7, dtype=torch.float16)
    assert bias.shape == (2, 3, 7, 11)
    assert bias.stride() == (16, 0, 0, 1)  # last dim padded 11 -> 16, heads/queries broadcast
    assert torch.isinf(bias[0, 2, 6, 5:]).all() and (bias[0, :, :, :5] == 0).all() and (bias[1] == 0).all()


@pytest.mark.cuda
@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "padding-mask"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_xformers_matches_math_on_cuda(shape, use_mask, cuda_xformers):
    assert resolve_backend("auto", cuda_xformers) == "xformers"
    q, k, v = _inputs(*shape, device="cuda")
    mask = _padding_mask(shape[0], shape[2], device="cuda") if use_mask else None
    ref_out, ref_grads = _outputs_and_gradients("math", q, k, v, mask)
    out, grads = _outputs_and_gradients("xformers", q, k, v, mask)
    # Tolerances cover the different summation order of the fused kernel.
    torch.testing.assert_close(out, ref_out, rtol=2e-4, atol=2e-4)
    for name, grad, ref in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-3, atol=1e-3, msg=lambda m: f"grad {name}: {m}")


def test_cuda_tests_skip_only_without_a_cuda_device():
    """tests/conftest.py's rule for the xformers-on-CUDA tests: a CUDA machine where xformers cannot run fails."""
    from conftest import cuda_xformers_outcome

    broken = "import xformers.ops failed: ImportError: gone"
    assert cuda_xformers_outcome(False, None)[0] == "skip"
    assert cuda_xformers_outcome(True, broken) == ("fail", f"a CUDA device is here but xformers cannot run on it: {broken}")
    assert cuda_xformers_outcome(True, None) == ("run", "")
