"""The video Cross-DiT: shapes, identity at initialization, caption conditioning, errors, parameter counting."""

import pytest
import torch

from dit.model import VideoDiT, VideoDiTConfig
from dit.patches import patchify, sincos_position_embedding_3d, unpatchify
from dit.sizes import SIZES, non_embedding_parameters
from dit.text import CaptionTokenizer

CLIP = dict(clip_frames=4, clip_height=16, clip_width=16)


def _config(size="tiny-33k", **overrides):
    return VideoDiTConfig.from_size(size, **{**CLIP, "vocab_size": 64, "caption_length": 8, **overrides})


def _inputs(config, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, 3, config.clip_frames, config.clip_height, config.clip_width, generator=generator)
    timesteps = torch.randint(0, 1000, (batch,), generator=generator)
    ids = torch.randint(2, config.vocab_size, (batch, config.caption_length), generator=generator)
    ids[:, 0] = 1
    ids[0, 5:] = 0
    return video, timesteps, ids


def _perturb_all_parameters(model, seed=1, std=0.05):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * std)


def test_output_shape_and_exactly_zero_at_initialization():
    torch.manual_seed(0)
    config = _config()
    model = VideoDiT(config)
    video, timesteps, ids = _inputs(config)
    out = model(video, timesteps, ids)
    assert out.shape == video.shape and out.dtype == torch.float32
    assert torch.count_nonzero(out) == 0  # zero final linear


def test_blocks_are_identity_at_init_and_act_once_modulation_is_nonzero():
    torch.manual_seed(0)
    config = _config()
    model = VideoDiT(config)
    video, timesteps, ids = _inputs(config)
    seen = []
    hooks = [block.register_forward_hook(lambda m, args, out: seen.append((args[0], out))) for block in model.blocks]
    model(video, timesteps, ids)
    assert len(seen) == config.depth
    for block_input, block_output in seen:
        assert torch.equal(block_input, block_output)
    seen.clear()
    with torch.no_grad():
        for block in model.blocks:
            block.modulation_table[2].fill_(0.5)  # self-attention gate
            block.modulation_table[5].fill_(0.5)  # MLP gate
    model(video, timesteps, ids)
    for hook in hooks:
        hook.remove()
    for block_input, block_output in seen:
        assert (block_output - block_input).abs().max() > 1e-3


def test_captions_condition_the_output_and_padding_is_ignored():
    torch.manual_seed(0)
    config = _config()
    model = VideoDiT(config)
    _perturb_all_parameters(model, std=0.2)
    video, timesteps, ids = _inputs(config)
    base = model(video, timesteps, ids)
    other = ids.clone()
    other[:, 1:4] = (other[:, 1:4] + 7) % (config.vocab_size - 2) + 2
    changed = model(video, timesteps, other)
    assert (changed - base).abs().amax(dim=(1, 2, 3, 4)).min() > 1e-3  # every clip reacts to its caption
    padded = ids.clone()
    padded[0, 5:] = 17  # clip 0's padding (mask from ids != PAD computed before the change)
    same = model(video, timesteps, padded, caption_mask=ids != 0)
    torch.testing.assert_close(same, base, rtol=1e-5, atol=1e-6)


