"""Evaluation: per-class and macro accuracy, and the surrogate's two entry points (from first-layer
points, and from KAE outputs Y computed outside it) on a KAE whose phi and psi are the identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kaepipe.evaluate import Surrogate, accuracy_report, per_class_accuracy
from tests.conftest import identity_kae


def first_three(x: torch.Tensor) -> torch.Tensor:
    """A head whose logits are the first three coordinates of the predicted last layer."""
    return x[:, :3]


def test_identity_kae_is_the_identity():
    kae = identity_kae(4)
    x = torch.randn(50, 4)
    with torch.no_grad():
        torch.testing.assert_close(kae.encode(x), x)
        torch.testing.assert_close(kae.decode(x), x)
        torch.testing.assert_close(kae(x), x)  # K = I
    np.testing.assert_array_equal(kae.operator_matrix(), np.eye(4))


def test_output_logits_and_predictions_by_hand():
    s = Surrogate(identity_kae(4), first_three)
    Y = np.array([[1.0, 2.0, 0.0, 5.0], [3.0, -1.0, 2.0, 0.0], [-2.0, -3.0, -1.0, 9.0]])
    logits = s.output_logits(Y)  # head(psi(Y)) = Y[:, :3]
    assert logits.dtype == np.float64 and logits.shape == (3, 3)
    np.testing.assert_allclose(logits, Y[:, :3], rtol=1e-6)
    np.testing.assert_array_equal(s.predict_outputs(Y), [1, 0, 2])  # the 4th coordinate is not a class
    np.testing.assert_array_equal(s.predict_outputs(torch.as_tensor(Y)), [1, 0, 2])  # a tensor works as well


def test_output_logits_of_an_edited_operator_match_the_edited_model():
    """logits(x0) runs phi, O_k and psi inside the KAE; output_logits(Z O') takes the outputs of any
    operator O' computed outside. With phi = psi = identity both are (x0 O')[:, :3]."""
    kae = identity_kae(4)
    O_new = np.array([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.5, 0.0, 0.0, 1.0]])
    x0 = np.random.default_rng(0).normal(size=(37, 4))
    edited = Surrogate(kae.with_operator(O_new), first_three, batch_size=8)  # several batches
    outside = Surrogate(kae, first_three, batch_size=8)
    want = (x0 @ O_new)[:, :3]
    np.testing.assert_allclose(edited.logits(x0), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outside.output_logits(kae.observables(x0) @ O_new), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(outside.predict_outputs(x0 @ O_new), want.argmax(1))
    np.testing.assert_array_equal(edited.predict(x0), want.argmax(1))
    # the batch size does not change the numbers
    np.testing.assert_array_equal(Surrogate(kae, first_three, batch_size=4096).output_logits(x0 @ O_new),
                                  outside.output_logits(x0 @ O_new))


def test_per_class_and_macro_accuracy_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 2, 2, 0, 1])
    np.testing.assert_allclose(per_class_accuracy(pred, labels, 4), [75.0, 50.0, 50.0, np.nan])
    report = accuracy_report(pred, labels, 4)
    assert report["per_class"] == [75.0, 50.0, 50.0, None]  # class 3 absent: not counted
    assert report["macro"] == pytest.approx(175 / 3, abs=1e-6)  # mean over the classes present
    assert report["accuracy"] == 60.0 and report["n"] == 10
    with pytest.raises(ValueError, match="shape"):
        per_class_accuracy(pred[:5], labels, 3)
