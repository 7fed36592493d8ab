"""flowzoo.biology.cells.populations: pairing, splitting, the offline data sets, and errors that name the problem."""

import hashlib

import anndata
import numpy as np
import pandas as pd
import pytest
import torch

from flowzoo.biology.cells.offline_populations import (letters_adata, pbmc_monocyte_estimate, pbmc_pseudo_patients,
                                                 pbmc_treatment)
from flowzoo.biology.cells.populations import load_populations
from flowzoo.core.errors import ConfigError, EmptyInputError, NonFiniteError


def toy_adata(populations=4, cells=20, dim=3, treatments=("drug",), seed=0):
    """Populations p0.. with control cells and treated cells (treated = control + population index)."""
    rng = np.random.default_rng(seed)
    blocks, obs = [], []
    for p in range(populations):
        control = rng.normal(size=(cells, dim))
        blocks.append(control)
        obs += [(f"p{p}", "control", "ctrl", "A" if i % 2 else "B") for i in range(cells)]
        for treatment in treatments:
            blocks.append(control + p)
            obs += [(f"p{p}", "treated", treatment, "A" if i % 2 else "B") for i in range(cells)]
    frame = pd.DataFrame(obs, columns=["population", "condition", "drug", "cell_type"])
    frame.index = frame.index.astype(str)
    adata = anndata.AnnData(X=np.concatenate(blocks).astype(np.float32), obs=frame)
    adata.obsm["X_pca"] = adata.X[:, :2].copy()
    adata.layers["counts"] = adata.X * 2
    return adata


def fingerprint(adata):
    digest = hashlib.sha256(np.ascontiguousarray(adata.X).tobytes())
    digest.update(pd.util.hash_pandas_object(adata.obs, index=True).to_numpy().tobytes())
    for key in sorted(adata.obsm):
        digest.update(key.encode() + np.ascontiguousarray(adata.obsm[key]).tobytes())
    for key in sorted(adata.layers):
        digest.update(key.encode() + np.ascontiguousarray(adata.layers[key]).tobytes())
    return digest.hexdigest()


def test_pairs_control_with_treated_per_population_and_treatment():
    adata = toy_adata(populations=3, treatments=("a", "b"))
    popset = load_populations(adata, population_key="population", condition_key="condition",
                              treatment_key="drug", min_cells=5)
    assert popset.treatments == ["a", "b"] and popset.dim == 3 and popset.feature_names == ["0", "1", "2"]
    assert [(p.population, p.treatment) for p in popset.pairs] == [
        ("p0", "a"), ("p0", "b"), ("p1", "a"), ("p1", "b"), ("p2", "a"), ("p2", "b")]
    pair = popset.pairs[2]  # p1 under a: treated = control + 1, row for row
    assert np.allclose(pair.target.numpy(), pair.source.numpy() + 1)
    assert np.array_equal(adata.X[pair.source_rows], pair.source.numpy())
    # Without a treatment key the condition value names the treatment.
    plain = load_populations(adata, population_key="population", condition_key="condition", min_cells=5)
    assert plain.treatments == ["treated"] and len(plain.pairs) == 3
    assert len(plain.pairs[0].target) == 40  # both drugs' cells under one condition


def test_representations_and_cell_conditions():
    adata = toy_adata()
    pca = load_populations(adata, population_key="population", condition_key="condition", rep="X_pca")
    assert pca.dim == 2 and pca.feature_names is None
    layer = load_populations(adata, population_key="population", condition_key="condition", rep="counts")
    assert np.allclose(layer.pairs[0].source.numpy(), 2 * adata.X[layer.pairs[0].source_rows])
    cond = load_populations(adata, population_key="population", condition_key="condition",
                            cell_condition_key="cell_type")
    assert cond.cell_conditions == ["A", "B"]
    assert cond.pairs[0].source_cond.shape == (20, 2) and cond.pairs[0].source_cond[1].tolist() == [1.0, 0.0]


def test_seeded_split_is_deterministic_disjoint_and_complete():
    adata = toy_adata(populations=20, cells=12)
    kwargs = dict(population_key="population", condition_key="condition", val_fraction=0.2, test_fraction=0.1)
    first = load_populations(adata, seed=3, **kwargs)
    again = load_populations(adata, seed=3, **kwargs)
    other = load_populations(adata, seed=4, **kwargs)
    names = {s: first.populations(s) for s in ("train", "validation", "test")}
    assert [len(names[s]) for s in ("train", "validation", "test")] == [14, 4, 2]
    assert set().union(*names.values()) == {f"p{i}" for i in range(20)}
    assert names == {s: again.populations(s) for s in names}
    assert names["test"] != other.populations("test") or names["validation"] != other.populations("validation")


