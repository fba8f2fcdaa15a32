"""Preprocessing of layer representations: scale, sign fix, Procrustes alignment and inverse."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from kaepipe.represent import (
    fit_preprocessing,
    load_preprocessing,
    procrustes,
    reps_frame,
    save_preprocessing,
    sign_fixed_directions,
)


@pytest.fixture
def layers():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 10))
    mix = [rng.normal(size=(10, 10)) for _ in range(4)]
    return [np.maximum(base @ m, 0) + rng.normal(scale=0.01, size=(300, 10)) for m in mix]


def test_training_frobenius_norm_is_100(layers):
    ts = fit_preprocessing(layers, pca_dim=10, frobenius=100)
    for t, x in zip(ts, layers):
        np.testing.assert_allclose(np.linalg.norm(t.apply(x)), 100.0, rtol=1e-10)
        np.testing.assert_allclose(t.apply(x).mean(0), 0, atol=1e-9)


def test_alignment_is_orthogonal_and_last_is_identity(layers):
    ts = fit_preprocessing(layers, pca_dim=10)
    for t in ts:
        np.testing.assert_allclose(t.align @ t.align.T, np.eye(10), atol=1e-10)
    np.testing.assert_array_equal(ts[-1].align, np.eye(10))


def test_alignment_brings_layers_closer_to_the_last(layers):
    ts = fit_preprocessing(layers, pca_dim=10)
    anchor = ts[-1].apply(layers[-1])
    for t, x in zip(ts[:-1], layers[:-1]):
        aligned = t.apply(x)
        unaligned = aligned @ t.align.T
        assert np.linalg.norm(aligned - anchor) <= np.linalg.norm(unaligned - anchor) + 1e-9


def test_procrustes_recovers_a_rotation():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(100, 5))
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    np.testing.assert_allclose(procrustes(a, a @ q), q, atol=1e-10)


def test_inverse_maps_back_to_the_last_layer(layers):
    ts = fit_preprocessing(layers, pca_dim=10)
    x = layers[-1]
    np.testing.assert_allclose(ts[-1].invert(ts[-1].apply(x)), x, atol=1e-5)
    rng = np.random.default_rng(5)
    other = rng.normal(size=(20, 10))
    np.testing.assert_allclose(ts[-1].invert(ts[-1].apply(other)), other, atol=1e-5)


def test_sign_fix_makes_largest_entry_positive(layers):
    x = layers[0] - layers[0].mean(0)
    v = sign_fixed_directions(x, 4)
    assert v.shape == (4, 10)
    assert np.all(v[np.arange(4), np.abs(v).argmax(1)] > 0)
    np.testing.assert_array_equal(v, sign_fixed_directions(-x, 4))


def test_reduced_pca_dim(layers):
    ts = fit_preprocessing(layers, pca_dim=3)
    assert ts[0].apply(layers[0]).shape == (300, 3)


def test_save_load_roundtrip_in_reference_format(tmp_path, layers):
    from safetensors import safe_open

    ts = fit_preprocessing(layers, pca_dim=10)
    save_preprocessing(ts, tmp_path / "pre.safetensors")
    with safe_open(str(tmp_path / "pre.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("means_0").shape == (1, 10)
    assert {"means_0", "directions_0", "norm_0", "align_0", "means_3", "directions_3", "norm_3"} <= keys
    assert "align_3" not in keys
    loaded = load_preprocessing(tmp_path / "pre.safetensors")
    for i, t in enumerate(ts):
        np.testing.assert_allclose(loaded[i].apply(layers[i]), t.apply(layers[i]), atol=1e-12)


def test_reps_frame_long_format(layers):
    labels = np.arange(300) % 3
    df = reps_frame(layers[:2], labels)
    assert len(df) == 600
    assert list(df.columns[:3]) == ["sample", "label", "layer"]
    assert df.loc[df.layer == 1, "h0"].to_numpy().tolist() == pytest.approx(layers[1][:, 0].astype(np.float32).tolist())


def test_directions_fall_back_to_gesvd_when_gesdd_fails(monkeypatch):
    """LAPACK's gesdd can fail to converge (seen on a CNN layer with 245 of 784 dead channels); the directions
    then come from gesvd, the same subspace with the same sign convention."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)) @ rng.normal(size=(8, 8))
    x[:, 3] = 0.0  # a dead unit
    x -= x.mean(0)
    want = sign_fixed_directions(x, 4)

    def failing(*_a, **_k):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(np.linalg, "svd", failing)
    got = sign_fixed_directions(x, 4)
    np.testing.assert_allclose(got, want, atol=1e-10)
    _, _, vt = scipy.linalg.svd(x, lapack_driver="gesvd")  # oracle: |rows| are the top right singular vectors
    np.testing.assert_allclose(np.abs(got), np.abs(vt[:4]), atol=1e-10)
