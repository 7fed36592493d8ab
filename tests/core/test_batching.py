"""Tests of flowzoo.core.batching: how every objective reads, pairs, weights and checks a batch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from flowzoo.core.batching import (
    RESERVED_KEYS,
    Batch,
    call_model,
    check_time_sampler,
    couple_batch,
    per_sample_mean,
    per_sample_weight,
    raise_if_batch_not_finite,
    reduce_weighted,
    unpack_batch,
)
from flowzoo.core.couplings import ExactOTCoupling, Pairing
from flowzoo.core.errors import ConfigError, DTypeError, EmptyInputError, NonFiniteError, ShapeError
from flowzoo.core.paths import UniformTime


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- unpack_batch -------------------------------------------------------------------------------------------------

def test_a_dict_batch_is_split_into_source_data_weight_and_conditioning():
    x0, x1 = torch.randn(4, 3), torch.randn(4, 3)
    weight, label, ctx = torch.tensor([1.0, 0.0, 2.0, 0.5]), torch.arange(4), torch.randn(4, 5)
    data = unpack_batch({"x0": x0, "x1": x1, "weight": weight, "label": label, "ctx": ctx}, None)
    assert isinstance(data, Batch)
    assert data.x0 is x0 and data.x1 is x1 and data.weight is weight
    assert list(data.cond) == ["label", "ctx"] and data.cond["label"] is label and data.cond["ctx"] is ctx
    assert set(RESERVED_KEYS) == {"x0", "x1", "weight"}
    assert not set(RESERVED_KEYS) & set(data.cond)


def test_a_missing_source_is_gaussian_noise_drawn_from_the_generator():
    x1 = torch.zeros(6, 2, 3, dtype=torch.float64)
    first = unpack_batch({"x1": x1}, _gen(3))
    again = unpack_batch({"x1": x1, "x0": None, "weight": None}, _gen(3))
    assert first.x0.shape == x1.shape and first.x0.dtype == torch.float64
    torch.testing.assert_close(first.x0, torch.randn(6, 2, 3, generator=_gen(3), dtype=torch.float64))
    torch.testing.assert_close(again.x0, first.x0)
    assert first.weight is None and first.cond == {}
    assert not torch.equal(unpack_batch({"x1": x1}, _gen(4)).x0, first.x0)


@pytest.mark.parametrize("batch", [torch.randn(4, 2), (torch.randn(4, 2), torch.randn(4, 2)), [torch.randn(4, 2)]],
                         ids=["tensor", "tuple", "list"])
def test_a_batch_that_is_not_a_mapping_is_refused(batch):
    with pytest.raises(DTypeError, match='"x1"'):
        unpack_batch(batch, None)


def test_bad_batches_say_what_was_wrong():
    x1 = torch.randn(4, 2)
    with pytest.raises(ConfigError, match=r"keys \['data'\]"):
        unpack_batch({"data": x1}, None)
    with pytest.raises(DTypeError):
        unpack_batch({"x1": x1.numpy()}, None)
    with pytest.raises(DTypeError):
        unpack_batch({"x1": torch.ones(4, 2, dtype=torch.long)}, None)
    with pytest.raises(EmptyInputError):
        unpack_batch({"x1": torch.zeros(0, 2)}, None)
    with pytest.raises(ShapeError):
        unpack_batch({"x1": x1, "x0": torch.randn(4, 3)}, None)
    with pytest.raises(NonFiniteError, match="x0"):
        unpack_batch({"x1": x1, "x0": torch.full((4, 2), float("nan"))}, None)
    with pytest.raises(NonFiniteError, match="x1"):
        unpack_batch({"x1": torch.tensor([[float("inf"), 0.0]] * 4)}, None)
    # conditioning: string keys, tensors, batch first, finite
    with pytest.raises(DTypeError, match="string keys"):
        unpack_batch({"x1": x1, 3: torch.zeros(4)}, None)
    with pytest.raises(DTypeError, match='batch\\["label"\\]'):
        unpack_batch({"x1": x1, "label": [0, 1, 2, 3]}, None)
    with pytest.raises(ShapeError, match="batch size 4"):
        unpack_batch({"x1": x1, "label": torch.zeros(3)}, None)
    with pytest.raises(ShapeError):
        unpack_batch({"x1": x1, "label": torch.tensor(1.0)}, None)
    with pytest.raises(NonFiniteError, match="ctx"):
        unpack_batch({"x1": x1, "ctx": torch.tensor([0.0, float("nan"), 0.0, 0.0])}, None)
    # weights: one per sample, non-negative
    with pytest.raises(ShapeError, match=r"\(4,\)"):
        unpack_batch({"x1": x1, "weight": torch.ones(4, 1)}, None)
    with pytest.raises(ConfigError, match="non-negative"):
        unpack_batch({"x1": x1, "weight": torch.tensor([1.0, -0.5, 1.0, 1.0])}, None)


def test_finite_false_defers_the_nan_scan_of_source_and_data_only():
    bad = torch.tensor([[float("nan"), 0.0]] * 4)
    data = unpack_batch({"x1": bad, "x0": bad.clone()}, None, finite=False)
    assert torch.isnan(data.x1).any() and torch.isnan(data.x0).any()
    with pytest.raises(NonFiniteError):  # conditioning is still scanned: a model may ignore it
        unpack_batch({"x1": bad, "ctx": bad.clone()}, None, finite=False)
    with pytest.raises(NonFiniteError, match='batch\\["x1"\\]'):
        raise_if_batch_not_finite({"x1": bad})


def test_raise_if_batch_not_finite_names_the_first_bad_entry_and_skips_integers():
    good = {"x1": torch.randn(3, 2), "label": torch.arange(3), "note": "not a tensor"}
    raise_if_batch_not_finite(good)  # nothing to report: a model that diverged on its own
    with pytest.raises(NonFiniteError, match='batch\\["ctx"\\]'):
        raise_if_batch_not_finite({**good, "ctx": torch.tensor([0.0, float("-inf"), 1.0])})


# ---- couple_batch -------------------------------------------------------------------------------------------------

class ReversingCoupling:
    """Pairs x0[i] with x1[B - 1 - i] and weights pair i by (i + 1): a pairing whose effect is easy to write out."""

    def __call__(self, x0, x1, cond0=None, cond1=None):
        index1 = torch.arange(x1.shape[0] - 1, -1, -1)
        weight = torch.arange(1.0, x1.shape[0] + 1)
        return Pairing(x0, x1[index1], weight=weight, index1=index1)


def test_conditioning_and_weights_follow_the_data_through_the_pairing():
    x0, x1 = torch.randn(4, 2), torch.randn(4, 2)
    label, weight = torch.tensor([10, 11, 12, 13]), torch.tensor([1.0, 2.0, 3.0, 4.0])
    paired = couple_batch(ReversingCoupling(), Batch(x0, x1, weight, {"label": label}))
    torch.testing.assert_close(paired.x1, x1.flip(0))
    assert paired.cond["label"].tolist() == [13, 12, 11, 10]
    # batch weight of the moved row times the pairing weight (i + 1)
    assert paired.weight.tolist() == [4.0 * 1, 3.0 * 2, 2.0 * 3, 1.0 * 4]


def test_exact_ot_pairing_keeps_each_label_with_its_data_point():
    # In 1-D the OT pairing matches sorted sources to sorted targets, so a label derived from x1 must stay with it.
    x0 = torch.tensor([[3.0], [0.0], [2.0], [1.0]])
    x1 = torch.tensor([[0.1], [3.1], [1.1], [2.1]])
    label = (x1[:, 0] * 10).round().long()
    paired = couple_batch(ExactOTCoupling(), Batch(x0, x1, None, {"label": label}))
    assert paired.weight is None
    torch.testing.assert_close(paired.x1 - paired.x0, torch.full((4, 1), 0.1))
    assert paired.cond["label"].tolist() == (paired.x1[:, 0] * 10).round().long().tolist()


def test_a_pairing_without_index1_may_not_change_the_rows_when_they_carry_labels_or_weights():
    def drop_one(x0, x1, cond0=None, cond1=None):
        return SimpleNamespace(x0=x0[:3], x1=x1[:3])

    x0, x1 = torch.randn(4, 2), torch.randn(4, 2)
    unlabelled = couple_batch(drop_one, Batch(x0, x1, None, {}))
    assert unlabelled.x1.shape == (3, 2)
    with pytest.raises(ShapeError, match="index1"):
        couple_batch(drop_one, Batch(x0, x1, None, {"label": torch.arange(4)}))
    with pytest.raises(ShapeError, match="index1"):
        couple_batch(drop_one, Batch(x0, x1, torch.ones(4), {}))


def test_bad_pairings_are_refused():
    x0, x1 = torch.randn(4, 2), torch.randn(4, 2)
    with pytest.raises(ShapeError):
        couple_batch(lambda a, b, **_: Pairing(a, b[:, :1]), Batch(x0, x1, None, {}))
    with pytest.raises(ConfigError, match="non-negative"):
        couple_batch(lambda a, b, **_: Pairing(a, b, weight=-torch.ones(4)), Batch(x0, x1, None, {}))
    with pytest.raises(ShapeError):
        couple_batch(lambda a, b, **_: Pairing(a, b, weight=torch.ones(3)), Batch(x0, x1, None, {}))


# ---- weights and reductions ---------------------------------------------------------------------------------------

def test_per_sample_weight_checks_shape_sign_and_type():
    w = torch.tensor([0.0, 1.0, 2.5])
    assert per_sample_weight(w, 3, "w") is w
    with pytest.raises(ShapeError, match=r"w of shape \(3,\)"):
        per_sample_weight(torch.ones(2), 3, "w")
    with pytest.raises(ConfigError, match="-1"):
        per_sample_weight(torch.tensor([1.0, -1.0, 0.0]), 3, "w")
    with pytest.raises(DTypeError):
        per_sample_weight([1.0, 1.0, 1.0], 3, "w")


def test_reduce_weighted_divides_by_the_batch_size_not_the_weight_sum():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert reduce_weighted(losses, None).item() == pytest.approx(2.5)
    # (2*1 + 0*2 + 1*3 + 0.5*4) / 4 = 7 / 4: a zero weight drops its sample without re-normalising the others
    assert reduce_weighted(losses, torch.tensor([2.0, 0.0, 1.0, 0.5])).item() == pytest.approx(1.75)
    assert reduce_weighted(losses, torch.ones(4)).item() == pytest.approx(2.5)


def test_per_sample_mean_averages_every_non_batch_dimension():
    values = torch.arange(24.0).reshape(2, 3, 4)
    # sample 0 holds 0..11 (mean 5.5), sample 1 holds 12..23 (mean 17.5)
    assert per_sample_mean(values).tolist() == [5.5, 17.5]
    assert per_sample_mean(torch.tensor([1.0, 2.0])).tolist() == [1.0, 2.0]


# ---- time sampler and model call ----------------------------------------------------------------------------------

def test_check_time_sampler_defaults_to_uniform_and_refuses_other_objects():
    assert isinstance(check_time_sampler(None), UniformTime)
    sampler = UniformTime()
    assert check_time_sampler(sampler) is sampler
    with pytest.raises(ConfigError, match=r"\.sample\(n"):
        check_time_sampler(lambda n: torch.rand(n))
    with pytest.raises(ConfigError, match="float"):
        check_time_sampler(0.5)


def test_call_model_passes_conditioning_by_keyword_and_checks_the_output():
    seen = {}

    def model(x, t, *, label):
        seen.update(t=t, label=label)
        return x * 2 + label[:, None]

    x, t, label = torch.ones(3, 2), torch.full((3,), 0.5), torch.tensor([0.0, 1.0, 2.0])
    out = call_model(model, x, t, {"label": label})
    assert out.tolist() == [[2.0, 2.0], [3.0, 3.0], [4.0, 4.0]]
    assert seen["t"] is t and seen["label"] is label
    with pytest.raises(ShapeError, match=r"\(3, 2\)"):
        call_model(lambda x, t: x[:, :1], x, t, {})
    with pytest.raises(ShapeError, match="tuple"):
        call_model(lambda x, t: (x, x), x, t, {})