def test_split_column_and_its_errors():
    adata = toy_adata(populations=3)
    adata.obs["split"] = adata.obs["population"].map({"p0": "train", "p1": "val", "p2": "held_out"})
    popset = load_populations(adata, population_key="population", condition_key="condition", split_key="split")
    assert [p.split for p in popset.pairs] == ["train", "validation", "test"]
    adata.obs.loc[adata.obs.index[0], "split"] = "test"  # p0 now straddles two splits
    with pytest.raises(ConfigError, match="one split value per population"):
        load_populations(adata, population_key="population", condition_key="condition", split_key="split")


def test_missing_obs_key_names_the_existing_columns():
    with pytest.raises(ConfigError, match=r"population_key='patient'.*'population', 'condition', 'drug'"):
        load_populations(toy_adata(), population_key="patient", condition_key="condition")
    with pytest.raises(ConfigError, match="X_pca"):
        load_populations(toy_adata(), population_key="population", condition_key="condition", rep="X_umap")


def test_too_few_cells_names_the_population_and_k():
    adata = toy_adata(populations=2, cells=20)
    keep = ~((adata.obs["population"] == "p1") & (adata.obs["condition"] == "control")).to_numpy()
    keep[np.flatnonzero(~keep)[:5]] = True  # p1 keeps 5 control cells
    small = adata[keep].copy()
    with pytest.raises(ConfigError, match=r"k=10 .*p1 \(5 control cells\)"):
        load_populations(small, population_key="population", condition_key="condition", min_cells=11)


def test_nan_names_the_population_and_the_count():
    adata = toy_adata(populations=3)
    rows = np.flatnonzero((adata.obs["population"] == "p2").to_numpy())
    adata.X[rows[:2], 0] = np.nan
    adata.X[rows[3], 1] = np.inf
    with pytest.raises(NonFiniteError, match=r"3 NaN/Inf values in population 'p2'"):
        load_populations(adata, population_key="population", condition_key="condition")


def test_no_pairs_says_what_was_found():
    adata = toy_adata()
    with pytest.raises(EmptyInputError, match=r"0 control cells \(condition 'untreated'\).*'control', 'treated'"):
        load_populations(adata, population_key="population", condition_key="condition", control_value="untreated")


def test_h5ad_file_and_anndata_stay_unchanged(tmp_path):
    adata = toy_adata()
    before = fingerprint(adata)
    path = tmp_path / "screen.h5ad"
    adata.write_h5ad(path)
    file_bytes = path.read_bytes()
    from_file = load_populations(path, population_key="population", condition_key="condition")
    from_memory = load_populations(adata, population_key="population", condition_key="condition")
    assert path.read_bytes() == file_bytes
    assert fingerprint(adata) == before
    assert np.array_equal(from_file.pairs[1].target.numpy(), from_memory.pairs[1].target.numpy())
    with pytest.raises(ConfigError, match="existing .h5ad"):
        load_populations(tmp_path / "missing.h5ad", population_key="population", condition_key="condition")


def test_letters_are_rotated_glyphs_with_gaussian_noise():
    adata = letters_adata("ABX", rotations=2, n_points=200, noise=0.5, validation="X", test="")
    popset = load_populations(adata, population_key="population", condition_key="condition", split_key="split")
    assert [p.population for p in popset.pairs] == ["A/0", "A/1", "B/0", "B/1", "X/0", "X/1"]
    assert popset.populations("validation") == ["X/0", "X/1"] and not popset.split("test")
    pair = popset.pairs[0]
    noise = (pair.source - pair.target).numpy()  # control rows are the treated rows plus noise, in order
    assert abs(noise.std() - 0.5) < 0.05 and abs(noise.mean()) < 0.08
    assert pair.target.norm(dim=1).max() < 3.0 * np.sqrt(2) + 0.3
    a, b = popset.pairs[0].target, popset.pairs[2].target
    radial = lambda x: np.sort(x.norm(dim=1).numpy())  # rotation-invariant shape signature
    assert np.abs(radial(a) - radial(b)).mean() > 0.1  # A and B differ beyond rotation
    again = letters_adata("ABX", rotations=2, n_points=200, validation="X", test="")
    assert np.array_equal(adata.X, again.X)



