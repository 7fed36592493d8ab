"""Tests of flowzoo.core.fewstep.reflow: pair store, reflow straightening, k-step distillation."""

import json
import os

import pytest
import torch

from flowzoo.core.data import sample_toy
from flowzoo.core.errors import CheckpointError, ConfigError, FlowzooError, ShapeError
from flowzoo.core.analysis import path_straightness, wasserstein2
from flowzoo.core.nets import MLPVelocity
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.fewstep import (MANIFEST_NAME, PairStore, ReflowDistillationLoss, ReflowLoss, generate_pairs,
                                   rectify)
from flowzoo.core.sampling import integrate
from flowzoo.core.paths import UShapedTime
import flowzoo.core.fewstep.reflow as reflow_module
from toy_training import fit, moons_pool, pool_batches


def _train_fm(steps, seed=0, hidden=64):
    torch.manual_seed(seed)
    net = MLPVelocity(2, hidden=hidden, depth=2, time_dim=16)
    g = torch.Generator().manual_seed(seed)
    return fit(net, FlowMatchingLoss(), steps, pool_batches(moons_pool(), g), generator=g)


def _rotation(x, t):
    return torch.stack([-x[:, 1], x[:, 0]], 1) * (1 + t[:, None])


def test_pair_store_round_trip_is_exactly_paired(tmp_path):
    x0 = torch.randn(23, 2, generator=torch.Generator().manual_seed(0))
    store = generate_pairs(_rotation, x0, out_dir=tmp_path, chunk_size=5, steps=16, progress=False)
    assert len(store) == 23 and store.num_chunks == 5
    assert len(list(tmp_path.glob("pairs-*.safetensors"))) == 5
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["count"] == 23 and manifest["solver"] == "rk4" and manifest["steps"] == 16
    assert manifest["sample_shape"] == [2] and manifest["dtype"] == "float32"
    reopened = PairStore(tmp_path)
    subset = torch.randperm(23, generator=torch.Generator().manual_seed(1))[:7].tolist()
    for i in subset:  # regenerate each endpoint from its stored noise: exact pairing
        item = reopened[i]
        assert torch.equal(item["x0"], x0[i])
        again = integrate(_rotation, item["x0"][None], method="rk4", steps=16).x[0]
        assert torch.allclose(again, item["x1"], atol=1e-6)
    assert sorted(set(reopened.chunk_shuffled_indices(torch.Generator().manual_seed(0)))) == list(range(23))


def test_pair_store_sampler_conditioning_and_dataloader(tmp_path):
    model = lambda x, t, y: x * 0 + y[:, None].float()  # noqa: E731
    y = torch.arange(10) % 3
    store = generate_pairs(model, lambda n, generator: torch.randn(n, 3, generator=generator), 10,
                           out_dir=tmp_path, chunk_size=4, method="euler", steps=2, cond={"y": y}, seed=7,
                           progress=False)
    batch = next(iter(torch.utils.data.DataLoader(store, batch_size=10)))
    assert set(batch) == {"x0", "x1", "y"} and torch.equal(batch["y"], y)
    assert torch.allclose(batch["x1"] - batch["x0"], y[:, None].float().expand(10, 3))
    loss, _ = FlowMatchingLoss()(lambda x, t, y: torch.zeros_like(x), batch)  # plugs into the objective
    assert loss.item() > 0


def test_crash_mid_write_leaves_store_refused(tmp_path, monkeypatch):
    real = reflow_module._write_chunk
    calls = []

    def crashing(path, tensors):
        calls.append(path)
        if len(calls) == 2:
            with open(path.with_name(path.name + ".tmp"), "wb") as f:  # half-written temporary file
                f.write(b"partial")
            raise KeyboardInterrupt("simulated crash")
        return real(path, tensors)

    monkeypatch.setattr(reflow_module, "_write_chunk", crashing)
    with pytest.raises(KeyboardInterrupt):
        generate_pairs(_rotation, torch.randn(10, 2), out_dir=tmp_path, chunk_size=4, steps=2, progress=False)
    assert not (tmp_path / MANIFEST_NAME).exists()
    with pytest.raises(CheckpointError):
        PairStore(tmp_path)


def test_corrupted_or_missing_chunk_is_refused(tmp_path):
    store = generate_pairs(_rotation, torch.randn(9, 2), out_dir=tmp_path, chunk_size=4, steps=2, progress=False)
    assert len(store) == 9
    chunk = tmp_path / "pairs-00001.safetensors"
    data = chunk.read_bytes()
    chunk.write_bytes(data[:-8] + b"\x00" * 8)
    with pytest.raises(CheckpointError):
        PairStore(tmp_path)[5]
    os.remove(chunk)
    with pytest.raises(CheckpointError):
        PairStore(tmp_path)
    with pytest.raises(CheckpointError):  # refuses to overwrite a finished store
        generate_pairs(_rotation, torch.randn(3, 2), out_dir=tmp_path, progress=False)


