"""Tests of kaepipe.topology: beta_0 against gudhi's Rips persistence, diagrams, curves and distances."""

from __future__ import annotations

import gudhi
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import connected_components
from scipy.sparse.csgraph import minimum_spanning_tree as scipy_mst
from scipy.spatial.distance import cdist, pdist

from kaepipe import topology as T

# ----------------------------------------------------------------------------------------------
# references


def gudhi_h0(X: np.ndarray) -> np.ndarray:
    """H0 bars (birth, death) of gudhi's full Vietoris-Rips filtration."""
    tree = gudhi.RipsComplex(points=X).create_simplex_tree(max_dimension=1)
    # persistence_dim_max: a single point is a 0-dimensional complex, whose H0 gudhi omits otherwise
    tree.compute_persistence(min_persistence=-1.0, persistence_dim_max=True)
    return np.asarray(tree.persistence_intervals_in_dimension(0)).reshape(-1, 2)


def gudhi_betti0(bars: np.ndarray, eps: float) -> int:
    """Number of H0 bars alive at eps: birth <= eps < death (infinite deaths count)."""
    return int(np.sum((bars[:, 0] <= eps) & (bars[:, 1] > eps)))


def brute_betti0(X: np.ndarray, eps: float) -> int:
    """Components of the graph joining points at distance <= eps, from the full distance matrix."""
    adjacency = (cdist(X, X) <= eps).astype(np.int8)
    return int(connected_components(adjacency, directed=False)[0])