def test_letters_fresh_cells_keep_each_population_but_not_its_cells():
    from flowzoo.biology.cells.metrics import population_distances

    kwargs = dict(letters="AB", rotations=2, n_points=500, validation="", test="", seed=3)
    original = load_populations(letters_adata(**kwargs), population_key="population", condition_key="condition")
    fresh = load_populations(letters_adata(**kwargs, cells_seed=11), population_key="population",
                             condition_key="condition")
    assert [p.population for p in fresh.pairs] == [p.population for p in original.pairs]
    same = [population_distances(a.target, b.target)["w2"] for a, b in zip(original.pairs, fresh.pairs)]
    other_rotation = population_distances(original.pairs[0].target, fresh.pairs[1].target)["w2"]
    assert not torch.equal(original.pairs[0].target, fresh.pairs[0].target)
    assert max(same) < 0.7 * other_rotation, (same, other_rotation)  # two-sample noise vs another rotation


def test_pbmc_pseudo_patients_response_follows_monocyte_fraction():
    adata = pbmc_pseudo_patients(8, seed=0, cells_per_condition=60)
    assert adata.shape == (8 * 2 * 60, 10) and set(adata.obs.columns) == {"patient", "condition", "cell_type"}
    popset = load_populations(adata, population_key="patient", condition_key="condition", test_fraction=0.25,
                              val_fraction=0.0)
    assert len(popset.pairs) == 8 and len(popset.split("test")) == 2
    fractions = adata.uns["pseudo_patients"]["monocyte_fraction"]
    shift = [float((p.target - p.source).mean(0).norm()) for p in popset.pairs]
    measured = [float((adata.obs["cell_type"].to_numpy()[p.source_rows] == "CD14+ Monocyte").mean())
                for p in popset.pairs]
    assert np.corrcoef([fractions[p.population] for p in popset.pairs], shift)[0, 1] > 0.9
    assert np.corrcoef(measured, shift)[0, 1] > 0.8  # visible from the control population itself
    again = pbmc_pseudo_patients(8, seed=0, cells_per_condition=60)
    assert np.array_equal(adata.X, again.X)
    fresh = pbmc_pseudo_patients(8, seed=0, cells_per_condition=60, cells_seed=5)
    assert fresh.uns["pseudo_patients"]["monocyte_fraction"] == fractions  # the same patients ...
    assert not np.array_equal(adata.X, fresh.X)                            # ... with other cells
    fresh_pairs = load_populations(fresh, population_key="patient", condition_key="condition", test_fraction=0.25,
                                   val_fraction=0.0).pairs
    assert [p.population for p in fresh_pairs] == [p.population for p in popset.pairs]
    fresh_shift = [float((p.target - p.source).mean(0).norm()) for p in fresh_pairs]
    assert np.corrcoef(shift, fresh_shift)[0, 1] > 0.95


def test_pbmc_treatment_is_the_simulation_and_the_cells_estimate_the_composition():
    adata = pbmc_pseudo_patients(6, seed=3, cells_per_condition=80)
    fractions = adata.uns["pseudo_patients"]["monocyte_fraction"]
    errors = []
    for patient, fraction in fractions.items():
        rows = adata.obs["patient"].to_numpy() == patient
        control = rows & (adata.obs["condition"].to_numpy() == "control")
        treated = np.asarray(adata.X[rows & (adata.obs["condition"].to_numpy() == "treated")])
        # with the true composition the function reproduces the data set's treated cells ...
        np.testing.assert_allclose(pbmc_treatment(adata.X[control], fraction), treated, atol=1e-5)
        # ... a wrong one moves every cell by the gain times the error along one unit direction
        moved = pbmc_treatment(adata.X[control], fraction + 0.1) - treated
        shift_norms = np.linalg.norm(moved, axis=1)
        assert np.allclose(shift_norms, shift_norms[0], rtol=1e-4) and shift_norms[0] > 0.1
        types = adata.obs["cell_type"].to_numpy()[control]
        estimate = pbmc_monocyte_estimate(types)
        assert estimate == pytest.approx(((types == "CD14+ Monocyte").sum() + 1) / (len(types) + 10))
        errors.append(abs(estimate - fraction))
    assert np.mean(errors) < 0.06  # 80 cells pin the fraction down to a few percent
    with pytest.raises(ConfigError, match="cell-type names"):
        pbmc_monocyte_estimate([])
    with pytest.raises(ConfigError, match="n_pcs"):
        pbmc_treatment(np.zeros((3, 60)), 0.1)


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    from flowzoo.biology.cells.populations import read_adata
    from flowzoo.core.errors import MissingDependencyError

    monkeypatch.setitem(__import__("sys").modules, "anndata", None)
    with pytest.raises(MissingDependencyError, match=r"flowzoo\[biology\]"):
        read_adata("screen.h5ad")
