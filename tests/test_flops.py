"""The analytic FLOP count against torch's FLOP counter on the real model.

``torch.utils.flop_counter.FlopCounterMode`` counts matrix products (mm, addmm, bmm, convolutions)
and the CUDA fused attention kernels; it does not count the CPU fused kernel behind
``scaled_dot_product_attention``, so the exact comparisons use the ``"math"`` attention backend, whose
two products per attention are ``bmm`` calls.

Run with ``-s`` to see, per size, the measured training FLOPs over the paper's ``C_token * tokens`` and
over ``6 N * tokens``.
"""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dit.ddim import ddim_sample
from dit.diffusion import NoiseSchedule, epsilon_mse
from dit.flops import (
    TIMESTEP_FREQUENCY_DIM,
    forward_flops_per_clip,
    inference_flops_per_video,
    paper_flops_per_token,
    six_n_flops_per_token,
    training_flops_per_clip,
)
from dit.model import VideoDiT, VideoDiTConfig

CLIP = dict(clip_frames=8, clip_height=32, clip_width=32)  # 4 x 8 x 8 = 256 tokens with patch (2, 4, 4)
BATCH = 2


def _model(size, **overrides):
    torch.manual_seed(0)
    return VideoDiT(VideoDiTConfig.from_size(size, **{**CLIP, "attention": "math", **overrides}))