def test_bad_inputs_raise_flowzoo_errors(tmp_path):
    with pytest.raises(ConfigError):
        generate_pairs(_rotation, lambda n, generator: torch.randn(n, 2), out_dir=tmp_path, progress=False)
    with pytest.raises(ShapeError):
        generate_pairs(_rotation, torch.randn(4, 2), 5, out_dir=tmp_path / "a", progress=False)
    with pytest.raises(ShapeError):
        generate_pairs(_rotation, torch.randn(4, 2), out_dir=tmp_path / "b", cond={"y": torch.zeros(3)},
                       progress=False)
    with pytest.raises(FlowzooError):
        generate_pairs(_rotation, torch.full((4, 2), float("nan")), out_dir=tmp_path / "c", progress=False)
    with pytest.raises(ConfigError):
        ReflowDistillationLoss(steps=0)
    with pytest.raises(ConfigError):
        ReflowDistillationLoss()(_rotation, {"x1": torch.randn(3, 2)})  # no paired noise
    with pytest.raises(ConfigError):
        ReflowLoss(coupling=lambda *a, **k: None)
    with pytest.raises(ConfigError):
        rectify(torch.nn.Linear(2, 2), {"x1": torch.randn(3, 2)}, 1)


def test_reflow_loss_and_distillation_hand_computed():
    assert isinstance(ReflowLoss().time_sampler, UShapedTime)
    x0, x1 = torch.zeros(4, 2), torch.ones(4, 2) * 3
    half = lambda x, t: torch.ones_like(x) * (1 + 2 * t[:, None])  # noqa: E731  v(0)=1, v(0.5)=2
    assert ReflowDistillationLoss(1)(half, {"x0": x0, "x1": x1})[0].item() == pytest.approx(4.0)  # 1 vs 3
    assert ReflowDistillationLoss(2)(half, {"x0": x0, "x1": x1})[0].item() == pytest.approx(2.25)  # 0.5+1 = 1.5 vs 3


def _reflow_experiment(tmp_path, teacher_steps, n_pairs, rectify_steps):
    teacher = _train_fm(teacher_steps)
    test = sample_toy("moons", 1000, seed=2)
    z = torch.randn(1000, 2, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(n_pairs, 2, generator=torch.Generator().manual_seed(4))
    store = generate_pairs(teacher, noise, out_dir=tmp_path, chunk_size=1024, steps=20, progress=False)
    before = [p.detach().clone() for p in teacher.parameters()]
    rf2 = rectify(teacher, store, rectify_steps, lr=1e-3)
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))  # rectify trains a copy
    pairs = store.tensors()
    unpaired = {"x0": pairs["x0"][torch.randperm(n_pairs, generator=torch.Generator().manual_seed(5))],
                "x1": pairs["x1"]}
    broken = rectify(teacher, unpaired, rectify_steps, lr=1e-3)

    def measure(m):
        return path_straightness(m, z), wasserstein2(integrate(m, z, steps=1).x, test), \
            wasserstein2(integrate(m, z, steps=50).x, test)
    return teacher, store, rf2, {"1rf": measure(teacher), "2rf": measure(rf2), "unpaired": measure(broken)}, z, test


def test_reflow_straightens_fast_and_unpaired_noise_does_not(tmp_path):
    torch.set_num_threads(1)
    _, store, rf2, m, z, test = _reflow_experiment(tmp_path, teacher_steps=500, n_pairs=2048, rectify_steps=300)
    student = rectify(rf2, store, 300, lr=1e-3, objective=ReflowDistillationLoss(1))
    w_student = wasserstein2(integrate(student, z, steps=1).x, test)
    print(m, w_student)
    assert w_student < 1.2 * m["2rf"][2]  # one distilled step ~ the 2-RF's 50-step quality
    assert m["2rf"][0] < m["1rf"][0] / 5
    assert m["2rf"][1] < 0.5 * m["1rf"][1]
    assert m["unpaired"][0] > m["1rf"][0] / 2  # the broken variant must not straighten
    assert m["unpaired"][1] > 2 * m["2rf"][1]


@pytest.mark.slow
def test_reflow_and_distillation_full(tmp_path):
    torch.set_num_threads(1)
    _, store, rf2, m, z, test = _reflow_experiment(tmp_path, teacher_steps=1500, n_pairs=6000, rectify_steps=1000)
    print(m)
    assert m["2rf"][0] < m["1rf"][0] / 5 and m["2rf"][1] < 0.5 * m["1rf"][1]
    assert m["unpaired"][0] > m["1rf"][0] / 2
    student = rectify(rf2, store, 1000, lr=1e-3, objective=ReflowDistillationLoss(1))
    w_student = wasserstein2(integrate(student, z, steps=1).x, test)
    print("distilled 1-step W2", w_student)
    assert w_student < 1.2 * m["2rf"][2]


def test_pair_store_plugs_into_the_trainer(tmp_path):
    from flowzoo.core.training import Trainer, TrainerConfig
    store = generate_pairs(_rotation, torch.randn(64, 2), out_dir=tmp_path / "pairs", chunk_size=16, steps=2,
                           progress=False)
    config = TrainerConfig(steps=4, batch_size=8, out_dir=str(tmp_path / "run"), progress=False,
                           tensorboard=False, device="cpu", checkpoint_every=0, log_every=1)
    result = Trainer(MLPVelocity(2, hidden=16, depth=1, time_dim=8), ReflowLoss(), store, config).fit()
    assert result.step == 4 and result.finished
