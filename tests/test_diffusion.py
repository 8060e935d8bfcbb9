"""Noise schedule, loss, the fixed-noise validation protocol and the DDIM sampler."""

import math

import pytest
import torch

from dit.ddim import ddim_sample, ddim_timesteps
from dit.diffusion import (
    NoiseSchedule,
    ValidationResult,
    epsilon_mse,
    model_space_to_video,
    q_sample,
    training_timesteps,
    validation_loss,
    validation_loss_spread,
    validation_noise,
    validation_timesteps,
    video_to_model_space,
)
from dit.model import VideoDiT, VideoDiTConfig

CLIP = dict(clip_frames=4, clip_height=16, clip_width=16)


def _model(seed=0, perturb=0.05, **overrides):
    torch.manual_seed(seed)
    model = VideoDiT(VideoDiTConfig.from_size("tiny-33k", **{**CLIP, "vocab_size": 64, "caption_length": 8, **overrides}))
    if perturb:
        generator = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * perturb)
    return model


def _clips(count, seed=0):
    """Loader-style dicts' contents for ``count`` clips: uint8 (N, F, H, W, 3) video, captions, indices."""
    generator = torch.Generator().manual_seed(seed)
    video = torch.randint(0, 256, (count, 4, 16, 16, 3), generator=generator, dtype=torch.uint8)
    ids = torch.randint(2, 64, (count, 8), generator=generator)
    ids[:, 0] = 1
    ids[:, 6:] = 0
    index = torch.arange(100, 100 + count)
    return {"video": video, "caption_ids": ids, "caption_mask": ids != 0, "index": index}


def _split(clips, sizes):
    batches, start = [], 0
    for size in sizes:
        batches.append({key: value[start : start + size] for key, value in clips.items()})
        start += size
    assert start == clips["video"].shape[0]
    return batches


# ---- schedule ------------------------------------------------------------------------------------


def test_linear_schedule_values():
    schedule = NoiseSchedule()
    betas = schedule.betas()
    assert betas.shape == (1000,) and betas.dtype == torch.float64
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert betas[1].item() - betas[0].item() == pytest.approx((0.02 - 1e-4) / 999)
    alpha_bar = schedule.alphas_cumprod()
    assert torch.all(alpha_bar[1:] < alpha_bar[:-1])
    assert alpha_bar[0].item() == pytest.approx(1 - 1e-4)
    assert alpha_bar[-1].item() == pytest.approx(math.prod(1 - b for b in betas.tolist()), rel=1e-12)
    assert alpha_bar[-1].item() == pytest.approx(4.036e-5, rel=1e-3)  # the DDPM schedule's end point


def test_cosine_schedule_values():
    schedule = NoiseSchedule(kind="cosine", num_timesteps=100)
    alpha_bar = schedule.alphas_cumprod()
    assert alpha_bar.shape == (100,) and torch.all(alpha_bar[1:] < alpha_bar[:-1])
    assert schedule.betas().max().item() <= 0.999
    expected = math.cos((50 / 100 + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    assert alpha_bar[49].item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(kind="quadratic"), "kind 'quadratic' is not one of linear, cosine"),
        (dict(num_timesteps=0), "num_timesteps must be a positive integer"),
        (dict(beta_start=0.03), "0 < beta_start <= beta_end < 1"),
        (dict(beta_end=1.5), "0 < beta_start <= beta_end < 1"),
        (dict(kind="cosine", cosine_offset=-1.0), "cosine_offset must be >= 0"),
    ],
)
def test_schedule_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        NoiseSchedule(**arguments)


# ---- model space, forward process, loss ------------------------------------------------------------


def test_model_space_round_trip_is_exact():
    video = torch.arange(256, dtype=torch.uint8).repeat(6).reshape(2, 3, 16, 16, 1).expand(-1, -1, -1, -1, 3)
    x = video_to_model_space(video)
    assert x.shape == (2, 3, 3, 16, 16) and x.dtype == torch.float32
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert torch.equal(model_space_to_video(x), video)
    with pytest.raises(ValueError, match="video must be uint8"):
        video_to_model_space(video.float())