def safe_eps_values(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scales at least 1e-6 (relative) away from every pairwise distance: midpoints and random values."""
    d = np.unique(pdist(X)) if len(X) > 1 else np.array([0.0])
    d = d[d > 0]
    if d.size == 0:
        return np.array([0.5, 1.0])
    mids = (d[:-1] + d[1:]) / 2
    mids = mids[np.diff(d) > 1e-6 * d[1:]]
    picks = rng.choice(mids, size=min(8, mids.size), replace=False) if mids.size else np.empty(0)
    extra = np.array([d[0] / 2, d[-1] * 1.5])
    rand = rng.uniform(0, d[-1] * 1.2, size=8)
    rand = rand[(rand > 0) & (np.min(np.abs(rand[:, None] - d[None, :]), axis=1) > 1e-6 * d[-1])]
    return np.concatenate([picks, extra, rand])


def cloud(rng: np.random.Generator, n: int, d: int, dup: int, kind: str) -> np.ndarray:
    """A random cloud: gaussian, clustered or anisotropic, with `dup` duplicated points appended."""
    if kind == "gauss":
        X = rng.standard_normal((n, d))
    elif kind == "clusters":
        centres = rng.standard_normal((3, d)) * 10
        X = centres[rng.integers(0, 3, n)] + rng.standard_normal((n, d))
    else:
        X = rng.standard_normal((n, d)) * np.logspace(0, 3, d) + 1e3
    if dup:
        X = np.vstack([X, X[rng.integers(0, n, dup)]])
    return X


# ----------------------------------------------------------------------------------------------
# beta_0 (Euclidean) equals gudhi


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 45),
    d=st.integers(1, 8),
    dup=st.integers(0, 5),
    kind=st.sampled_from(["gauss", "clusters", "aniso"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_betti0_equals_gudhi_h0_random_clouds(n: int, d: int, dup: int, kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = cloud(rng, n, d, dup, kind)
    bars = gudhi_h0(X)
    lengths = T.mst_edge_lengths(X)
    assert lengths.shape == (len(X) - 1,)
    assert np.all(np.diff(lengths) >= 0)
    # H0 deaths of gudhi are the MST lengths (as a multiset)
    finite = np.sort(bars[np.isfinite(bars[:, 1]), 1])
    np.testing.assert_allclose(finite, lengths[-finite.size :] if finite.size else finite, rtol=1e-9, atol=1e-12)
    eps_values = safe_eps_values(X, rng)
    expected = np.array([gudhi_betti0(bars, e) for e in eps_values])
    np.testing.assert_array_equal(T.betti0_curve(X, eps_values), expected)
    for e, want in zip(eps_values[:3], expected[:3]):
        assert T.betti0(X, e) == want


def test_betti0_equals_gudhi_seeded_loop_larger_clouds() -> None:
    rng = np.random.default_rng(7)
    for n, d in [(120, 2), (150, 17), (200, 64), (90, 300)]:
        X = cloud(rng, n, d, dup=3, kind="clusters")
        bars = gudhi_h0(X)
        eps_values = safe_eps_values(X, rng)
        expected = [gudhi_betti0(bars, e) for e in eps_values]
        np.testing.assert_array_equal(T.betti0_curve(X, eps_values), expected)


@settings(max_examples=40, deadline=None, database=None)
@given(
    n=st.integers(2, 40),
    d=st.integers(1, 4),
    span=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_betti0_exact_ties_on_integer_grid(n: int, d: int, span: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = rng.integers(-span, span + 1, size=(n, d)).astype(np.float64)  # many duplicates and ties
    bars = gudhi_h0(X)
    # eps exactly equal to realised distances: an edge of length eps joins
    for eps in np.unique(pdist(X)):
        if eps == 0:
            continue
        want = brute_betti0(X, eps)
        assert gudhi_betti0(bars, eps) == want
        assert T.betti0(X, eps) == want


def test_mst_matches_scipy_total_weight_and_fallback_path() -> None:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 12))
    edges, lengths = T.minimum_spanning_tree(X)
    assert edges.shape == (299, 2)
    total = scipy_mst(cdist(X, X)).sum()
    assert lengths.sum() == pytest.approx(total, rel=1e-12)
    # the edges form a spanning tree
    adj = np.zeros((300, 300), np.int8)
    adj[edges[:, 0], edges[:, 1]] = 1
    assert connected_components(adj, directed=False)[0] == 1
    # the O(n d)-memory path gives the same lengths
    np.testing.assert_allclose(T.mst_edge_lengths(X, max_dense_bytes=0), np.sort(lengths), rtol=1e-12)


def test_betti0_two_far_clusters() -> None:
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 0.1, (50, 5)), rng.normal(100, 0.1, (50, 5))])
    assert T.betti0(X, 5.0) == 2
    assert T.betti0(X, 1000.0) == 1
    assert T.betti0(X, 1e-9) == 100
    assert T.betti0(X, np.inf) == 1


def test_betti0_single_point_and_translation_invariance() -> None:
    assert T.betti0(np.zeros((1, 3)), 1.0) == 1
    assert T.mst_edge_lengths(np.zeros((1, 3))).size == 0
    rng = np.random.default_rng(1)
    X = rng.standard_normal((80, 6))
    eps = np.array([0.5, 1.0, 1.5, 2.0])
    np.testing.assert_array_equal(T.betti0_curve(X, eps), T.betti0_curve(X + 1e4, eps))


def test_betti0_from_lengths_tie_semantics() -> None:
    lengths = np.array([0.0, 1.0, 2.0, 2.0, 3.0])  # n = 6
    assert T.betti0_from_lengths(lengths, 2.0) == 6 - 4
    assert T.betti0_from_lengths(lengths, np.nextafter(2.0, 0)) == 6 - 2
    assert T.betti0_from_lengths(lengths, 0.5) == 5
    np.testing.assert_array_equal(T.betti0_curve_from_lengths(lengths, [0.5, 1.0, 3.0, 9.0]), [5, 4, 1, 1])
    with pytest.raises(ValueError, match="sorted"):
        T.betti0_from_lengths([2.0, 1.0], 1.0)


# ----------------------------------------------------------------------------------------------
# beta_0 on the kNN hop metric


def test_knn_geodesic_two_separated_clusters() -> None:
    rng = np.random.default_rng(5)
    X = np.vstack([rng.normal(0, 1, (60, 3)), rng.normal(50, 1, (40, 3))])
    assert T.betti0(X, 1, metric="knn_geodesic", k=5) == 2
    assert T.betti0(X, 3.5, metric="knn_geodesic", k=5) == 2  # any eps >= 1 hop: kNN components
    assert T.betti0(X, 0.5, metric="knn_geodesic", k=5) == 100  # below one hop nothing is joined
    count, labels = T.knn_components(X, 5)
    assert count == 2 and len(set(labels[:60])) == 1 and len(set(labels[60:])) == 1
    assert labels[0] != labels[60]
    np.testing.assert_array_equal(T.betti0_curve(X, [0.5, 1, 2], metric="knn_geodesic", k=5), [100, 2, 2])


def test_knn_graph_symmetric_and_matches_brute_force() -> None:
    rng = np.random.default_rng(11)
    X = rng.standard_normal((70, 4))
    k = 3
    G = T.knn_graph(X, k, block_size=16)
    assert (G != G.T).nnz == 0
    assert G.diagonal().sum() == 0
    D = cdist(X, X)
    np.fill_diagonal(D, np.inf)
    nn = np.argsort(D, axis=1)[:, :k]
    A = np.zeros((70, 70), bool)
    A[np.repeat(np.arange(70), k), nn.ravel()] = True
    np.testing.assert_array_equal(G.toarray().astype(bool), A | A.T)
    assert (G.toarray().astype(bool) == T.knn_graph(X, k, max_dense_bytes=0).toarray().astype(bool)).all()


def test_knn_many_isolated_pairs() -> None:
    # 10 pairs far apart: with k = 1 each pair is one component
    X = np.repeat(np.arange(10.0)[:, None] * 100, 2, axis=0) + np.tile([[0.0], [1.0]], (10, 1))
    assert T.betti0(X, 1, metric="knn_geodesic", k=1) == 10


# ----------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: T.betti0(np.zeros(5), 1.0), "2-D"),
        (lambda: T.betti0(np.zeros((0, 3)), 1.0), "at least one"),
        (lambda: T.betti0(np.array([[0.0, np.nan]]), 1.0), "NaN"),
        (lambda: T.betti0(np.zeros((3, 2)), 0.0), "eps"),
        (lambda: T.betti0(np.zeros((3, 2)), -1.0), "eps"),
        (lambda: T.betti0(np.zeros((3, 2)), float("nan")), "eps"),
        (lambda: T.betti0(np.zeros((3, 2)), 1.0, metric="cosine"), "metric"),
        (lambda: T.betti0(np.zeros((3, 2)), 1.0, metric="knn_geodesic", k=0), "k must be"),
        (lambda: T.betti0(np.zeros((3, 2)), 1.0, metric="knn_geodesic", k=3), "at least"),
        (lambda: T.betti0_curve(np.zeros((3, 2)), [[1.0]]), "1-D"),
        (lambda: T.distance_distortion(np.zeros((3, 2)), np.zeros((4, 2))), "same number"),
        (lambda: T.persistence_diagrams(np.zeros((3, 2)), max_dim=-1), "max_dim"),
        (lambda: T.betti_curves(pd.DataFrame({"dim": [0]}), [1.0]), "columns"),
    ],
)
def test_invalid_inputs_raise_value_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------------------------
# persistence diagrams and Betti curves


def circle(n: int, radius: float = 1.0, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    X = radius * np.column_stack([np.cos(angles), np.sin(angles)])
    return X + noise * rng.standard_normal(X.shape)


def test_persistence_diagram_format_and_circle_beta1() -> None:
    X = circle(60, noise=0.01)
    dg = T.persistence_diagrams(X)
    assert list(dg.columns) == ["dim", "birth", "death"]
    assert dg["dim"].dtype == np.int64 and dg["birth"].dtype == np.float64
    assert set(dg["dim"]) == {0, 1}
    assert dg.attrs["exact"] is True
    h1 = dg[dg["dim"] == 1]
    assert np.isfinite(h1["death"]).all()  # exact diagram: no truncated H1 classes
    big = h1[(h1["death"] - h1["birth"]) > 1.0]
    assert len(big) == 1  # the circle
    curves = T.betti_curves(dg, np.linspace(0.2, 1.6, 50))
    assert (curves["beta_1"] == 1).all()
    assert (curves["beta_0"] == 1).all()


def test_persistence_matches_plain_gudhi_without_collapse() -> None:
    rng = np.random.default_rng(2)
    X = np.vstack([circle(40, 1.0, 0.05, 1), circle(30, 0.5, 0.05, 2) + 3, rng.standard_normal((20, 2))])
    for threshold, dims in [(np.inf, (0, 1)), (0.6, (1,))]:  # H0 is exact (MST), H1 truncated at 0.6
        dg = T.persistence_diagrams(X, max_edge_length=threshold)
        assert dg.attrs["exact"] is bool(np.isinf(threshold))
        tree = gudhi.RipsComplex(points=X, max_edge_length=threshold).create_simplex_tree(max_dimension=2)
        tree.compute_persistence(persistence_dim_max=True)
        for dim in dims:
            want = np.asarray(tree.persistence_intervals_in_dimension(dim)).reshape(-1, 2)
            want = want[want[:, 1] > want[:, 0]]
            got = dg.loc[dg["dim"] == dim, ["birth", "death"]].to_numpy()
            assert len(got) > 0
            order_w = np.lexsort((want[:, 1], want[:, 0]))
            order_g = np.lexsort((got[:, 1], got[:, 0]))
            np.testing.assert_allclose(got[order_g], want[order_w], rtol=1e-9)


def test_persistence_truncated_threshold_and_default_threshold() -> None:
    X = circle(60, noise=0.01)
    dg = T.persistence_diagrams(X, max_edge_length=0.5)  # below the circle's death (~1.7)
    assert dg.attrs["exact"] is False and dg.attrs["max_edge_length"] == 0.5
    h1 = dg[dg["dim"] == 1]
    assert np.isinf(h1["death"]).sum() == 1
    # H0 stays exact at any threshold
    np.testing.assert_array_equal(dg[dg["dim"] == 0].to_numpy(), T.h0_diagram(X).to_numpy())
    # the default threshold respects the edge budget
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((200, 3))
    thr = T.default_max_edge_length(Y, max_edges=1000)
    assert np.sum(pdist(Y) <= thr) == 1000
    assert T.default_max_edge_length(Y, max_edges=10**6) == pytest.approx(T.enclosing_radius(Y))
    dg_y = T.persistence_diagrams(Y, max_edges=1000)
    assert dg_y.attrs["max_edge_length"] == pytest.approx(thr)


def test_betti0_curve_of_diagram_matches_mst_and_is_monotone() -> None:
    rng = np.random.default_rng(4)
    X = cloud(rng, 150, 5, dup=4, kind="clusters")
    dg = T.persistence_diagrams(X, max_dim=0)
    assert set(dg["dim"]) == {0}
    t = T.filtration_grid(dg)
    assert t.shape == (200,) and t[0] == 0 and t[-1] == dg["death"][np.isfinite(dg["death"])].max()
    curves = T.betti_curves(dg)
    np.testing.assert_array_equal(curves["t"], t)
    b0 = curves["beta_0"].to_numpy()
    assert np.all(np.diff(b0) <= 0)
    assert b0[-1] == 1
    np.testing.assert_array_equal(b0[1:], T.betti0_curve(X, t[1:]))
    assert b0[0] == len(np.unique(X, axis=0))  # at t = 0 duplicates are already one point


def test_filtration_grid_uses_all_diagrams() -> None:
    a = pd.DataFrame({"dim": [0, 0], "birth": [0.0, 0.0], "death": [1.0, np.inf]})
    b = pd.DataFrame({"dim": [0, 1], "birth": [0.0, 0.5], "death": [np.inf, 3.0]})
    grid = T.filtration_grid(a, b, n=7)
    np.testing.assert_allclose(grid, np.linspace(0, 3.0, 7))
    curves = T.betti_curves(b, grid, dims=[0, 1, 2])
    np.testing.assert_array_equal(curves["beta_1"], [0, 1, 1, 1, 1, 1, 0])  # birth <= t < death
    np.testing.assert_array_equal(curves["beta_2"], np.zeros(7))


# ----------------------------------------------------------------------------------------------
# diagram distances


def test_bottleneck_self_zero_and_perturbation_bounded() -> None:
    X = circle(50, noise=0.02, seed=3)
    rng = np.random.default_rng(9)
    delta = 0.05
    Y = X + rng.uniform(-1, 1, X.shape) * delta / np.sqrt(2)  # each point moves by <= delta
    da, db = T.persistence_diagrams(X), T.persistence_diagrams(Y)
    for dim in (0, 1):
        assert T.bottleneck(da, da, dim) == pytest.approx(0.0, abs=1e-300)
        assert T.bottleneck(da, da, dim, e=0.0) == 0.0
        dist = T.bottleneck(da, db, dim)
        assert 0.0 < dist <= 2 * delta + 1e-12  # Rips stability: distances move by <= 2 delta
    assert T.bottleneck(da, db, 0, essential="match") == T.bottleneck(da, db, 0)
    one_less = da.iloc[1:] if np.isinf(da["death"].iloc[0]) else da[~np.isinf(da["death"])]
    assert T.bottleneck(da, one_less, 0, essential="match") == np.inf


def test_wasserstein_self_zero_and_dominates_bottleneck() -> None:
    X = circle(50, noise=0.02, seed=3)
    Y = circle(50, noise=0.05, seed=4)
    da, db = T.persistence_diagrams(X), T.persistence_diagrams(Y)
    for dim in (0, 1):
        assert T.wasserstein(da, da, dim) == pytest.approx(0.0, abs=1e-12)
        w1 = T.wasserstein(da, db, dim, order=1)
        assert w1 > 0
        assert w1 >= T.bottleneck(da, db, dim) - 1e-9
        assert T.wasserstein(da, db, dim, order=2) <= w1 + 1e-9


# ----------------------------------------------------------------------------------------------
# distance distortion


def test_distance_distortion_isometry_scaling_and_blocks() -> None:
    rng = np.random.default_rng(6)
    X = rng.standard_normal((300, 10)) * 3 + 5
    Q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    assert T.distance_distortion(X, X @ Q + 7.0) < 1e-7
    assert T.distance_distortion(X, np.hstack([X, np.zeros((300, 5))])) < 1e-7  # isometric embedding
    assert T.distance_distortion(X, 2.0 * X) == pytest.approx(1.0, rel=1e-7)
    Y = X + 0.1 * rng.standard_normal(X.shape)
    exact = np.linalg.norm(cdist(X, X) - cdist(Y, Y)) / np.linalg.norm(cdist(X, X))
    assert T.distance_distortion(X, Y, block_size=7) == pytest.approx(exact, rel=1e-6)
    assert T.distance_distortion(X, Y) == pytest.approx(exact, rel=1e-6)
    with pytest.raises(ValueError, match="coincide"):
        T.distance_distortion(np.ones((4, 2)), X[:4])


# ----------------------------------------------------------------------------------------------
# the dense (BLAS) Rips path, truncation, beta_0 step tables, fast Wasserstein


def test_dense_rips_path_equals_gudhi_points_path() -> None:
    rng = np.random.default_rng(12)
    X = np.vstack([circle(50, 1.0, 0.05, 3), rng.standard_normal((40, 2)) * 0.5 + 2.5])
    X = np.hstack([X, 0.01 * rng.standard_normal((90, 30))])  # a little high-dimensional noise
    for kwargs in ({"max_edges": 1500}, {"max_edge_length": 0.7}, {}):
        fast = T.persistence_diagrams(X, **kwargs)
        slow = T.persistence_diagrams(X, max_dense_bytes=0, **kwargs)  # gudhi.RipsComplex(points=X)
        assert fast.attrs["max_edge_length"] == pytest.approx(slow.attrs["max_edge_length"], rel=1e-12)
        assert fast.attrs["exact"] == slow.attrs["exact"] and fast.attrs["n_edges"] == slow.attrs["n_edges"]
        np.testing.assert_array_equal(fast["dim"].to_numpy(), slow["dim"].to_numpy())
        np.testing.assert_allclose(fast[["birth", "death"]].to_numpy(), slow[["birth", "death"]].to_numpy(), rtol=1e-9)


def test_truncate_diagram_equals_persistence_at_smaller_threshold() -> None:
    X = np.vstack([circle(40, 1.0, 0.05, 1), circle(30, 0.4, 0.03, 2) + 3.0])
    full = T.persistence_diagrams(X, max_edge_length=1.5)
    for thr in (0.3, 0.6, 1.0):
        cut = T.truncate_diagram(full, thr)
        want = T.persistence_diagrams(X, max_edge_length=thr)
        assert cut.attrs["max_edge_length"] == thr and cut.attrs["exact"] is False
        np.testing.assert_array_equal(cut["dim"].to_numpy(), want["dim"].to_numpy())
        np.testing.assert_allclose(cut[["birth", "death"]].to_numpy(), want[["birth", "death"]].to_numpy(), rtol=1e-9)
    with pytest.raises(ValueError, match="eps"):
        T.truncate_diagram(full, 0.0)


def test_betti0_steps_is_the_exact_curve() -> None:
    rng = np.random.default_rng(8)
    X = np.vstack([rng.standard_normal((60, 4)), np.zeros((3, 4))])  # three duplicates of one point
    X[-3:] = X[0]
    lengths = T.mst_edge_lengths(X)
    steps = T.betti0_steps(lengths)
    assert list(steps.columns) == ["eps", "betti0"]
    assert steps["eps"].iloc[0] == 0.0 and steps["betti0"].iloc[0] == 60  # duplicates count once at eps = 0
    assert steps["betti0"].iloc[-1] == 1 and np.all(np.diff(steps["betti0"]) < 0) and np.all(np.diff(steps["eps"]) > 0)
    probes = rng.uniform(1e-3, lengths.max() * 1.1, 50)
    looked_up = steps["betti0"].to_numpy()[np.searchsorted(steps["eps"].to_numpy(), probes, side="right") - 1]
    np.testing.assert_array_equal(looked_up, T.betti0_curve(X, probes))
    with pytest.raises(ValueError, match="points"):
        T.betti0_steps(lengths, n=5)


def test_wasserstein_line_and_hera_match_pot() -> None:
    rng = np.random.default_rng(10)
    for _ in range(25):
        m, n = rng.integers(0, 25, 2)
        a = pd.DataFrame({"dim": 0, "birth": 0.0, "death": rng.random(m) * rng.choice([0.5, 2.0])})
        b = pd.DataFrame({"dim": 0, "birth": 0.0, "death": rng.random(n)})
        for order in (1, 2):
            for internal_p in (np.inf, 2.0, 1.0):
                pot = T.wasserstein(a, b, 0, order=order, internal_p=internal_p, method="pot")
                line = T.wasserstein(a, b, 0, order=order, internal_p=internal_p, method="line")
                assert line == pytest.approx(pot, rel=1e-9, abs=1e-12)
    X, Y = circle(50, noise=0.05, seed=1), circle(45, noise=0.08, seed=2)
    da, db = T.persistence_diagrams(X), T.persistence_diagrams(Y)
    assert T.wasserstein(da, db, 1) == pytest.approx(T.wasserstein(da, db, 1, method="pot"), rel=1e-6)
    assert T.wasserstein(da, db, 0) == pytest.approx(T.wasserstein(da, db, 0, method="pot"), rel=1e-9)
    with pytest.raises(ValueError, match="share one birth"):
        T.wasserstein(da, db, 1, method="line")


def test_betti0_mst_float32_is_exact_at_eps() -> None:
    rng = np.random.default_rng(21)
    for _ in range(150):  # integer grids: many ties, eps exactly at realised distances
        X = rng.integers(-2, 3, size=(int(rng.integers(3, 40)), int(rng.integers(1, 5)))).astype(np.float64)
        eps = np.unique(pdist(X))
        eps = eps[eps > 0]
        if eps.size:
            _, got = T.betti0_mst(X, eps, precision="float32")
            np.testing.assert_array_equal(got, T.betti0_curve(X, eps))
    for _ in range(10):  # eps a hair above and below exact MST edge lengths, larger offsets and scales
        X = rng.standard_normal((250, 60)) * rng.uniform(0.1, 10) + rng.uniform(-50, 50)
        exact = T.mst_edge_lengths(X)
        eps = np.concatenate([exact[::9], exact[::7] * (1 + 1e-12), exact[::5] * (1 - 1e-12)])
        lengths, got = T.betti0_mst(X, eps, precision="float32")
        np.testing.assert_array_equal(got, T.betti0_curve_from_lengths(exact, eps))
        np.testing.assert_allclose(lengths, exact, rtol=1e-4)  # the tree is minimal up to float32 rounding
    lengths, got = T.betti0_mst(X, [1.0], precision="float64")
    np.testing.assert_array_equal(lengths, T.mst_edge_lengths(X))
    with pytest.raises(ValueError, match="precision"):
        T.betti0_mst(X, [1.0], precision="float16")
