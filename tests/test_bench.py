"""``edge-pace bench`` and ``edge-pace adapt`` through the real CLI (typer's CliRunner), on tiny real audio
(sox tones and noise, 4 classes in 3 sessions, 0.5 s clips) with the pretrained aisfx backbone on CPU."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_pace.evaluation.bench import _execution_order, subsample
from edge_pace.cli import app
from edge_pace.cli.train import parse_overrides
from edge_pace.method.config import PaceConfig
from edge_pace.data.loaders import Clip

try:
    from test_baselines import make_folder_dataset
except ImportError:  # tests/ imported as a package
    from tests.test_baselines import make_folder_dataset

pytestmark = pytest.mark.skipif(shutil.which("sox") is None, reason="sox renders the test audio")

TINY = ["--set", "n_perturb=1", "--set", "msa_epochs=1", "--set", "d_proj=256", "--set", "batch_size=4",
        "--set", "lora_rank=2", "--set", "lora_targets=conv1", "--set", "lr_backbone=0.01", "--set", "msa_lr=0.002",
        "--duration", "0.5", "--device", "cpu", "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("tiny"), {"train": 3, "test": 2})


def invoke(args: list[str]):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result, result.output


# ------------------------------------------------------------------------------------------------ bench

def test_bench_writes_table_json_and_curves_then_resumes(root, tmp_path):
    out, cache = tmp_path / "bench", tmp_path / "cache"
    common = ["bench", "--data", root, "--kind", "folder", "--e0", "1", "--out", out, "--cache", cache, *TINY]
    args = [*common, "--methods", "simplecil,acil,ranpac"]
    result, text = invoke(args)
    assert result.exit_code == 0, text
    md = (out / "results.md").read_text()
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["method"] for r in runs] == ["simplecil", "acil", "ranpac"]
    assert "| method | avg. incremental acc. | last acc. | forgetting | wall time (s) | device |" in md
    for r in runs:
        m = r["metrics"]
        assert len(m["acc_per_session"]) == 3 and r["classes_seen"] == [2, 3, 4]
        assert m["average_incremental_accuracy"] == pytest.approx(np.mean(m["acc_per_session"]))
        assert m["last_accuracy"] > 0.25  # chance with 4 classes
        assert r["device"].startswith("cpu") and r["seconds"] > 0 and r["error"] is None
        row = next(line for line in md.splitlines() if line.startswith(f"| {r['method']} |"))
        cells = [c.strip().strip("*") for c in row.split("|")[1:-1]]
        assert cells[1] == f"{100 * m['average_incremental_accuracy']:.2f}"
        assert cells[2] == f"{100 * m['last_accuracy']:.2f}"
        assert cells[5] == r["device"]
    png = (out / "curves_folder.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert list(cache.glob("*/*.npz")), "frozen embeddings were not cached"
    # --resume keeps finished runs with the same settings; a changed setting runs again
    result2, text2 = invoke([*args, "--resume"])
    assert result2.exit_code == 0, text2
    assert len(re.findall(r"kept from", text2)) == 3
    assert json.loads((out / "results.json").read_text())["runs"] == runs
    result3, text3 = invoke([*common, "--set", "d_proj=128", "--resume", "--methods", "acil"])
    assert result3.exit_code == 0, text3
    assert "kept from" not in text3
    assert [r["method"] for r in json.loads((out / "results.json").read_text())["runs"]] == ["acil"]


def test_bench_refuses_bad_arguments(root, tmp_path):
    result, text = invoke(["bench", "--data", root, "--kind", "folder", "--methods", "pace,magic", "--out", tmp_path])
    assert result.exit_code == 2 and "unknown method(s) ['magic']" in text
    result, text = invoke(["bench", "--data", root, "--kind", "folder", "--set", "e1=3", "--out", tmp_path])
    assert result.exit_code == 2 and "not a PaceConfig field" in text
    result, text = invoke(["bench", "--data", tmp_path / "none", "--benchmarks", "nosuch", "--out", tmp_path])
    assert result.exit_code == 2 and "unknown synthetic benchmark" in text


def test_parse_overrides_types_and_errors():
    got = parse_overrides(["e0=2", "use_msa=false", "lr_head=0.5", "lora_targets=conv1,conv2", "gamma_grid=1,10",
                           "msa-projection=orthogonal"])
    assert got == {"e0": 2, "use_msa": False, "lr_head": 0.5, "lora_targets": ("conv1", "conv2"),
                   "gamma_grid": (1.0, 10.0), "msa_projection": "orthogonal"}
    assert PaceConfig().replace(**got).e0 == 2
    with pytest.raises(ValueError, match="expected a int"):
        parse_overrides(["e0=two"])
    with pytest.raises(ValueError, match="expected true or false"):
        parse_overrides(["use_msa=maybe"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["e0"])


def test_subsample_is_seeded_per_class_and_keeps_the_other_split():
    clips = [Clip(f"/d/{c}/{s}{i}.wav", c, s) for c in "ab" for s in ("train", "test") for i in range(5)]
    a = subsample(clips, "train", 2, seed=3)
    assert a == subsample(clips, "train", 2, seed=3)
    assert sum(c.split == "train" for c in a) == 4 and sum(c.split == "test" for c in a) == 10
    assert {c.label for c in a if c.split == "train"} == {"a", "b"}
    assert subsample(clips, "train", None, 0) == clips
    with pytest.raises(ValueError, match=">= 1"):
        subsample(clips, "train", 0, 0)


def test_pace_no_msa_runs_after_pace():
    assert _execution_order(["pace-no-msa", "acil", "pace"]) == ["acil", "pace", "pace-no-msa"]
    assert _execution_order(["pace-no-msa", "acil"]) == ["pace-no-msa", "acil"]


# ------------------------------------------------------------------------------------------------ adapt

def _state(folder):
    from safetensors.numpy import load_file

    from edge_pace.runtime.state import load_state

    return load_state(folder / "classifier.safetensors"), load_file(str(folder / "adapters.safetensors"))


def test_adapt_is_resumable_and_deterministic(root, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    # do-no-harm off: a 2-class session 0 cannot be split for validation and would stay frozen (no MSA adapter)
    base = ["adapt", "--data", root, "--kind", "folder", "--e0", "1", "--seed", "3", *TINY, "--set", "do_no_harm=false"]
    result, text = invoke([*base[:-2], "--out", tmp_path / "d"])  # do-no-harm on: the decision is printed and kept
    assert result.exit_code == 0 and "do-no-harm: FROZEN backbone kept" in text and "cannot be split" in text, text
    assert "cannot be split" in json.loads((tmp_path / "d" / "config.json").read_text())["adaptation"]["reason"]
    result, text = invoke([*base, "--out", a])  # default: server sessions = session 0 (FSA) only
    assert result.exit_code == 0, text
    cfg = json.loads((a / "config.json").read_text())
    assert cfg["sessions_done"] == 1 and len(cfg["classes"]) == 2
    result, text = invoke([*base, "--out", a, "--sessions", "all"])  # continues at session 1
    assert result.exit_code == 0, text
    assert "continuing" in text and "session 0:" not in text and "session 2:" in text
    result, text = invoke([*base, "--out", b, "--sessions", "all"])  # uninterrupted, same seed
    assert result.exit_code == 0, text
    (clf_a, ad_a), (clf_b, ad_b) = _state(a), _state(b)
    assert clf_a.classes == clf_b.classes and len(clf_a.classes) == 4
    np.testing.assert_array_equal(clf_a.W, clf_b.W)
    np.testing.assert_array_equal(clf_a.R, clf_b.R)
    # sessions 1 and 2 bring one class each: the session head has nothing to learn, so MSA skips them
    assert ad_a.keys() == ad_b.keys() and any(k.endswith(".s0.A") for k in ad_a)
    assert not any(k.endswith(".s1.A") for k in ad_a)
    for k in ad_a:
        np.testing.assert_array_equal(ad_a[k], ad_b[k])
    history = json.loads((a / "metrics.json").read_text())["history"]
    assert [h["session"] for h in history] == [0, 1, 2] and all("one class" in h["msa_skipped"] for h in history[1:])
    assert all(0.25 < h["test_accuracy"] <= 1.0 for h in history)
    assert history[-1]["average_incremental_accuracy"] == pytest.approx(np.mean([h["test_accuracy"] for h in history]))
    # nothing left to do; a conflicting setting is refused
    result, text = invoke([*base, "--out", a, "--sessions", "all"])
    assert result.exit_code == 0 and "nothing to do" in text
    result, text = invoke([*base, "--out", a, "--sessions", "all", "--seed", "4"])
    assert result.exit_code == 2 and "seed=3 (asked 4)" in text
    result, text = invoke([*base, "--out", tmp_path / "c", "--sessions", "7"])
    assert result.exit_code == 2 and "the protocol has 3 sessions" in text
