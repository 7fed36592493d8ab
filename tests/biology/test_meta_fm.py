"""Meta Flow Matching: encoders, the objective by hand, learning on unseen populations, prediction into AnnData."""

import numpy as np
import pytest
import torch

from flowzoo.biology.cells.objective import MetaFlowMatchingLoss, PopulationBatchSampler
from flowzoo.biology.cells.meta_fm import (MetaFMOptions, build_model, evaluate_pairs, fit, plot_prediction, predict, predict_population)
from flowzoo.biology.cells.nets import DeepSetsEncoder, GCNPopulationEncoder, knn_edge_index
from flowzoo.biology.cells.populations import PopulationPair, PopulationSet
from flowzoo.core.errors import ConfigError, NonFiniteError, ShapeError
from flowzoo.core.training import TrainerConfig

from test_populations import fingerprint, toy_adata

torch.set_num_threads(1)


def spread_populations(count=32, cells=128, seed=0):
    """2-D populations N(0, s^2 I), s ~ U(0.5, 1.5), treated = N(0, s^2 I) + (4 (s - 1), 0).

    One cell says little about s, the population says it all: only a population-conditioned flow can know
    the shift. The last quarter of the populations is held out.
    """
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    for i in range(count):
        s = 0.5 + torch.rand(1, generator=gen).item()
        source = torch.randn(cells, 2, generator=gen) * s
        target = torch.randn(cells, 2, generator=gen) * s + torch.tensor([4 * (s - 1.0), 0.0])
        rows = np.arange(cells)
        pairs.append(PopulationPair(f"p{i}", "treated", "train" if i < count * 3 // 4 else "test", source, target,
                                    rows, rows))
    return PopulationSet(pairs, ["treated"], "X", 2)


def quiet_trainer(tmp_path, steps, name):
    return TrainerConfig(steps=steps, lr=2e-3, ema_decay=0.0, out_dir=str(tmp_path / name), progress=False,
                         tensorboard=False, checkpoint_every=0, log_every=10_000)


def test_knn_graph_by_hand():
    cells = torch.tensor([[0.0], [1.0], [3.0]])
    # Each cell's nearest other cell: 0 -> 1, 1 -> 0, 3 -> 1; edges run neighbour -> cell.
    assert knn_edge_index(cells, 1).tolist() == [[1, 0, 1], [0, 1, 2]]
    with pytest.raises(ShapeError, match="more cells than k=3"):
        knn_edge_index(cells, 3)


@pytest.mark.parametrize("kind", ["gcn", "deepsets"])
def test_encoders_are_permutation_invariant(kind):
    torch.manual_seed(0)
    encoder = (GCNPopulationEncoder(3, cond_dim=2, hidden=16, knn_k=4) if kind == "gcn"
               else DeepSetsEncoder(3, cond_dim=2, hidden=16))
    cells = torch.randn(2, 30, 3)
    cond = torch.nn.functional.one_hot(torch.randint(0, 2, (2, 30)), 2).float()
    order = torch.randperm(30)
    base = encoder(cells, cond)
    shuffled = encoder(cells[:, order], cond[:, order])
    assert torch.allclose(base, shuffled, atol=1e-6)
    assert torch.allclose(base.norm(dim=1), torch.ones(2), atol=1e-6)
    # A list of unequal populations gives each one the embedding it gets alone.
    ragged = encoder([cells[0], cells[1, :20]], [cond[0], cond[1, :20]])
    assert torch.allclose(ragged[0], base[0], atol=1e-6)
    assert torch.allclose(ragged[1], encoder(cells[1:, :20], cond[1:, :20])[0], atol=1e-6)
    assert not torch.allclose(base[0], base[1], atol=1e-3)