def _batch(config, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.rand(BATCH, 3, config.clip_frames, config.clip_height, config.clip_width, generator=generator) * 2 - 1
    noise = torch.randn(x0.shape, generator=generator)
    timesteps = torch.randint(0, 1000, (BATCH,), generator=generator)
    ids = torch.randint(2, config.vocab_size, (BATCH, config.caption_length), generator=generator)
    ids[:, 0] = 1
    ids[:, 10:] = 0
    return x0, noise, timesteps, ids


def _count(function) -> tuple[int, dict]:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops(), {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}


@pytest.mark.parametrize("caption_table", ["frozen", "learned", "external"])
def test_the_engines_training_count_matches_the_measurement_for_every_caption_input(caption_table):
    """``training_flops_per_clip`` as the engine and the benchmarks call it: the frozen table's features carry the
    learned caption position embedding, so backward computes the caption projection's input gradient, as for a
    learned table; external embeddings are data and get none."""
    overrides = {"external_text_width": 12} if caption_table == "external" else {"caption_table": caption_table}
    model = _model("tiny-18k", **overrides)
    config = model.config
    x0, noise, timesteps, ids = _batch(config)
    inputs = {"caption_embeddings": torch.randn(BATCH, config.caption_length, 12)} if caption_table == "external" else {}
    caption = None if caption_table == "external" else ids

    def training_step():
        epsilon_mse(model, NoiseSchedule(), x0, timesteps, noise, caption, **inputs).mean().backward()

    measured, _ = _count(training_step)
    per_clip = training_flops_per_clip(config.forward_flops(), config.caption_feature_width, config.caption_length,
                                       config.width, text_input_gradient=config.caption_features_have_gradient)
    assert config.caption_features_have_gradient is (caption_table != "external")
    assert measured == BATCH * per_clip


@pytest.mark.parametrize("size", ["tiny-33k", "tiny-262k", "tiny-1m"])
def test_training_step_flops_match_the_analytic_count(size):
    model = _model(size)
    config = model.config
    schedule = NoiseSchedule()
    x0, noise, timesteps, ids = _batch(config)
    expected = config.forward_flops()
    n, d = config.tokens_per_clip, config.width

    forward, _ = _count(lambda: model(x0, timesteps, ids))
    assert forward == BATCH * expected.total  # exact: every matrix product is in the count

    def training_step():
        epsilon_mse(model, schedule, x0, timesteps, noise, ids).mean().backward()

    training, operations = _count(training_step)
    # Backward costs twice the forward, except the input gradients nobody needs: the patch embedding's
    # (the clip is data) and the timestep MLP's first linear (its sinusoidal input is fixed).
    unneeded_input_gradients = 2 * n * config.patch_dim * d + 2 * TIMESTEP_FREQUENCY_DIM * d
    assert training == BATCH * (3 * expected.total - unneeded_input_gradients)
    assert set(operations) == {"aten.addmm", "aten.mm", "aten.bmm"}

    tokens = BATCH * n
    N = model.non_embedding_parameters()
    paper = paper_flops_per_token(N, n, d) * tokens
    six_n = six_n_flops_per_token(N) * tokens
    counted_share = expected.counted_by_paper / expected.total
    print(
        f"\n{size}: n={n} d={d} N={N} measured training FLOPs per token {training / tokens:.4g}; "
        f"measured / paper C_token*T = {training / paper:.4f}; measured / 6N*T = {training / six_n:.4f}; "
        f"share of forward FLOPs the paper counts {counted_share:.4f}; terms outside it: "
        + ", ".join(
            f"{name} {value / expected.total:.3%}"
            for name, value in expected.to_dict().items()
            if name not in ("total", "counted_by_paper", "self_attention_projections", "self_attention_scores",
                            "cross_attention_query_output", "mlp")
        )
    )
    # The paper's C_token is exactly 3x the terms it counts; everything else is extra.
    assert paper == pytest.approx(3 * BATCH * expected.counted_by_paper, rel=1e-12)
    assert training > paper


def test_external_embeddings_skip_the_caption_projection_input_gradient():
    model = _model("tiny-33k", external_text_width=40)
    config = model.config
    x0, noise, timesteps, _ = _batch(config)
    embeddings = torch.randn(BATCH, 7, 40)
    expected = config.forward_flops(text_tokens=7)
    forward, _ = _count(lambda: model(x0, timesteps, caption_embeddings=embeddings))
    assert forward == BATCH * expected.total
    training, _ = _count(
        lambda: epsilon_mse(model, NoiseSchedule(), x0, timesteps, noise, caption_embeddings=embeddings).mean().backward()
    )
    n, d = config.tokens_per_clip, config.width
    unneeded = 2 * n * config.patch_dim * d + 2 * TIMESTEP_FREQUENCY_DIM * d + 2 * 7 * 40 * d
    assert training == BATCH * (3 * expected.total - unneeded)


def test_cpu_sdpa_attention_is_invisible_to_the_flop_counter():
    """Why the exact checks use "math": on CPU the fused SDPA kernel is not counted, so only attention scores are missing."""
    model = _model("tiny-33k", attention="sdpa")
    x0, _, timesteps, ids = _batch(model.config)
    expected = model.config.forward_flops()
    forward, operations = _count(lambda: model(x0, timesteps, ids))
    assert "aten.bmm" not in operations
    assert forward == BATCH * (expected.total - expected.self_attention_scores - expected.cross_attention_scores)


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0], ids=["no-guidance", "guidance"])
def test_ddim_sampling_flops_match_inference_flops_per_video(guidance_scale):
    model = _model("tiny-33k", clip_frames=4, clip_height=16, clip_width=16)
    config = model.config
    _, _, _, ids = _batch(config)
    steps = 3
    measured, _ = _count(
        lambda: ddim_sample(model, NoiseSchedule(), ids, ids != 0, (BATCH, 3, 4, 16, 16), steps=steps,
                            guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(0))
    )
    expected = inference_flops_per_video(
        config.width, config.depth, config.tokens_per_clip, config.caption_length, config.patch_dim,
        config.caption_feature_width, sampling_steps=steps, classifier_free_guidance=guidance_scale != 1.0,
    )
    assert measured == BATCH * expected


def test_forward_flops_terms_by_hand():
    flops = forward_flops_per_clip(width=8, depth=2, video_tokens=10, text_tokens=3, patch_dim=12, text_width=5)
    assert flops.self_attention_projections == 2 * 2 * 10 * 4 * 64
    assert flops.self_attention_scores == 2 * (2 * 10 * 10 * 8) * 2  # QK^T and AV, 2 layers
    assert flops.cross_attention_key_value == 2 * 2 * 3 * 2 * 64
    assert flops.counted_by_paper == 2 * (2 * 10 * 14 * 64 + 4 * 10 * 10 * 8)
