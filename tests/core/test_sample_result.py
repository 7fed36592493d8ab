"""Every flowzoo sampler has one call shape and returns one SampleResult (issue 23): ``(model, x, *, ...,
generator=None, callback=None)``, the exact NFE, a callback once per step with {i, t, t_next, x}, a trajectory on
request, and reproducible draws from a seeded generator where the sampler is stochastic."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from flowzoo.core.errors import ConfigError
from flowzoo.core.families import DTMModel, ddim_sample, dtm_sample, pfgmpp_sample, sample_prior
from flowzoo.core.fewstep import flowmap_sample, flowturbo_sample, one_step_sample
from flowzoo.core.sampling import SampleResult, StepRecorder, integrate, integrate_sde


class _Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def _decay(x, t, *rest):
    return -x


def _dtm():
    torch.manual_seed(0)
    return DTMModel(2, T=3, hidden=8, head_hidden=8)


# name -> (sampler, model factory, keyword arguments, expected nfe, number of steps, stochastic)
CASES = {
    "integrate euler": (integrate, lambda: _Counting(_decay), {"method": "euler", "steps": 5}, 5, 5, False),
    "integrate rk4": (integrate, lambda: _Counting(_decay), {"method": "rk4", "steps": 3}, 12, 3, False),
    "integrate_sde": (integrate_sde, lambda: _Counting(_decay),
                      {"score_model": _decay, "eps": 0.5, "steps": 4}, 8, 4, True),
    "flowmap_sample": (flowmap_sample, lambda: _Counting(lambda x, s, t: -x), {"steps": 3}, 3, 3, False),
    "pfgmpp_sample": (pfgmpp_sample, lambda: _Counting(lambda x, sigma: 0.5 * x), {"steps": 4}, 7, 4, False),
    "dtm_sample": (dtm_sample, _dtm, {"inner_steps": 2}, 3, 3, True),
    "ddim_sample": (ddim_sample, lambda: _Counting(lambda x, t: 0.1 * x), {"steps": 4}, 4, 4, False),
    "flowturbo_sample": (flowturbo_sample, lambda: _Counting(_decay),
                         {"heun_steps": 1, "pseudo_steps": 2, "refiner_steps": 0}, 4, 3, False),
    "one_step_sample": (one_step_sample, lambda: _Counting(lambda x, s: -x), {}, 1, 1, False),
}


def _start(name, generator=None):
    if name == "pfgmpp_sample":
        return sample_prior((6, 2), 5.0, 8, generator or torch.Generator().manual_seed(0))
    return torch.randn(6, 2, generator=generator or torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(CASES))
def test_one_signature(name):
    sampler = CASES[name][0]
    params = list(inspect.signature(sampler).parameters.values())
    assert [p.kind for p in params[:2]] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * 2
    assert params[1].name == "x"
    assert all(p.kind == inspect.Parameter.KEYWORD_ONLY for p in params[2:]), name
    names = {p.name for p in params}
    assert {"generator", "callback", "return_trajectory"} <= names
    assert inspect.signature(sampler).parameters["generator"].default is None
    assert inspect.signature(sampler).parameters["callback"].default is None


@pytest.mark.parametrize("name", list(CASES))
def test_result_nfe_callback_and_trajectory(name):
    sampler, make_model, kwargs, nfe, steps, _ = CASES[name]
    model, x, seen = make_model(), _start(name), []
    out = sampler(model, x, callback=seen.append, return_trajectory=True, **kwargs)
    assert isinstance(out, SampleResult) and out.x.shape == x.shape
    assert out.nfe == nfe
    if isinstance(model, _Counting):  # nfe is the number of calls actually made (the SDE's half are the score's)
        assert model.calls == (nfe // 2 if name == "integrate_sde" else nfe)
    assert [step["i"] for step in seen] == list(range(steps))
    assert all({"i", "t", "t_next", "x"} <= set(step) for step in seen)
    assert torch.equal(seen[-1]["x"], out.x)
    assert all(float(s["t"]) < float(s["t_next"]) for s in seen)  # flowzoo time runs source -> data
    assert out.trajectory.shape == (steps + 1, *x.shape)
    assert torch.equal(out.trajectory[0], x) and torch.equal(out.trajectory[-1], out.x)
    assert out.times is not None and len(out.times) == steps + 1
    plain = sampler(make_model(), x, **kwargs)
    assert plain.trajectory is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        plain.nfe = 0


@pytest.mark.parametrize("name", [n for n, case in CASES.items() if case[5]])
def test_stochastic_samplers_follow_the_generator(name):
    sampler, make_model, kwargs, *_ = CASES[name]
    model, x = make_model(), _start(name)

    def draw(seed):
        return sampler(model, x, generator=torch.Generator().manual_seed(seed), **kwargs).x

    assert torch.equal(draw(3), draw(3))
    assert not torch.allclose(draw(3), draw(4))


@pytest.mark.parametrize("name", [n for n, case in CASES.items() if not case[5]])
def test_deterministic_samplers_ignore_the_generator(name):
    sampler, make_model, kwargs, *_ = CASES[name]
    x = _start(name)
    a = sampler(make_model(), x, generator=torch.Generator().manual_seed(1), **kwargs).x
    b = sampler(make_model(), x, **kwargs).x
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["integrate euler", "flowmap_sample", "ddim_sample", "one_step_sample"])
def test_a_callback_that_is_not_callable_is_refused(name):
    sampler, make_model, kwargs, *_ = CASES[name]
    with pytest.raises(ConfigError, match="callback"):
        sampler(make_model(), _start(name), callback="print", **kwargs)


def test_sampler_extras():
    x = sample_prior((4, 2), 5.0, 8, torch.Generator().manual_seed(0))
    pfgm = pfgmpp_sample(lambda x, sigma: 0.0 * x, x, steps=3, sigma_max=5.0)
    assert pfgm.extras["sigmas"][0] == 5.0 and pfgm.extras["sigmas"][-1] == 0.0
    assert torch.allclose(pfgm.times, 1.0 / (1.0 + pfgm.extras["sigmas"]))
    dtm = dtm_sample(_dtm(), torch.randn(4, 2), inner_steps=5)
    assert dtm.extras == {"head_nfe": 15, "inner_steps": 5}
    turbo = flowturbo_sample(_decay, torch.randn(4, 2), heun_steps=0, pseudo_steps=3, refiner_steps=0)
    assert turbo.extras["stage_nfe"] == {"heun": 0, "pseudo": 4, "refiner": 0} and turbo.nfe == 4
    ddim = ddim_sample(lambda x, t: 0.1 * x, torch.randn(4, 2), steps=3, return_x1_predictions=True)
    assert ddim.extras["x1_predictions"].shape == (3, 4, 2)
    assert integrate(_decay, torch.randn(4, 2), steps=2).extras == {}


def test_step_recorder_skips_work_when_idle():
    recorder = StepRecorder(torch.zeros(2), torch.tensor([0.0, 0.5, 1.0]))
    assert not recorder.active and recorder.trajectory() is None
    seen = []
    recorder = StepRecorder(torch.zeros(2), torch.tensor([0.0, 0.5, 1.0]), callback=seen.append)
    recorder.record(1, torch.ones(2), sigma=3.0)
    assert recorder.active and seen[0]["t"] == 0.5 and seen[0]["t_next"] == 1.0 and seen[0]["sigma"] == 3.0
