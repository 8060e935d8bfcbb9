"""The named size registry and the paper's parameter-counting convention."""

import math

import pytest

from dit.sizes import (
    SIZES,
    ModelSize,
    aspect_ratio_rule,
    get_size,
    non_embedding_parameters,
    sizes_in_family,
    width_for_parameters,
)

PAPER_PARAMETERS = {  # the paper's nominal N (fitting sizes and held-out sizes), raw count
    "paper-0.017b": 0.017e9,
    "paper-0.057b": 0.057e9,
    "paper-0.13b": 0.13e9,
    "paper-0.26b": 0.26e9,
    "paper-0.72b": 0.72e9,
    "paper-1.07b": 1.07e9,
}


def test_non_embedding_parameters_is_16_L_d_squared():
    assert non_embedding_parameters(128, 4) == 16 * 4 * 128 * 128 == 1_048_576
    with pytest.raises(ValueError, match="width and depth must be positive"):
        non_embedding_parameters(0, 4)


@pytest.mark.parametrize("name, target", sorted(PAPER_PARAMETERS.items()))
def test_paper_family_matches_the_papers_sizes_within_3_percent(name, target):
    size = get_size(name)
    assert size.family == "paper" and size.target_parameters == pytest.approx(target)
    assert abs(size.non_embedding_parameters / target - 1) < 0.03
    assert size.head_dim == 64


def test_paper_family_is_exactly_the_papers_sizes():
    assert {size.name for size in sizes_in_family("paper")} == set(PAPER_PARAMETERS)


def test_tiny_family_spans_more_than_30x_from_about_10k_to_over_1m():
    tiny = sizes_in_family("tiny")
    counts = [size.non_embedding_parameters for size in tiny]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    assert counts[0] <= 20_000 and counts[-1] >= 1_000_000
    assert counts[-1] / counts[0] >= 30
    assert any(1_000_000 <= count for count in counts)
    for size in tiny:
        assert size.width % size.heads == 0


def test_registry_names_match_their_parameter_counts():
    for name, size in SIZES.items():
        assert size.name == name
        label = name.split("-", 1)[1]
        scale = {"k": 1e3, "m": 1e6, "b": 1e9}[label[-1]]
        nominal = float(label[:-1]) * scale
        assert abs(size.non_embedding_parameters / nominal - 1) < 0.1, name


def test_unknown_size_error_lists_known_names():
    with pytest.raises(KeyError) as raised:
        get_size("tiny-3t")
    message = str(raised.value)
    assert "unknown model size 'tiny-3t'" in message
    for name in SIZES:
        assert name in message


def test_model_size_validation():
    with pytest.raises(ValueError, match="width 30 is not divisible by heads 4"):
        ModelSize("bad", width=30, depth=2, heads=4, family="tiny")
    with pytest.raises(ValueError, match="must be positive"):
        ModelSize("bad", width=32, depth=0, heads=4, family="tiny")
    record = get_size("tiny-262k").to_dict()
    assert record["non_embedding_parameters"] == 262_144 and record["width"] == 64


@pytest.mark.parametrize("family", ["tiny", "paper"])
def test_width_for_parameters_is_exact_at_registered_sizes(family):
    for size in sizes_in_family(family):
        assert width_for_parameters(size.non_embedding_parameters, family) == pytest.approx(size.width, rel=1e-12)


def test_width_for_parameters_interpolates_and_extrapolates():
    members = sizes_in_family("paper")
    low, high = members[2], members[3]
    middle = math.sqrt(low.non_embedding_parameters * high.non_embedding_parameters)  # geometric mean
    assert width_for_parameters(middle) == pytest.approx(math.sqrt(low.width * high.width), rel=1e-12)
    exponent, log_k = aspect_ratio_rule("paper")
    assert 0.2 < exponent < 0.5
    assert width_for_parameters(1e10) == pytest.approx(math.exp(log_k + exponent * math.log(1e10)))
    assert width_for_parameters(1e10) > members[-1].width
    with pytest.raises(ValueError, match="parameters must be positive"):
        width_for_parameters(0)
    with pytest.raises(ValueError, match="fewer than two sizes"):
        width_for_parameters(1e6, family="huge")