def test_math_and_sdpa_models_agree():
    torch.manual_seed(0)
    math_model = VideoDiT(_config(attention="math"))
    _perturb_all_parameters(math_model)
    sdpa_model = VideoDiT(_config(attention="sdpa"))
    sdpa_model.load_state_dict(math_model.state_dict())
    video, timesteps, ids = _inputs(math_model.config)
    torch.testing.assert_close(sdpa_model(video, timesteps, ids), math_model(video, timesteps, ids), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tokens", [5, 11])
def test_external_caption_embeddings_of_any_width(tokens):
    torch.manual_seed(0)
    config = _config(external_text_width=37)
    model = VideoDiT(config)
    assert not hasattr(model.caption_embedder, "token_embedding")
    assert model.caption_embedder.projection[0].in_features == 37
    _perturb_all_parameters(model)
    video, timesteps, _ = _inputs(config)
    embeddings = torch.randn(2, tokens, 37)
    out = model(video, timesteps, caption_embeddings=embeddings)
    assert out.shape == video.shape
    assert not torch.allclose(out, model(video, timesteps, caption_embeddings=embeddings + 1.0))
    with pytest.raises(ValueError, match=r"caption_embeddings must have shape .*\(2, M, 37\)"):
        model(video, timesteps, caption_embeddings=torch.randn(2, tokens, 36))
    with pytest.raises(ValueError, match="caption_ids given, but this model takes external caption_embeddings"):
        model(video, timesteps, caption_ids=torch.ones(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="null caption's embeddings"):
        model.null_caption(2)


def test_bad_inputs_raise_clear_errors():
    config = _config()
    model = VideoDiT(config)
    video, timesteps, ids = _inputs(config)
    with pytest.raises(ValueError, match=r"\(B, 3, 4, 16, 16\) for this model, got \(2, 3, 2, 16, 16\)"):
        model(video[:, :, :2], timesteps, ids)
    with pytest.raises(ValueError, match="video must have shape"):
        model(video[0], timesteps, ids)
    with pytest.raises(ValueError, match="video must be a float tensor"):
        model(video.to(torch.uint8), timesteps, ids)
    with pytest.raises(ValueError, match=r"timesteps must have shape \(batch,\) = \(2,\)"):
        model(video, timesteps[:1], ids)
    with pytest.raises(ValueError, match="caption_ids are required"):
        model(video, timesteps)
    with pytest.raises(ValueError, match=r"caption_ids must have shape \(batch, caption_length\) = \(2, 8\)"):
        model(video, timesteps, ids[:, :5])
    with pytest.raises(ValueError, match="caption_embeddings given, but this model has a token embedding"):
        model(video, timesteps, ids, caption_embeddings=torch.randn(2, 8, 32))
    with pytest.raises(ValueError, match=r"caption_ids must lie in \[0, vocab_size=64\)"):
        model(video, timesteps, ids.index_fill(1, torch.tensor([3]), 64))
    with pytest.raises(ValueError, match="masks every token of some caption"):
        model(video, timesteps, ids, caption_mask=torch.zeros_like(ids, dtype=torch.bool))
    with pytest.raises(ValueError, match="caption_mask must be bool"):
        model(video, timesteps, ids, caption_mask=torch.ones_like(ids))


def test_config_validation():
    with pytest.raises(KeyError, match="unknown model size 'tiny-huge'; known sizes: tiny-4k, tiny-8k"):
        VideoDiTConfig.from_size("tiny-huge", **CLIP)
    with pytest.raises(ValueError, match="needs clip_height, clip_width"):
        VideoDiTConfig.from_size("tiny-33k", clip_frames=4)
    with pytest.raises(ValueError, match=r"unknown VideoDiTConfig fields \['widht'\]"):
        VideoDiTConfig.from_size("tiny-33k", widht=3, **CLIP)
    with pytest.raises(ValueError, match="height: clip size 18 is not divisible by patch size 4"):
        VideoDiTConfig.from_size("tiny-33k", clip_frames=4, clip_height=18, clip_width=16)
    with pytest.raises(ValueError, match="attention 'fast' is not one of"):
        _config(attention="fast")
    with pytest.raises(ValueError, match="not divisible by heads"):
        VideoDiTConfig(width=30, depth=1, heads=4, **CLIP)
    config = _config(patch=[1, 4, 4])
    assert config.patch == (1, 4, 4) and config.tokens_per_clip == 4 * 4 * 4 and config.patch_dim == 48


def test_null_caption_is_the_tokenized_empty_caption():
    model = VideoDiT(_config())
    ids, mask = model.null_caption(3)
    expected = torch.from_numpy(CaptionTokenizer(vocab_size=64, max_length=8).encode("")).long()
    assert torch.equal(ids, expected.expand(3, -1)) and mask.sum().item() == 3


def test_patch_embedding_equals_conv3d_and_unpatchify_inverts():
    video = torch.randn(2, 3, 4, 8, 12)
    patch = (2, 4, 4)
    tokens = patchify(video, patch)
    assert tokens.shape == (2, 2 * 2 * 3, 96)
    assert torch.equal(unpatchify(tokens, patch, 3, (2, 2, 3)), video)
    conv = torch.nn.Conv3d(3, 5, kernel_size=patch, stride=patch)
    expected = conv(video).flatten(2).transpose(1, 2)  # frame-major token order
    torch.testing.assert_close(tokens @ conv.weight.reshape(5, -1).T + conv.bias, expected)


def test_position_embedding_is_fixed_and_distinct():
    model = VideoDiT(_config())
    assert "position_embedding" not in dict(model.named_parameters())
    assert "position_embedding" not in model.state_dict()
    table = sincos_position_embedding_3d(32, (2, 4, 4))
    assert table.shape == (32, 32)
    assert torch.equal(model.position_embedding[0], table)
    assert torch.cdist(table, table).add(torch.eye(32) * 1e3).min() > 0.1


@pytest.mark.parametrize("size", ["tiny-8k", "tiny-33k", "tiny-262k", "tiny-1m"])
def test_non_embedding_parameters_match_the_registry(size):
    model = VideoDiT(_config(size))
    spec = SIZES[size]
    assert model.non_embedding_parameters() == non_embedding_parameters(spec.width, spec.depth)
    assert model.non_embedding_parameters() == 16 * spec.depth * spec.width**2
    assert model.total_parameters() > model.non_embedding_parameters()


def test_non_embedding_parameters_for_every_registered_size_on_meta_device():
    for name, spec in SIZES.items():
        with torch.device("meta"):
            model = VideoDiT(VideoDiTConfig.from_size(name, clip_frames=2, clip_height=8, clip_width=8))
        assert model.non_embedding_parameters() == spec.non_embedding_parameters, name


@pytest.mark.cuda
def test_xformers_model_matches_math_model_on_cuda(cuda_xformers):
    torch.manual_seed(0)
    math_model = VideoDiT(_config(attention="math"))
    _perturb_all_parameters(math_model)
    xformers_model = VideoDiT(_config(attention="xformers"))
    xformers_model.load_state_dict(math_model.state_dict())
    video, timesteps, ids = (tensor.cuda() for tensor in _inputs(math_model.config))
    expected = math_model.cuda()(video, timesteps, ids)
    torch.testing.assert_close(xformers_model.cuda()(video, timesteps, ids), expected, rtol=1e-3, atol=1e-4)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        assert torch.isfinite(xformers_model(video, timesteps, ids)).all()
