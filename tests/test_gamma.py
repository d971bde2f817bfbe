"""The device's own ridge regularisation: closed-form leave-one-clip-out over a grid (runtime/gamma.py), its
automatic re-choice (AutoGamma) and exact refactorisation (recursive = joint ridge at the chosen gamma)."""

import numpy as np
import pytest

from edge_pace.runtime.analytic import AnalyticClassifier, joint_ridge
from edge_pace.runtime.gamma import GAMMA_GRID, AutoGamma, loo_curves, pick, select_gamma


def _data(n=120, d=40, k=4, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 2
    y = rng.integers(0, k, n)
    return np.maximum(centres[y] + spread * rng.standard_normal((n, d)), 0), y


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("n,d", [(30, 50), (90, 20)])  # both eigendecomposition paths (n <= D and n > D)
def test_loo_curves_equal_explicit_leave_one_clip_out(n, d):
    Z, y = _data(n, d, 3, seed=2)
    groups = np.repeat(np.arange(n), 1)
    groups[: 3 * (n // 6)] = np.repeat(np.arange(n // 6), 3)  # clips of 3 rows, then clips of 1 row
    for g in np.unique(groups):
        y[groups == g] = y[groups == g][0]
    y[-2:] = -1  # rows without class (background): all-zero targets
    grid = [0.01, 1.0, 100.0]
    mse, acc = loo_curves(Z, y, 3, groups, grid)
    Y = np.zeros((n, 3))
    Y[y >= 0, y[y >= 0]] = 1
    for i, gam in enumerate(grid):
        err, hit = [], []
        for g in np.unique(groups):
            m = groups == g
            W = np.linalg.solve(Z[~m].T @ Z[~m] + gam * np.eye(d), Z[~m].T @ Y[~m])
            err.append(Y[m] - Z[m] @ W)
            hit += list(np.argmax(Z[m] @ W, 1)[y[m] >= 0] == y[m][y[m] >= 0])
        assert abs(mse[i] - np.mean(np.sum(np.vstack(err) ** 2, 1))) < 1e-9 * max(1, mse[i])
        assert acc[i] == pytest.approx(np.mean(hit), abs=1e-12)


def test_select_gamma_rejects_over_and_under_regularisation():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 90)
    Z = np.hstack([np.eye(3)[y] + 0.5 * rng.standard_normal((90, 3)), rng.standard_normal((90, 60))])  # 3 useful dims
    for criterion in ("mse", "accuracy"):
        found = select_gamma(Z, [str(v) for v in y], criterion=criterion)
        scale = np.mean(np.sum(Z * Z, axis=1))
        assert found.source == "loo" and np.allclose(found.grid, np.array(GAMMA_GRID) * scale, rtol=1e-12)
        i = found.grid.index(found.gamma)
        if criterion == "mse":
            assert found.mse[i] <= min(found.mse) * 1.01 and all(m > min(found.mse) * 1.01 for m in found.mse[i + 1:])
            assert found.mse[i] < found.mse[0] and found.mse[i] < found.mse[-1]  # neither end of the grid
        else:
            assert found.accuracy[i] == max(found.accuracy) > found.accuracy[0]  # near-interpolation rejected
    with pytest.raises(ValueError, match="criterion"):
        select_gamma(Z, [str(v) for v in y], criterion="auc")


def test_too_few_clips_keep_the_prior_or_say_so():
    Z, y = _data(6, 8, 3)
    labels = ["a", "a", "b", "c", "d", "e"]  # only one class with two clips
    assert select_gamma(Z, labels, prior=123.0).gamma == 123.0
    assert select_gamma(Z, labels, prior=123.0).source == "prior"
    with pytest.raises(ValueError, match="two classes with 2 clips"):
        select_gamma(Z, labels)
    # three windows of one clip are one clip: still too few
    assert select_gamma(Z[:4], ["a", "a", "b", "b"], groups=[0, 0, 1, 1], prior=5.0).source == "prior"


def test_accuracy_ties_go_to_least_squared_error_then_larger_gamma():
    grid = [1.0, 10.0, 100.0, 1000.0]
    acc = np.array([0.5, 0.9, 0.9, 0.9])
    assert pick(grid, np.array([1.0, 0.4, 0.3, 0.5]), acc, "accuracy") == 100.0
    assert pick(grid, np.array([1.0, 0.3, 0.3, 0.5]), acc, "accuracy") == 100.0  # equal error: larger gamma
    assert pick(grid, np.array([1.0, 0.4, 0.3, 0.5]), acc, "mse") == 100.0
    assert pick(grid, np.array([0.3, 0.301, 0.302, 0.5]), acc, "mse") == 100.0  # within 1 %: more regularised


def test_choose_gamma_refactorises_exactly_and_learning_stays_joint_ridge():
    Z, y = _data(200, 30, 4, seed=3)
    labels = [f"c{v}" for v in y]
    clf = AnalyticClassifier(30, gamma=1e-6)
    rule = AutoGamma(prior=1e-6)
    for s in range(0, 200, 40):  # sessions: learn, then the automatic rule
        clf.learn(Z[s:s + 40], labels[s:s + 40])
        rule.update(clf)
    assert clf.gamma != 1e-6
    clf.learn(Z[:5] * 0.9, labels[:5])  # a recursive update after the last choice
    allZ = np.vstack([Z, Z[:5] * 0.9])
    ally = np.concatenate([y, y[:5]])
    order = [int(c[1:]) for c in clf.classes]
    J = joint_ridge(allZ, [order.index(v) for v in ally], 4, clf.gamma)
    assert _rel(clf.W, J) <= 1e-9
    assert _rel(clf.R, np.linalg.inv(allZ.T @ allZ + clf.gamma * np.eye(30))) <= 1e-9


def test_auto_gamma_is_due_on_class_changes_and_growth_and_never_when_pinned():
    rule = AutoGamma(prior=1.0, growth=0.25)
    assert rule.due(["a", "b"], 4)
    rule.chosen(["b", "a"], 4)
    assert not rule.due(["a", "b"], 5) and rule.due(["a", "b"], 6) and rule.due(["a", "b", "c"], 4)
    assert rule.due(["a", "b"], 3)  # shrunk (forget)
    rule.pinned = 10.0
    assert not rule.due(["a", "b", "c"], 100)
    back = AutoGamma.from_metadata(rule.metadata(), prior=2.0, gamma=10.0)
    assert back.pinned == 10.0 and back.prior == 1.0 and back.classes == ("a", "b") and back.clips == 4
    old = AutoGamma.from_metadata({}, prior=2.0, gamma=7.0)  # a state saved before the rule
    assert old.pinned is None and old.prior == 2.0 and old.due(["a"], 1)
    with pytest.raises(ValueError, match="prior"):
        AutoGamma(prior=0.0)
    with pytest.raises(ValueError, match="criterion"):
        AutoGamma(prior=1.0, criterion="f1")


def test_set_gamma_needs_stored_features():
    Z, y = _data(20, 6, 2)
    clf = AnalyticClassifier(6, 1.0, keep_features=False).learn(Z, [str(v) for v in y])
    with pytest.raises(ValueError, match="stored features"):
        clf.set_gamma(10.0)
    assert clf.gamma == 1.0


def test_background_rows_are_zero_targets_never_a_class_and_forget_exactly():
    from edge_pace.runtime.analytic import BACKGROUND
    from edge_pace.runtime.state import read_state, state_to_bytes

    Z, y = _data(150, 20, 3, seed=5)
    labels = [f"c{v}" for v in y]
    bg = np.abs(np.random.default_rng(9).standard_normal((30, 20)))
    clf = AnalyticClassifier(20, 2.0).learn(Z[:100], labels[:100]).learn(bg, BACKGROUND).learn(Z[100:], labels[100:])
    assert BACKGROUND not in clf.classes and sum(clf.counts) == 150
    assert BACKGROUND not in clf.predict(np.vstack([Z, bg]))
    order = [int(c[1:]) for c in clf.classes]
    # joint ridge with all-zero targets for the background rows
    allZ = np.vstack([Z, bg])
    Y = np.zeros((180, 3))
    Y[np.arange(150), [order.index(v) for v in y]] = 1.0
    J = np.linalg.solve(allZ.T @ allZ + 2.0 * np.eye(20), allZ.T @ Y)
    assert _rel(clf.W, J) <= 1e-9
    back, _ = read_state(state_to_bytes(clf))  # saved and loaded like any class
    assert _rel(back.W, clf.W) == 0 and np.array_equal(np.vstack(back.features[BACKGROUND]), bg)
    clf.set_gamma(3.0)  # refit keeps the background rows
    J3 = np.linalg.solve(allZ.T @ allZ + 3.0 * np.eye(20), allZ.T @ Y)
    assert _rel(clf.W, J3) <= 1e-9
    clf.forget(BACKGROUND)  # exact: equals never having learned it
    ref = AnalyticClassifier(20, 3.0).learn(Z, labels)
    assert BACKGROUND not in clf.features and _rel(clf.W, ref.W) <= 1e-9 and _rel(clf.R, ref.R) <= 1e-9