def test_q_sample_statistics_and_formula():
    schedule = NoiseSchedule()
    generator = torch.Generator().manual_seed(0)
    x0 = torch.full((2, 3, 8, 32, 32), 0.5)
    noise = torch.randn(x0.shape, generator=generator)
    timesteps = torch.tensor([10, 900])
    x_t = q_sample(schedule, x0, timesteps, noise)
    alpha_bar = schedule.alphas_cumprod()
    for row, t in enumerate(timesteps.tolist()):
        signal, sigma = math.sqrt(alpha_bar[t]), math.sqrt(1 - alpha_bar[t])
        torch.testing.assert_close(x_t[row], signal * x0[row] + sigma * noise[row])
        assert x_t[row].mean().item() == pytest.approx(signal * 0.5, abs=4 * sigma / math.sqrt(x0[row].numel()))
        assert x_t[row].std().item() == pytest.approx(sigma, rel=0.03)
    with pytest.raises(ValueError, match=r"timesteps must lie in \[0, 1000\), got range \[10, 1000\]"):
        q_sample(schedule, x0, torch.tensor([10, 1000]), noise)
    with pytest.raises(ValueError, match="timesteps must be integers"):
        q_sample(schedule, x0, torch.tensor([10.0, 20.0]), noise)


def test_epsilon_mse_is_per_clip_and_equals_noise_power_at_init():
    model = _model(perturb=0.0)  # zero output at init
    clips = _clips(3)
    x0 = video_to_model_space(clips["video"])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    loss = epsilon_mse(model, NoiseSchedule(), x0, torch.tensor([1, 500, 999]), noise, clips["caption_ids"])
    assert loss.shape == (3,)
    torch.testing.assert_close(loss, noise.pow(2).flatten(1).mean(1))


