"""The analytic classifier: recursive = joint ridge (weight invariance), class growth, forget, gamma search."""

import numpy as np
import pytest

from edge_pace.runtime.analytic import AnalyticClassifier, joint_ridge


def _data(n=240, d=48, k=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 2
    y = rng.integers(0, k, n)
    Z = np.maximum(centres[y] + rng.standard_normal((n, d)), 0)  # ReLU features, like the projection's
    return Z, y


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("splits", [[240], [1] * 240, [7, 33, 100, 100], [120, 1, 1, 118]])
def test_recursive_equals_joint_ridge_for_any_batching(splits):
    Z, y = _data()
    clf = AnalyticClassifier(Z.shape[1], gamma=0.5)
    s = 0
    for n in splits:
        clf.learn(Z[s : s + n], [f"c{v}" for v in y[s : s + n]])
        s += n
    order = [int(c[1:]) for c in clf.classes]
    J = joint_ridge(Z, [order.index(v) for v in y], 6, 0.5)
    assert _rel(clf.W, J) <= 1e-9
    assert _rel(clf.R, np.linalg.inv(Z.T @ Z + 0.5 * np.eye(Z.shape[1]))) <= 1e-9


def test_sessions_with_new_classes_equal_knowing_them_from_the_start():
    Z, y = _data(seed=1)
    labels = [f"c{v}" for v in y]
    sessions = [np.isin(y, [0, 1, 2]), np.isin(y, [3, 4]), y == 5]
    inc = AnalyticClassifier(Z.shape[1], gamma=2.0)
    for m in sessions:
        inc.learn(Z[m], [l for l, k in zip(labels, m) if k])
    full = AnalyticClassifier(Z.shape[1], gamma=2.0)
    order = np.concatenate([np.flatnonzero(m) for m in sessions])
    full.learn(Z[order], [labels[i] for i in order])
    assert inc.classes == full.classes
    assert _rel(inc.W, full.W) <= 1e-9
    assert inc.predict(Z) == full.predict(Z)


def test_forget_equals_never_learned():
    Z, y = _data(seed=2)
    labels = [f"c{v}" for v in y]
    clf = AnalyticClassifier(Z.shape[1], gamma=1.0)
    clf.learn(Z[:100], labels[:100]).learn(Z[100:], labels[100:])
    clf.forget("c3")
    keep = y != 3
    ref = AnalyticClassifier(Z.shape[1], gamma=1.0).learn(Z[keep], [l for l, k in zip(labels, keep) if k])
    assert clf.classes == ref.classes and clf.counts == ref.counts
    assert _rel(clf.W, ref.W) <= 1e-9 and _rel(clf.R, ref.R) <= 1e-9
    with pytest.raises(KeyError, match="unknown class"):
        clf.forget("c3")


def test_forget_needs_stored_features():
    Z, y = _data(seed=3)
    clf = AnalyticClassifier(Z.shape[1], keep_features=False).learn(Z, [str(v) for v in y])
    with pytest.raises(ValueError, match="without stored features"):
        clf.forget("1")


def test_refit_matches_recursive_state():
    Z, y = _data(seed=4)
    clf = AnalyticClassifier(Z.shape[1], gamma=0.1)
    for s in range(0, len(Z), 10):
        clf.learn(Z[s : s + 10], [str(v) for v in y[s : s + 10]])
    W, R = clf.W.copy(), clf.R.copy()
    clf.refit()
    assert _rel(clf.W, W) <= 1e-9 and _rel(clf.R, R) <= 1e-9


def test_float32_input_is_accepted_and_kept_as_float32():
    Z, y = _data(seed=5)
    clf = AnalyticClassifier(Z.shape[1]).learn(Z.astype(np.float32), [str(v) for v in y])
    assert all(f.dtype == np.float32 for fs in clf.features.values() for f in fs)
    assert clf.R.dtype == np.float64


def test_bad_input_and_state_errors_leave_state_unchanged():
    Z, y = _data(seed=6)
    clf = AnalyticClassifier(Z.shape[1]).learn(Z, [str(v) for v in y])
    W = clf.W.copy()
    bad = Z[:3].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        clf.learn(bad, ["0", "1", "2"])
    with pytest.raises(ValueError, match=r"shape \[n, 48\]"):
        clf.learn(Z[:3, :10], ["0", "1", "2"])
    with pytest.raises(ValueError, match="labels"):
        clf.learn(Z[:3], ["0"])
    with pytest.raises(TypeError, match="floating"):
        clf.learn(Z[:3].astype(int), ["0", "1", "2"])
    assert np.array_equal(clf.W, W)
    clf.W[0, 0] = np.inf
    with pytest.raises(FloatingPointError, match="reload the last saved state or call refit"):
        clf.learn(Z[:1], ["0"])
    with pytest.raises(ValueError, match="gamma"):
        AnalyticClassifier(4, gamma=0)
    with pytest.raises(RuntimeError, match="no class"):
        AnalyticClassifier(4).predict(np.ones((1, 4)))


def test_loo_scores_match_explicit_leave_one_out():
    Z, y = _data(n=40, d=12, k=3, seed=8)
    labels = [str(v) for v in y]
    clf = AnalyticClassifier(12, gamma=0.3).learn(Z, labels)
    loo = clf.loo_scores()
    c = clf.classes[0]
    first = [i for i, l in enumerate(labels) if l == c][0]
    keep = np.arange(len(Z)) != first
    other = AnalyticClassifier(12, gamma=0.3).learn(Z[keep], [l for l, k in zip(labels, keep) if k])
    explicit = float(Z[first] @ other.W[:, other.classes.index(c)])
    assert abs(loo[c][0] - explicit) < 1e-9
