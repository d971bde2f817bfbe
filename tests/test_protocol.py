"""Class-incremental protocol (sessions) and metrics on hand-made cases with known values."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from edge_pace.data.loaders import Clip, load_dataset
from edge_pace.evaluation.metrics import (
    accuracy_matrix,
    cil_metrics,
    metrics_markdown,
    plot_curve,
    save_metrics_json,
)
from edge_pace.evaluation.protocol import (
    BENCHMARK_PROTOCOLS,
    check_sessions,
    class_order,
    make_sessions,
    protocol_for,
    session_sizes,
)

try:
    import fixtures_data as fx
except ImportError:  # tests/ imported as a package
    from tests import fixtures_data as fx


def synthetic_clips(n_classes: int, n_train: int = 3, n_test: int = 2) -> list[Clip]:
    clips = []
    for c in range(n_classes):
        for i in range(n_train):
            clips.append(Clip(f"/data/c{c:03d}/train_{i}.wav", f"c{c:03d}", "train", f"g{i}"))
        for i in range(n_test):
            clips.append(Clip(f"/data/c{c:03d}/test_{i}.wav", f"c{c:03d}", "test", f"g{i}"))
    return clips


# --- sessions ----------------------------------------------------------------------------------------

def test_sessions_partition_classes_and_never_train_on_test(tmp_path):
    clips = load_dataset("esc50", fx.make_esc50(tmp_path / "esc", per_fold=2))
    sessions = make_sessions(clips, base_fraction=0.5, inc=1, seed=3)
    check_sessions(sessions)
    all_classes = [c for s in sessions for c in s.classes]
    assert sorted(all_classes) == sorted(fx.ESC_CLASSES) and len(set(all_classes)) == len(all_classes)
    test_paths = {c.path for c in clips if c.split == "test"}
    for s in sessions:
        assert not {c.path for c in s.train} & test_paths
        assert {c.label for c in s.train} == set(s.classes)
        assert s.seen == all_classes[:len(s.seen)]
        # the test set is exactly every test clip of the classes seen so far
        assert sorted(c.path for c in s.test) == sorted(c.path for c in clips
                                                        if c.split == "test" and c.label in s.seen)
    assert [len(s.classes) for s in sessions] == [2, 1, 1]
    # every train clip is used exactly once over the run
    assert sorted(c.path for s in sessions for c in s.train) == sorted(c.path for c in clips if c.split == "train")


def test_seeded_order_is_deterministic_and_differs_across_seeds():
    labels = [f"c{i:02d}" for i in range(50)]
    orders = [tuple(class_order(labels, seed)) for seed in range(5)]
    assert orders[0] == tuple(class_order(list(reversed(labels)), 0))  # input order does not matter
    assert len(set(orders)) == 5
    assert all(sorted(o) == labels for o in orders)
    clips = synthetic_clips(50)
    a, b = make_sessions(clips, seed=7), make_sessions(clips, seed=7)
    assert [s.classes for s in a] == [s.classes for s in b]
    assert [s.classes for s in make_sessions(clips, seed=8)] != [s.classes for s in a]


@pytest.mark.parametrize("kind,n_classes,sizes", [
    ("esc50", 50, [25, 5, 5, 5, 5, 5]),
    ("us8k", 10, [5, 1, 1, 1, 1, 1]),
    ("sc2", 35, [18, 4, 4, 3, 3, 3]),
    ("timit2", 630, [315] + [2] * 157 + [1]),
    ("timit3", 630, [315] + [3] * 105),
    ("vocalset", 20, [10, 2, 2, 2, 2, 2]),
    ("vocalset_technique", 10, [6, 2, 2]),
    ("synth", 42, [21, 5, 4, 4, 4, 4]),
    ("folder", 8, [4, 1, 1, 1, 1]),
])
def test_benchmark_protocols_session_zero_is_larger(kind, n_classes, sizes):
    got = session_sizes(n_classes, **protocol_for(kind))
    assert got == sizes and sum(got) == n_classes
    assert got[0] > max(got[1:])


def test_session_size_rules_and_errors():
    assert session_sizes(10) == [5, 1, 1, 1, 1, 1]  # default: 5 incremental sessions
    assert session_sizes(4) == [2, 1, 1]  # fewer classes than default sessions
    assert session_sizes(50, inc=5, n_sessions=5) == [30, 5, 5, 5, 5]  # B30-Inc5, base derived
    assert session_sizes(50, n_base=40, inc=5) == [40, 5, 5]
    assert session_sizes(10, n_base=5, inc=2, n_sessions=4) == [5, 2, 2, 1]  # last takes the remainder
    assert session_sizes(7, n_sessions=1) == [7]
    assert session_sizes(11, base_fraction=0.5) == [6, 1, 1, 1, 1, 1]  # floor(5.5 + 0.5) = 6
    with pytest.raises(ValueError, match="base_fraction"):
        session_sizes(10, base_fraction=1.0, inc=1)
    with pytest.raises(ValueError, match="needs more than"):
        session_sizes(10, inc=5, n_sessions=4)
    with pytest.raises(ValueError, match="cannot make"):
        session_sizes(4, n_sessions=6)
    with pytest.raises(ValueError, match="do not make"):
        session_sizes(10, n_base=5, inc=2, n_sessions=3)
    with pytest.raises(ValueError, match="n_base"):
        session_sizes(10, n_base=10)
    with pytest.raises(ValueError, match="no default protocol"):
        protocol_for("imagenet")
    assert set(BENCHMARK_PROTOCOLS) >= {"esc50", "us8k", "sc2", "timit2", "timit3", "vocalset", "folder", "synth"}


def test_leak_and_bad_split_are_refused():
    clips = synthetic_clips(4)
    leaked = clips + [Clip(clips[0].path, clips[0].label, "test")]
    with pytest.raises(ValueError, match="both train and test"):
        make_sessions(leaked)
    with pytest.raises(ValueError, match="'train' or 'test'"):
        make_sessions(clips + [Clip("/x.wav", "c000", "val")])


def test_explicit_order_and_check_sessions_catches_tampering():
    clips = synthetic_clips(6)
    order = ["c005", "c004", "c003", "c002", "c001", "c000"]
    sessions = make_sessions(clips, order=order, inc=1, n_base=3)
    assert [s.classes for s in sessions] == [order[:3], ["c002"], ["c001"], ["c000"]]
    check_sessions(sessions)
    sessions[1].train.append(sessions[0].test[0])
    with pytest.raises(ValueError, match="does not belong"):
        check_sessions(sessions)
    with pytest.raises(ValueError, match="exactly once"):
        make_sessions(clips, order=order[:5])


# --- metrics -----------------------------------------------------------------------------------------

NAN = float("nan")
HAND_A = [0.9, 0.8, 0.7]
HAND_MATRIX = [[0.9, NAN, NAN], [0.8, 0.85, NAN], [0.6, 0.7, 0.9]]


def test_cil_metrics_hand_made_values():
    m = cil_metrics(HAND_A, HAND_MATRIX)
    assert m.average_incremental_accuracy == pytest.approx(0.8, abs=1e-12)
    assert m.last_accuracy == 0.7
    # f_0 = max(0.9, 0.8) - 0.6 = 0.3; f_1 = 0.85 - 0.7 = 0.15; mean 0.225
    assert m.per_task_forgetting == pytest.approx([0.3, 0.15], abs=1e-12)
    assert m.forgetting == pytest.approx(0.225, abs=1e-12)
    one = cil_metrics([0.5], [[0.5]])
    assert one.forgetting == 0.0 and one.average_incremental_accuracy == 0.5
    # backward transfer gives negative forgetting, kept as is
    assert cil_metrics([0.5, 0.9], [[0.5, NAN], [0.9, 0.9]]).forgetting == pytest.approx(-0.4)
    assert math.isnan(cil_metrics([0.5, 0.6]).forgetting)  # needs the matrix


def test_cil_metrics_input_errors():
    with pytest.raises(ValueError, match="fractions"):
        cil_metrics([90.0, 80.0])
    with pytest.raises(ValueError, match="2x2"):
        cil_metrics([0.9, 0.8], [[0.9]])
    with pytest.raises(ValueError, match="non-empty"):
        cil_metrics([])


def test_accuracy_matrix_from_predictions():
    classes = [["a", "b"], ["c"], ["d"]]
    y_true = [["a", "a", "b", "b"],
              ["a", "a", "b", "b", "c", "c"],
              ["a", "a", "b", "b", "c", "c", "d", "d"]]
    y_pred = [["a", "a", "b", "a"],                       # 3/4
              ["a", "c", "b", "b", "c", "c"],             # task0 3/4, task1 2/2 -> 5/6
              ["c", "c", "b", "b", "c", "d", "d", "d"]]   # task0 2/4, task1 1/2, task2 2/2 -> 5/8
    acc, mat = accuracy_matrix(y_true, y_pred, classes)
    assert acc == [3 / 4, 5 / 6, 5 / 8]
    expected = np.array([[0.75, NAN, NAN], [0.75, 1.0, NAN], [0.5, 0.5, 1.0]])
    np.testing.assert_array_equal(mat, expected)
    m = cil_metrics(acc, mat)
    assert m.forgetting == pytest.approx(((0.75 - 0.5) + (1.0 - 0.5)) / 2)
    assert m.average_incremental_accuracy == pytest.approx((3 / 4 + 5 / 6 + 5 / 8) / 3)
    with pytest.raises(ValueError, match="not seen by session 0"):
        accuracy_matrix([["c"]] + y_true[1:], [["c"]] + y_pred[1:], classes)
    with pytest.raises(ValueError, match="3 evaluation steps"):
        accuracy_matrix(y_true[:2], y_pred[:2], classes)


def test_save_metrics_json_and_markdown(tmp_path):
    m = cil_metrics(HAND_A, HAND_MATRIX)
    path = save_metrics_json(tmp_path / "out" / "metrics.json", {"pace": m}, config={"seed": np.int64(0)})
    data = json.loads(path.read_text())
    assert data["config"] == {"seed": 0}
    assert data["pace"]["forgetting"] == pytest.approx(0.225)
    assert data["pace"]["per_task_acc"][0] == [0.9, None, None]  # NaN -> null, valid JSON
    assert not list(path.parent.glob("*.tmp"))
    table = metrics_markdown({"pace": m, "ranpac": cil_metrics([0.6, 0.5])})
    assert "| pace | 80.00 | 70.00 | 22.50 |" in table
    assert "| ranpac | 55.00 | 50.00 | n/a |" in table


def test_plot_curve_writes_png(tmp_path):
    path = plot_curve(tmp_path / "curve.png", {"pace": HAND_A, "ranpac": [0.85, 0.7, 0.6]}, title="ESC-50")
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", raw[16:24])
    assert (width, height) == (720, 480)
    plot_curve(tmp_path / "x.png", {"pace": HAND_A}, x=[25, 30, 35])
    with pytest.raises(ValueError, match="fractions"):
        plot_curve(tmp_path / "bad.png", {"pace": [90.0]})
    with pytest.raises(ValueError, match="x has"):
        plot_curve(tmp_path / "bad.png", {"pace": HAND_A}, x=[1, 2])