def test_training_a_tiny_model_lowers_epsilon_mse():
    model = _model(perturb=0.0)
    schedule = NoiseSchedule()
    clips = _clips(4)
    x0 = video_to_model_space(clips["video"])
    generator = torch.Generator().manual_seed(3)
    timesteps = torch.randint(0, 1000, (4,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = epsilon_mse(model, schedule, x0, timesteps, noise, clips["caption_ids"], clips["caption_mask"]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


# ---- validation protocol ---------------------------------------------------------------------------


def test_uniform_training_timesteps_are_the_step_generators_draws():
    drawn = training_timesteps("uniform", 1000, seed=5, first_clip=40, clips=6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(drawn, torch.randint(0, 1000, (6,), generator=torch.Generator().manual_seed(3)))


def test_low_discrepancy_timesteps_follow_the_golden_ratio_sequence_from_a_start_per_seed():
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    whole = training_timesteps("low_discrepancy", 1000, seed=7, first_clip=0, clips=5000, generator=generator)
    assert torch.equal(generator.get_state(), state)  # the step's generator is left to its other draws
    # an independent computation of floor(T * frac(u + n / phi)), u the sequence's start
    start = whole[0].item() / 1000
    golden = 2 / (1 + math.sqrt(5))
    positions = [math.floor(1000 * math.fmod(start + n * golden, 1.0)) for n in range(5000)]
    assert max(abs(a - b) for a, b in zip(whole.tolist(), positions)) <= 1  # start known to within one timestep
    # a step's clips are the same whatever their split into steps (or processes)
    pieces = [training_timesteps("low_discrepancy", 1000, 7, first, 8, generator) for first in range(0, 5000, 8)]
    assert torch.equal(torch.cat(pieces)[:5000], whole)
    # every stretch of 100 consecutive clips puts 8 to 12 into each tenth of [0, T); independent draws
    # leave some tenth outside that range in most stretches
    for first in (0, 137, 2901):
        counts = torch.bincount(whole[first:first + 100] // 100, minlength=10)
        assert counts.min() >= 8 and counts.max() <= 12, counts
    uniform = torch.randint(0, 1000, (50, 100), generator=torch.Generator().manual_seed(0))
    spread = [torch.bincount(row // 100, minlength=10) for row in uniform]
    assert sum(int(c.min() < 8 or c.max() > 12) for c in spread) > 25
    # seeds start at their own points; the values stay in [0, T)
    others = {training_timesteps("low_discrepancy", 1000, seed, 0, 1, generator).item() for seed in range(20)}
    assert len(others) >= 18 and whole.min() >= 0 and whole.max() <= 999 and whole.dtype == torch.int64


def test_an_unknown_timestep_sampling_is_refused():
    with pytest.raises(ValueError, match="unknown timestep sampling 'sobol'"):
        training_timesteps("sobol", 1000, 0, 0, 4, torch.Generator())


def test_validation_timesteps_are_bin_centres():
    assert validation_timesteps(NoiseSchedule(), 8) == [62, 187, 312, 437, 562, 687, 812, 937]
    assert validation_timesteps(NoiseSchedule(num_timesteps=10), 10) == list(range(10))
    with pytest.raises(ValueError, match=r"count must be an integer in \[1, 1000\]"):
        validation_timesteps(NoiseSchedule(), 0)


def test_validation_noise_is_keyed_by_seed_clip_and_timestep_index():
    shape = (3, 4, 16, 16)
    base = validation_noise(0, 7, 2, shape)
    assert torch.equal(base, validation_noise(0, 7, 2, shape))
    for other in (validation_noise(1, 7, 2, shape), validation_noise(0, 8, 2, shape), validation_noise(0, 7, 3, shape)):
        assert not torch.equal(base, other)
    assert abs(base.mean().item()) < 0.05 and base.std().item() == pytest.approx(1.0, abs=0.05)


def test_validation_loss_is_bit_identical_across_calls_and_batch_splits():
    model = _model()
    schedule = NoiseSchedule()
    clips = _clips(7)
    whole = validation_loss(model, schedule, _split(clips, [7]), num_timesteps=4, seed=5, max_forward_clips=3)
    assert isinstance(whole, ValidationResult) and whole.clips == 7
    assert list(whole.per_timestep) == validation_timesteps(schedule, 4)
    assert whole.mean == pytest.approx(sum(whole.per_timestep.values()) / 4, rel=1e-12)
    again = validation_loss(model, schedule, _split(clips, [7]), num_timesteps=4, seed=5, max_forward_clips=3)
    split = validation_loss(model, schedule, _split(clips, [2, 1, 4]), num_timesteps=4, seed=5, max_forward_clips=3)
    assert whole == again == split  # exact float equality, per timestep too
    other_seed = validation_loss(model, schedule, _split(clips, [7]), num_timesteps=4, seed=6, max_forward_clips=3)
    assert other_seed.mean != whole.mean



def _whole_forward_losses(predict, clips, chunk: int, seed: int, members: int):
    """The validation protocol written out with the whole forward pass, captions included, at every timestep:
    ``predict(x_t, t, caption_ids, caption_mask)`` gives ``(members, clips, ...)`` predictions. Returns each member's
    per-clip losses by timestep index."""
    schedule, count = NoiseSchedule(), clips["video"].shape[0]
    per_clip = [{k: [] for k in range(4)} for _ in range(members)]
    with torch.no_grad():
        for start in range(0, count, chunk):
            part = {key: value[start:start + chunk] for key, value in clips.items()}
            x0 = video_to_model_space(part["video"])
            for k, timestep in enumerate(validation_timesteps(schedule, 4)):
                noise = torch.stack([validation_noise(seed, int(i), k, x0.shape[1:]) for i in part["index"]])
                t = torch.full((len(noise),), timestep)
                prediction = predict(q_sample(schedule, x0, t, noise), t, part["caption_ids"], part["caption_mask"])
                losses = (prediction - noise).pow(2).flatten(2).mean(dim=2).double()
                for member in range(members):
                    per_clip[member][k] += losses[member].tolist()
    return per_clip


def _assert_protocol_result(result, per_clip: dict, clips: int) -> None:
    steps = validation_timesteps(NoiseSchedule(), 4)
    assert result.clips == clips
    assert result.per_timestep == {t: math.fsum(per_clip[k]) / clips for k, t in enumerate(steps)}
    assert result.mean == math.fsum(v for values in per_clip.values() for v in values) / (clips * 4)


def test_validation_loss_is_the_whole_forward_at_every_timestep_to_the_bit():
    """The protocol encodes a chunk's captions once for all its timesteps; that equals running the whole forward
    pass, captions included, at each timestep."""
    model, clips = _model(), _clips(7)
    result = validation_loss(model, NoiseSchedule(), _split(clips, [4, 3]), num_timesteps=4, seed=5, max_forward_clips=3)
    model.eval()
    per_clip = _whole_forward_losses(lambda x, t, ids, mask: model(x, t, caption_ids=ids, caption_mask=mask)[None],
                                     clips, chunk=3, seed=5, members=1)
    _assert_protocol_result(result, per_clip[0], 7)


def test_ensemble_validation_loss_is_every_members_forward_at_every_timestep_to_the_bit():
    """The ensemble's protocol (captions encoded once per chunk of clips) equals a plain loop that runs the whole
    forward pass, captions included, for each chunk at each timestep."""
    from dit.diffusion import ensemble_validation_loss
    from dit.ensemble import EnsembleDiT

    members = [_model(seed=s) for s in (0, 1, 2)]
    ensemble = EnsembleDiT.from_members(members[0].config, members).eval()
    clips = _clips(7)
    results = ensemble_validation_loss(ensemble, NoiseSchedule(), _split(clips, [2, 5]), num_timesteps=4, seed=5,
                                       max_forward_clips=3)
    three = lambda x: x.expand(3, *x.shape).contiguous()  # noqa: E731
    per_clip = _whole_forward_losses(lambda x, t, ids, mask: ensemble(three(x), three(t), three(ids), three(mask)),
                                     clips, chunk=3, seed=5, members=3)
    for member, result in enumerate(results):
        _assert_protocol_result(result, per_clip[member], 7)


def test_two_models_see_identical_noise():
    """Zero-output models (different weights) both score exactly the mean noise power of the fixed noise."""
    schedule = NoiseSchedule()
    clips = _clips(3)
    first = validation_loss(_model(seed=0, perturb=0.0), schedule, _split(clips, [3]), num_timesteps=2, seed=9)
    second = validation_loss(_model(seed=1, perturb=0.0), schedule, _split(clips, [1, 2]), num_timesteps=2, seed=9)
    assert first == second
    for k, timestep in enumerate(validation_timesteps(schedule, 2)):
        power = [validation_noise(9, index, k, (3, 4, 16, 16)).pow(2).mean().item() for index in clips["index"].tolist()]
        assert first.per_timestep[timestep] == pytest.approx(sum(power) / 3, rel=1e-6)


def test_validation_loss_restores_mode_and_rejects_bad_batches():
    model = _model()
    model.train()
    clips = _clips(3)
    validation_loss(model, NoiseSchedule(), _split(clips, [3]), num_timesteps=1)
    assert model.training
    assert all(parameter.grad is None for parameter in model.parameters())
    without_index = {key: value for key, value in clips.items() if key != "index"}
    with pytest.raises(KeyError, match="validation batch 0 has no 'index'"):
        validation_loss(model, NoiseSchedule(), [without_index], num_timesteps=1)
    with pytest.raises(ValueError, match="clip index 100 appears twice"):
        validation_loss(model, NoiseSchedule(), _split(clips, [3]) * 2, num_timesteps=1)
    empty = validation_loss(model, NoiseSchedule(), [], num_timesteps=2)
    assert empty.clips == 0 and math.isnan(empty.mean) and list(empty.per_timestep) == [250, 750]


def test_validation_loss_spread_over_noise_seeds():
    model = _model()
    batches = _split(_clips(4), [2, 2])
    spread = validation_loss_spread(model, NoiseSchedule(), batches, seeds=[0, 1, 2], num_timesteps=2)
    assert list(spread.per_seed) == [0, 1, 2]
    assert spread.mean == pytest.approx(sum(spread.per_seed.values()) / 3)
    assert spread.std > 0
    assert spread.per_seed[1] == validation_loss(model, NoiseSchedule(), batches, num_timesteps=2, seed=1).mean
    with pytest.raises(ValueError, match="one-shot iterator"):
        validation_loss_spread(model, NoiseSchedule(), iter(batches), seeds=[0, 1])
    with pytest.raises(ValueError, match="at least two distinct seeds"):
        validation_loss_spread(model, NoiseSchedule(), batches, seeds=[0])


# ---- DDIM ------------------------------------------------------------------------------------------


def test_ddim_timesteps_descend_evenly():
    schedule = NoiseSchedule()
    assert ddim_timesteps(schedule, 4) == [999, 666, 333, 0]
    assert len(set(ddim_timesteps(schedule, 1000))) == 1000
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 1000\]"):
        ddim_timesteps(schedule, 0)


def test_ddim_sample_is_deterministic_with_a_seeded_generator():
    model = _model()
    clips = _clips(2)
    shape = (2, 3, 4, 16, 16)

    def sample(seed, **options):
        return ddim_sample(
            model, NoiseSchedule(), clips["caption_ids"], clips["caption_mask"], shape, steps=5,
            generator=torch.Generator().manual_seed(seed), **options,
        )

    first = sample(0)
    assert first.shape == shape and first.dtype == torch.float32 and torch.isfinite(first).all()
    assert first.abs().max() <= 1.0 + 1e-5  # the last step returns the clamped clean prediction
    assert torch.equal(first, sample(0))
    assert not torch.equal(first, sample(1))
    guided = sample(0, guidance_scale=4.0)
    assert guided.shape == shape and not torch.equal(guided, first)
    stochastic = sample(0, eta=1.0)
    assert torch.equal(stochastic, sample(0, eta=1.0)) and not torch.equal(stochastic, first)


def test_ddim_sample_with_external_embeddings_needs_null_embeddings_for_guidance():
    model = _model(external_text_width=12)
    embeddings = torch.randn(2, 5, 12)
    shape = (2, 3, 4, 16, 16)
    out = ddim_sample(model, NoiseSchedule(), None, None, shape, steps=2, caption_embeddings=embeddings,
                      null_caption_embeddings=torch.zeros(2, 5, 12), guidance_scale=2.0)
    assert out.shape == shape
    with pytest.raises(ValueError, match="needs null_caption_embeddings"):
        ddim_sample(model, NoiseSchedule(), None, None, shape, steps=2, caption_embeddings=embeddings, guidance_scale=2.0)


class _LinearEpsilonModel(torch.nn.Module):
    """A stand-in denoiser with a known prediction: eps = scale * (1 + t / 1000) * x, where ``scale`` is
    ``conditional`` for a real caption and ``null`` for the empty caption [BOS, PAD, ...]."""

    def __init__(self, conditional: float, null: float, caption_length: int = 8):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # the sampler reads the device from the parameters
        self.conditional, self.null, self.caption_length = conditional, null, caption_length

    def null_caption(self, batch, device=None):
        ids = torch.zeros((batch, self.caption_length), dtype=torch.long, device=device)
        ids[:, 0] = 1
        return ids, ids != 0

    def encode_captions(self, batch, caption_ids=None, caption_mask=None, caption_embeddings=None):
        is_null = (caption_ids[:, 1:] == 0).all(dim=1)
        return is_null.float().reshape(batch, 1, 1), torch.ones((batch, 1), dtype=torch.bool)

    def denoise(self, x, timesteps, context, context_mask):
        scale = torch.where(context[:, 0, 0] > 0.5, self.null, self.conditional).reshape(-1, 1, 1, 1, 1)
        return scale * (1 + timesteps.double().reshape(-1, 1, 1, 1, 1) / 1000) * x.double()


def _hand_ddim(x, sequence, epsilon_of, eta=0.0, step_noise=(), clamp=False):
    """Song et al.'s DDIM update written out in float64: alpha_bar from the linear DDPM betas."""
    import numpy as np

    alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    x = x.double()
    noise = iter(step_noise)
    for position, t in enumerate(sequence):
        a_t = alpha_bar[t]
        a_prev = alpha_bar[sequence[position + 1]] if position + 1 < len(sequence) else 1.0
        epsilon = epsilon_of(x, t)
        x0 = (x - math.sqrt(1 - a_t) * epsilon) / math.sqrt(a_t)
        if clamp:
            x0 = x0.clamp(-1, 1)
            epsilon = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * epsilon
        if sigma > 0:
            x = x + sigma * next(noise).double()
    return x


_SHAPE = (2, 3, 2, 4, 4)
_CAPTIONS = torch.tensor([[1, 5, 7, 0, 0, 0, 0, 0], [1, 9, 0, 0, 0, 0, 0, 0]])


def _sample(model, **options):
    return ddim_sample(model, NoiseSchedule(), _CAPTIONS, None, _SHAPE, generator=torch.Generator().manual_seed(3),
                       **options)


def _noise_draws(count):
    """The draws a generator seeded 3 gives in order: the start x_T, then one per stochastic step."""
    generator = torch.Generator().manual_seed(3)
    return [torch.randn(_SHAPE, generator=generator) for _ in range(count)]


@pytest.mark.parametrize("clamp", [False, True], ids=["unclamped", "clamped"])
def test_ddim_updates_match_a_hand_computation(clamp):
    """Three deterministic steps (t = 999, 500, 0). At t = 999 the predicted clean clip is about -31 x_T,
    so with clip_denoised the clamp acts and epsilon is recomputed from the clamped clip."""
    model = _LinearEpsilonModel(conditional=0.6, null=0.0)
    sample = _sample(model, steps=3, clip_denoised=clamp)
    start, = _noise_draws(1)
    expected = _hand_ddim(start, [999, 500, 0], lambda x, t: 0.6 * (1 + t / 1000) * x, clamp=clamp)
    assert ddim_timesteps(NoiseSchedule(), 3) == [999, 500, 0]
    torch.testing.assert_close(sample.double(), expected, rtol=1e-5, atol=1e-6)
    if clamp:
        assert sample.abs().max() <= 1.0
    else:
        assert sample.abs().max() > 1.0  # the unclamped path really differs here


def test_ddim_with_eta_adds_the_step_noise_of_the_formula():
    """eta = 1: sigma_t = sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev), a fresh draw per step but the last."""
    model = _LinearEpsilonModel(conditional=0.3, null=0.0)
    sample = _sample(model, steps=3, eta=1.0, clip_denoised=False)
    start, *step_noise = _noise_draws(3)
    expected = _hand_ddim(start, [999, 500, 0], lambda x, t: 0.3 * (1 + t / 1000) * x, eta=1.0, step_noise=step_noise)
    torch.testing.assert_close(sample.double(), expected, rtol=1e-5, atol=1e-6)


def test_classifier_free_guidance_combines_the_two_predictions_as_the_formula_says():
    """eps = eps_null + s (eps_caption - eps_null), the null branch fed the empty caption [BOS, PAD, ...]."""
    conditional, null, scale = 0.5, 0.2, 3.0
    model = _LinearEpsilonModel(conditional=conditional, null=null)
    sample = _sample(model, steps=2, guidance_scale=scale, clip_denoised=False)
    start, = _noise_draws(1)
    guided = null + scale * (conditional - null)
    expected = _hand_ddim(start, [999, 0], lambda x, t: guided * (1 + t / 1000) * x)
    torch.testing.assert_close(sample.double(), expected, rtol=1e-5, atol=1e-6)
    unguided = _hand_ddim(start, [999, 0], lambda x, t: conditional * (1 + t / 1000) * x)
    assert not torch.allclose(expected, unguided)
