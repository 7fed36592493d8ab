"""flowzoo.core.validation: what each check accepts, what it rejects, with which error and which message."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError, DTypeError, EmptyInputError, NonFiniteError, ShapeError
from flowzoo.core.validation import (__all__ as exported, as_time, broadcast_time, check_bool, check_count,
                                     check_finite, check_int, check_nonnegative, check_number, check_pair,
                                     check_positive, check_positive_int, check_probability, check_same_shape,
                                     check_tensor, check_time, check_unit_time)

NOT_NUMBERS = [True, False, None, "1", [1], torch.tensor(1.0), 1j, np.bool_(True)]
NOT_FINITE = [math.nan, math.inf, -math.inf, np.float32("nan")]


# ----------------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("value, kwargs, result", [
    (2, {}, 2.0),
    (-1.5, {}, -1.5),
    (np.float32(0.25), {}, 0.25),
    (np.int64(3), {}, 3.0),
    (Fraction(1, 4), {}, 0.25),
    (0.0, {"low": 0.0}, 0.0),
    (1.0, {"high": 1.0}, 1.0),
    (0.5, {"low": 0.0, "high": 1.0, "strict_low": True, "strict_high": True}, 0.5),
])
def test_check_number_accepts(value, kwargs, result):
    out = check_number(value, "x", **kwargs)
    assert out == result and type(out) is float


@pytest.mark.parametrize("value", NOT_NUMBERS + NOT_FINITE)
def test_check_number_rejects_non_numbers(value):
    with pytest.raises(ConfigError, match="expected x as a finite number; received"):
        check_number(value, "x")


@pytest.mark.parametrize("value, kwargs, words", [
    (-0.1, {"low": 0.0}, "x as a finite number >= 0; received -0.1"),
    (0.0, {"low": 0.0, "strict_low": True}, "x as a finite number > 0; received 0.0"),
    (1.5, {"high": 1.0}, "x as a finite number <= 1; received 1.5"),
    (1.0, {"high": 1.0, "strict_high": True}, "x as a finite number < 1; received 1.0"),
    (0.5, {"low": 0.0, "high": 0.5, "strict_high": True}, r"x as a finite number in \[0, 0.5\); received 0.5"),
    (0.0, {"low": 0.0, "high": 1.0, "strict_low": True}, r"x as a finite number in \(0, 1\]; received 0.0"),
    (7, {"low": 1, "high": 5}, r"x as a finite number in \[1, 5\]; received 7"),
])
def test_check_number_rejects_out_of_range_and_names_the_range(value, kwargs, words):
    with pytest.raises(ConfigError, match=words):
        check_number(value, "x", **kwargs)


def test_a_fix_replaces_the_default_advice():
    with pytest.raises(ConfigError) as info:
        check_number("a", "lr", fix="use e.g. lr=1e-3")
    assert str(info.value) == "expected lr as a finite number; received 'a'. Fix: use e.g. lr=1e-3"
    with pytest.raises(ConfigError, match=r"Fix: pass a float lr >= 0$"):
        check_number(-1.0, "lr", low=0.0)


@pytest.mark.parametrize("check, good, bad, words", [
    (check_positive, [1e-12, 3, np.float64(2.0)], [0, 0.0, -1.0, math.inf, True, "1"], "sigma as a finite number > 0"),
    (check_nonnegative, [0, 0.0, 2.5], [-1e-9, math.nan, False, None], "sigma as a finite number >= 0"),
])
def test_positive_and_nonnegative(check, good, bad, words):
    for value in good:
        assert check(value, "sigma") == float(value)
    for value in bad:
        with pytest.raises(ConfigError, match=words):
            check(value, "sigma")


@pytest.mark.parametrize("value, kwargs, ok", [
    (0.0, {}, True), (1.0, {}, True), (0.3, {}, True), (1, {}, True),
    (0.0, {"inclusive_low": False}, False), (1.0, {"inclusive_high": False}, False),
    (0.999, {"inclusive_high": False}, True), (-0.01, {}, False), (1.01, {}, False),
    (math.nan, {}, False), (True, {}, False), ("0.5", {}, False),
])
def test_check_probability(value, kwargs, ok):
    if ok:
        assert check_probability(value, "p", **kwargs) == float(value)
    else:
        with pytest.raises(ConfigError, match=r"p as a probability in [\[(]0, 1[\])]"):
            check_probability(value, "p", **kwargs)


# ---------------------------------------------------------------------------------------------- integers
@pytest.mark.parametrize("value", [0, 7, -3, np.int64(5), np.int8(2), np.uint16(4)])
def test_check_int_accepts_python_and_numpy_integers(value):
    out = check_int(value, "k")
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [True, False, np.bool_(False), 2.0, 2.5, np.float64(3.0), "3", None, torch.tensor(3)])
def test_check_int_rejects_bools_floats_and_others(value):
    with pytest.raises(ConfigError, match=re.escape(f"expected k as an integer; received {value!r}.")):
        check_int(value, "k")


@pytest.mark.parametrize("value, kwargs, words", [
    (0, {"low": 1}, "steps as an integer >= 1; received 0"),
    (11, {"high": 10}, "steps as an integer <= 10; received 11"),
    (1, {"low": 2, "high": 500}, r"steps as an integer in \[2, 500\]; received 1"),
    (-1, {"low": 0}, "steps as an integer >= 0; received -1"),
])
def test_check_int_bounds(value, kwargs, words):
    with pytest.raises(ConfigError, match=words):
        check_int(value, "steps", **kwargs)
    low, high = kwargs.get("low"), kwargs.get("high")
    assert check_int(low if low is not None else high, "steps", **kwargs) == (low if low is not None else high)


def test_check_positive_int():
    assert check_positive_int(1, "hidden") == 1
    for value in (0, -4, 1.0, True):
        with pytest.raises(ConfigError, match="hidden as an integer >= 1") as info:
            check_positive_int(value, "hidden", fix="pass e.g. hidden=64")
        assert str(info.value).endswith("Fix: pass e.g. hidden=64")


def test_check_count_raises_dtype_and_empty_input_errors():
    assert check_count(3) == 3 and check_count(np.int32(2), "batch") == 2
    for value in (3.0, "3", True, torch.tensor(3)):
        with pytest.raises(DTypeError, match="the number of samples n as an int"):
            check_count(value)
    for value in (0, -2):
        with pytest.raises(EmptyInputError, match="n >= 1 samples"):
            check_count(value)


def test_check_bool():
    assert check_bool(True, "squared") is True and check_bool(np.bool_(False), "squared") is False
    for value in (0, 1, "true", None):
        with pytest.raises(ConfigError, match="squared as a bool"):
            check_bool(value, "squared")


# ----------------------------------------------------------------------------------------------- tensors
def test_check_tensor_errors():
    x = torch.randn(3, 2)
    assert check_tensor(x, "x") is x
    with pytest.raises(DTypeError, match="x as a torch.Tensor"):
        check_tensor([[1.0]], "x")
    with pytest.raises(ShapeError, match="at least 2 dimension"):
        check_tensor(torch.zeros(3), "x", min_dim=2)
    with pytest.raises(EmptyInputError, match="non-empty x"):
        check_tensor(torch.zeros(0, 2), "x")
    assert check_tensor(torch.zeros(0, 2), "x", allow_empty=True).shape == (0, 2)
    with pytest.raises(DTypeError, match="floating dtype"):
        check_tensor(torch.ones(2, dtype=torch.long), "x")
    assert check_tensor(torch.ones(2, dtype=torch.long), "x", floating=False).dtype == torch.long
    with pytest.raises(NonFiniteError, match="1 NaN/Inf entries"):
        check_tensor(torch.tensor([1.0, math.nan]), "x")
    assert check_tensor(torch.tensor([math.inf]), "x", finite=False).isinf().all()


def test_check_finite_catches_overflowing_sums_exactly():
    big = torch.full((4,), 3e38)  # the fast sum overflows to inf; the exact scan must still pass it
    assert check_finite(big, "x") is big
    with pytest.raises(NonFiniteError, match="finite values in x; received 2 NaN/Inf entries"):
        check_finite(torch.tensor([math.inf, -math.inf, 1.0]), "x")


def test_shapes():
    a, b = torch.zeros(2, 3), torch.zeros(2, 3)
    check_same_shape(a, b)
    with pytest.raises(ShapeError, match=r"x0 and x1 with the same shape; received \(2, 3\) and \(3, 2\)"):
        check_same_shape(a, b.T)
    assert check_pair(a, b, ("u", "v")) == (a, b)
    with pytest.raises(ShapeError, match="u and v with the same shape"):
        check_pair(a, torch.zeros(2, 4), ("u", "v"))


# ------------------------------------------------------------------------------------------------- times
def test_time_helpers():
    like = torch.zeros(3, 2, dtype=torch.float64)
    t = as_time(0.5, 3, like)
    assert t.shape == (3,) and t.dtype == torch.float64 and t.tolist() == [0.5] * 3
    assert broadcast_time(t, torch.zeros(3, 4, 5)).shape == (3, 1, 1)
    assert check_time(torch.rand(3), 3).shape == (3,)
    with pytest.raises(ShapeError, match=r"t of shape \(3,\)"):
        check_time(torch.rand(4), 3)
    assert check_unit_time(1, like).tolist() == [1.0] * 3
    assert check_unit_time(torch.tensor(0.25), like).tolist() == [0.25] * 3
    with pytest.raises(ConfigError, match=r"t in \[0, 1\] \(0 = source, 1 = data\)"):
        check_unit_time(torch.tensor([0.0, 0.5, 999.0]), like)
    with pytest.raises(NonFiniteError):
        check_unit_time(torch.tensor([0.0, math.nan, 1.0]), like)


def test_all_lists_every_public_check():
    import flowzoo.core.validation as validation

    public = {name for name, value in vars(validation).items()
              if callable(value) and not name.startswith("_") and getattr(value, "__module__", "") == validation.__name__}
    assert public == set(exported)