def _zero_output(model):
    last = model.velocity.body[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    return model


def test_objective_by_hand_with_a_zero_velocity():
    options = MetaFMOptions(method="fm", hidden=8, depth=1)
    model = _zero_output(build_model(options, dim=1, treatments=["t"], train_populations=["a"]))
    source = torch.tensor([[[0.0], [10.0]]])
    target = torch.tensor([[[11.0], [1.0]]])
    batch = {"source": source, "target": target, "treatment": torch.zeros(1, dtype=torch.long),
             "population": torch.zeros(1, dtype=torch.long)}
    loss, _ = MetaFlowMatchingLoss()(model, batch)
    assert loss.item() == pytest.approx((11.0 ** 2 + 9.0 ** 2) / 2)  # target x1 - x0 as given
    loss, _ = MetaFlowMatchingLoss(coupling="exact_ot")(model, batch)
    assert loss.item() == pytest.approx(1.0)  # OT pairs 0 -> 1 and 10 -> 11


def test_joint_and_alternating_updates_reach_the_right_parameters():
    popset = spread_populations(count=4, cells=16)
    options = MetaFMOptions(encoder="deepsets", hidden=16, depth=2, encoder_hidden=8, embed_dim=4,
                            populations_per_batch=2, cells_per_population=8)
    model = build_model(options, dim=2, treatments=["treated"], train_populations=[])
    sampler = PopulationBatchSampler(popset.pairs, ["treated"], [p.population for p in popset.pairs], 2, 8)
    batch = sampler(torch.Generator().manual_seed(0))
    assert batch["source"].shape == (2, 8, 2) and batch["treatment"].tolist() == [0, 0]

    def grads(objective):
        model.zero_grad(set_to_none=True)
        objective(model, batch)[0].backward()
        has = lambda module: any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
        return has(model.encoder), has(model.velocity)

    assert grads(MetaFlowMatchingLoss()) == (True, True)
    alternating = MetaFlowMatchingLoss(alternating=True)
    assert grads(alternating) == (False, True)   # flow update on a detached embedding
    assert grads(alternating) == (True, False)   # encoder update through a frozen flow
    assert all(p.requires_grad for p in model.parameters())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mfm")
    popset = spread_populations()
    small = dict(hidden=64, depth=3, embed_dim=16, encoder_hidden=32, cells_per_population=64, populations_per_batch=8)
    models = {}
    for name, options in {"gcn": MetaFMOptions(encoder="gcn", **small),
                          "deepsets": MetaFMOptions(encoder="deepsets", **small),
                          "characteristic": MetaFMOptions(encoder="characteristic", readout=True,
                                                          encoder_fourier_features=16, encoder_fourier_scale=0.3,
                                                          context_cells=128, **small),
                          "fm": MetaFMOptions(method="fm", **small),
                          "cgfm": MetaFMOptions(method="per_population_fm", **small)}.items():
        models[name] = fit(popset, options, quiet_trainer(tmp, 400, name), eval_pairs=0)[0]
    return popset, models


def test_meta_fm_beats_fm_on_unseen_populations(trained):
    popset, models = trained
    held_out = popset.split("test")
    w2 = {name: evaluate_pairs(model, held_out, steps=20)["w2"] for name, model in models.items()}
    assert w2["gcn"] < 0.7 * w2["fm"], w2
    assert w2["deepsets"] < 0.7 * w2["fm"], w2
    assert w2["characteristic"] < 0.7 * w2["fm"], w2

    # A broken encoder -- the embedding zeroed at prediction -- loses the margin.
    for name in ("deepsets", "characteristic"):
        broken = models[name]
        original = broken.condition
        broken.condition = lambda *args, original=original, **kwargs: torch.zeros_like(original(*args, **kwargs))
        try:
            w2_broken = evaluate_pairs(broken, held_out, steps=20)["w2"]
        finally:
            del broken.condition
        assert w2_broken > w2[name] / 0.7, (name, w2_broken, w2)


def test_per_population_baseline_refuses_unseen_populations(trained):
    popset, models = trained
    cgfm, pair = models["cgfm"], popset.split("test")[0]
    with pytest.raises(ConfigError, match="cannot represent a new one"):
        predict_population(cgfm, pair.source, population=pair.population)
    out = predict_population(cgfm, pair.source, population=pair.population, allow_unseen=True, steps=5)
    assert out.shape == pair.source.shape
    seen = popset.split("train")[0]
    assert predict_population(cgfm, seen.source, population=seen.population, steps=5).shape == seen.source.shape


def test_predict_writes_a_copy_and_leaves_the_input_alone(tmp_path):
    adata = toy_adata(populations=3, cells=15, dim=3)
    before = fingerprint(adata)
    options = MetaFMOptions(knn_k=4, hidden=16, depth=2, embed_dim=8, encoder_hidden=8)
    model = build_model(options, dim=3, treatments=["treated"], train_populations=[]).eval()
    out = predict(model, adata, population_key="population", condition_key="condition", steps=4)
    assert fingerprint(adata) == before and "X_meta_fm" not in adata.layers
    layer = out.layers["X_meta_fm"]
    control = (adata.obs["condition"] == "control").to_numpy()
    assert np.isnan(layer[~control]).all() and np.isfinite(layer[control]).all()
    rows = np.flatnonzero(control & (adata.obs["population"] == "p1").to_numpy())
    direct = predict_population(model, torch.from_numpy(adata.X[rows]), steps=4)
    assert np.allclose(layer[rows], direct.numpy(), atol=1e-5)
    assert out.uns["X_meta_fm"]["populations"] == ["p0", "p1", "p2"]
    model2 = build_model(options, dim=2, treatments=["treated"], train_populations=[]).eval()
    on_pca = predict(model2, adata, population_key="population", condition_key="condition", rep="X_pca",
                     key_added="pred", steps=2)
    assert on_pca.obsm["pred"].shape == (adata.n_obs, 2) and "pred" not in on_pca.layers
    png = plot_prediction(torch.from_numpy(adata.X[rows]), direct, torch.from_numpy(adata.X[rows] + 1),
                          tmp_path / "pred.png", title="p1")
    assert png.stat().st_size > 1000


def test_bad_input_is_named():
    options = MetaFMOptions(knn_k=4, hidden=16, depth=2, embed_dim=8, encoder_hidden=8)
    model = build_model(options, dim=3, treatments=["a", "b"], train_populations=[]).eval()
    cells = torch.randn(10, 3)
    with pytest.raises(ConfigError, match=r"a treatment name.*\['a', 'b'\]"):
        predict_population(model, cells)
    with pytest.raises(ConfigError, match="treatment the model was trained on"):
        predict_population(model, cells, treatment="c")
    cells[2, 1] = float("nan")
    with pytest.raises(NonFiniteError, match="1 NaN/Inf"):
        predict_population(model, cells, treatment="a")
    with pytest.raises(ShapeError, match="more cells than k=4"):
        predict_population(model, torch.randn(3, 3), treatment="a")
    with pytest.raises(ConfigError, match="coupling"):
        MetaFlowMatchingLoss(coupling="sinkhorn")
    with pytest.raises(ConfigError, match=r"3 features in rep 'X_pca'"):
        predict(model, toy_adata(), population_key="population", condition_key="condition", rep="X_pca",
                treatment="a")
    with pytest.raises(ConfigError, match="method in"):
        build_model(MetaFMOptions(method="cgfm"), dim=2, treatments=["a"], train_populations=[])


def test_large_populations_are_embedded_in_training_sized_subsets():
    options = MetaFMOptions(knn_k=4, hidden=16, depth=2, embed_dim=8, encoder_hidden=8, cells_per_population=20)
    model = build_model(options, dim=2, treatments=["treated"], train_populations=[]).eval()
    assert model.context_cells == 20
    cells = torch.randn(50, 2)
    generator = torch.Generator().manual_seed(0)  # the subsets predict_population draws: ceil(50 / 20) = 3
    subsets = torch.stack([torch.randperm(50, generator=generator)[:20] for _ in range(3)])
    with torch.no_grad():
        by_hand = torch.nn.functional.normalize(model.condition(cells[subsets]).mean(0, keepdim=True), dim=1)
        whole = model.condition(cells[None])
    seen = {}

    def spy(x, t, embedding=None, treatment=None):
        seen["embedding"] = embedding[:1].clone()
        return torch.zeros_like(x)

    model.forward = spy
    predict_population(model, cells, steps=1)
    assert torch.allclose(seen["embedding"], by_hand, atol=1e-6)
    predict_population(model, cells, steps=1, context_cells=0)  # 0: all cells in one graph
    assert torch.allclose(seen["embedding"], whole, atol=1e-6)
    assert not torch.allclose(by_hand, whole, atol=1e-3)
    with pytest.raises(ConfigError, match="context_cells"):
        predict_population(model, cells, steps=1, context_cells=-1)


def test_fourier_features_enter_the_flow_and_are_saved():
    from flowzoo.biology.cells.nets import ConditionedVelocity

    net = ConditionedVelocity(2, 0, hidden=16, depth=2, fourier_features=8, fourier_scale=2.0)
    assert net.body[0].in_features == 2 + 16 + 64 and "frequencies" in net.state_dict()
    assert abs(float(net.frequencies.std()) - 2.0) < 1.0
    again = ConditionedVelocity(2, 0, hidden=16, depth=2, fourier_features=8, fourier_scale=2.0)
    assert torch.equal(net.frequencies, again.frequencies)  # seeded: a rebuilt model matches its checkpoint
    assert net(torch.randn(5, 2), torch.rand(5)).shape == (5, 2)
    with pytest.raises(ConfigError, match="fourier"):
        ConditionedVelocity(2, 0, fourier_features=-1)


def test_encoder_fourier_features_change_the_embedding_and_keep_invariance():
    cells = torch.randn(2, 30, 2, generator=torch.Generator().manual_seed(1))
    for kind in (GCNPopulationEncoder, DeepSetsEncoder):
        extra = {"knn_k": 4} if kind is GCNPopulationEncoder else {}
        torch.manual_seed(0)
        plain = kind(2, hidden=16, **extra)
        torch.manual_seed(0)
        fourier = kind(2, hidden=16, fourier_features=8, fourier_scale=0.5, **extra)
        assert fourier.frequencies.shape == (2, 8) and "frequencies" in fourier.state_dict()
        assert plain.frequencies is None and "frequencies" not in plain.state_dict()
        base = fourier(cells)
        assert not torch.allclose(base, plain(cells), atol=1e-3)
        assert torch.allclose(base, fourier(cells[:, torch.randperm(30)]), atol=1e-6)
        with pytest.raises(ShapeError, match="2 features"):
            fourier(torch.randn(1, 30, 3))


def test_characteristic_encoder_and_readout_by_hand():
    from flowzoo.biology.cells.nets import CharacteristicEncoder, ConditionedVelocity, _read_out, fourier_encode

    encoder = CharacteristicEncoder(2, features=5, scale=0.7)
    y = torch.tensor([[0.3, -1.2]])
    cells = torch.cat([y, -y])  # a symmetric population: its characteristic function is real, cos 2πB·y
    phase = 2 * torch.pi * y @ encoder.frequencies
    embedding = encoder(cells[None])
    assert embedding.shape == (1, 10)
    assert torch.allclose(embedding[0, :5], torch.cos(phase[0]), atol=1e-6)
    assert torch.allclose(embedding[0, 5:], torch.zeros(5), atol=1e-6)
    # read out at x, the single point y's characteristic function gives cos / sin of 2πB·(y - x)
    single = encoder(y[None])
    x = torch.tensor([[1.0, 0.5]])
    read = _read_out(single, fourier_encode(x, encoder.frequencies))
    shift = 2 * torch.pi * (y - x) @ encoder.frequencies
    assert torch.allclose(read, torch.cat([torch.cos(shift), torch.sin(shift)], dim=1), atol=1e-5)
    net = ConditionedVelocity(2, 10, hidden=16, depth=2, readout_frequencies=encoder.frequencies)
    assert net.body[0].in_features == 2 + 64 + 10 + 10 and net(x, torch.rand(1), embedding=single).shape == (1, 2)
    with pytest.raises(ConfigError, match="readout_frequencies"):
        ConditionedVelocity(2, 8, readout_frequencies=encoder.frequencies)
    with pytest.raises(ConfigError, match="per-cell condition"):
        CharacteristicEncoder(2, features=5, cond_dim=3)
    with pytest.raises(ConfigError, match="at least 1 frequency"):
        build_model(MetaFMOptions(encoder="characteristic"), dim=2, treatments=["a"], train_populations=[])
    with pytest.raises(ConfigError, match="readout only with encoder='characteristic'"):
        build_model(MetaFMOptions(readout=True), dim=2, treatments=["a"], train_populations=[])


def test_context_cells_feed_the_encoder():
    popset = spread_populations(count=4, cells=40)
    options = MetaFMOptions(encoder="characteristic", readout=True, encoder_fourier_features=4, hidden=16, depth=2,
                            populations_per_batch=2, cells_per_population=8, context_cells=32)
    model = build_model(options, dim=2, treatments=["treated"], train_populations=[])
    assert model.context_cells == 0  # a characteristic function averages: prediction embeds every cell
    sampler = PopulationBatchSampler(popset.pairs, ["treated"], [p.population for p in popset.pairs], 2, 8, 32)
    batch = sampler(torch.Generator().manual_seed(0))
    assert batch["source"].shape == (2, 8, 2) and batch["context"].shape == (2, 32, 2)
    seen = []
    original = model.condition
    model.condition = lambda cells, *args: seen.append(cells.shape) or original(cells, *args)
    MetaFlowMatchingLoss()(model, batch)
    assert seen == [(2, 32, 2)]
    with pytest.raises(ConfigError, match="context_cells"):
        PopulationBatchSampler(popset.pairs, ["treated"], [p.population for p in popset.pairs], 2, 8, -1)


def test_per_population_rows_read_out_start_small_and_move_with_a_gain():
    options = MetaFMOptions(method="per_population_fm", encoder="characteristic", readout=True,
                            encoder_fourier_features=4, hidden=8, depth=1)
    model = build_model(options, dim=2, treatments=["a"], train_populations=["p", "q"])
    assert model.population_table.weight.shape == (3, 8) and model.table_gain == 10.0
    rows = model.condition(population=torch.tensor([0, 2]))
    assert torch.allclose(rows, model.population_table.weight[[0, 2]] * 10.0)
    assert float(rows.detach().abs().max()) < 0.1  # near zero: every population starts as the pooled FM
    plain = build_model(MetaFMOptions(method="per_population_fm", embed_dim=4, hidden=8, depth=1), dim=2,
                        treatments=["a"], train_populations=["p"])
    assert plain.table_gain == 1.0
