"""edge-pace data synth: real audio from espeak-ng, flite, festival, sox and fluidsynth (no mocks)."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import typer
from typer.testing import CliRunner

from edge_pace.data import synth as S
from edge_pace.data import synth_render as R
from edge_pace.data.synth import (
    BENCHMARKS,
    ESPEAK_VARIANTS,
    OTHER_SPEAKERS,
    MissingToolError,
    clip_counts,
    keyword_voice_split,
    speaker_text_split,
    synthesize,
)

SCALE = 0.03  # keywords 3+1 clips per class, the others 2+1
RATE = 22050
DURATION = 0.5
SEED = 7
ALL_TOOLS = ("espeak-ng", "flite", "festival", "sox", "fluidsynth")

pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in ALL_TOOLS),
                                reason="needs espeak-ng flite festival sox fluidsynth (apt)")


def _manifest(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _wavs(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*.wav")}


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    folders = synthesize(root, scale=SCALE, seed=SEED, rate=RATE, duration=DURATION, jobs=2, progress=False)
    assert folders == {b: root / b for b in BENCHMARKS}
    return root


def test_class_lists_and_default_size() -> None:
    assert list(BENCHMARKS) == ["keywords", "environment", "speakers", "instruments"]
    assert len(BENCHMARKS["keywords"]) == 20 and len(BENCHMARKS["environment"]) >= 10
    total = sum(len(BENCHMARKS[b]) * sum(clip_counts(b, 1.0)) for b in BENCHMARKS)
    assert total == 5000
    assert clip_counts("keywords", 1.0) == (96, 24)
    assert clip_counts("environment", 0.001) == (1, 1)  # never an empty split


def test_files_layout_and_format(out: Path) -> None:
    for bench, classes in BENCHMARKS.items():
        folder = out / bench
        rows = _manifest(folder)
        n_train, n_test = clip_counts(bench, SCALE)
        assert len(rows) == len(classes) * (n_train + n_test)
        assert list(rows[0]) == ["path", "label", "split", "source", "benchmark"]
        assert {r["path"] for r in rows} == _wavs(folder)  # manifest rows match the files exactly
        assert sorted(r["path"] for r in rows) == [r["path"] for r in rows]
        for r in rows:
            split, label, _ = r["path"].split("/")
            assert (split, label, r["benchmark"]) == (r["split"], r["label"], bench)
        assert {r["label"] for r in rows} == set(classes)
        for r in rows:
            info = sf.info(str(folder / r["path"]))
            assert (info.format, info.subtype, info.channels, info.samplerate, info.frames) == \
                ("WAV", "PCM_16", 1, RATE, round(DURATION * RATE)), r["path"]
            x, _ = sf.read(str(folder / r["path"]))
            assert np.abs(x).max() > 0.03, f"{r['path']} is (nearly) silent"
            assert np.abs(x[:3]).max() < 0.01 and np.abs(x[-3:]).max() < 0.01, "edges are faded"
            e = x**2
            centroid = float((np.arange(len(x)) * e).sum() / e.sum()) / len(x)
            assert 0.25 < centroid < 0.75, f"{r['path']}: sound not centred ({centroid:.2f})"
        # not all clips the same: level and content vary
        peaks = {round(float(np.abs(sf.read(str(folder / r["path"]))[0]).max()), 3) for r in rows}
        assert len(peaks) > len(rows) // 2


def test_loader_reads_the_benchmarks(out: Path) -> None:
    from edge_pace.data.loaders import load_dataset

    for bench in BENCHMARKS:
        clips = load_dataset(f"synth:{bench}", out)
        assert len(clips) == len(_manifest(out / bench))
        assert {c.split for c in clips} == {"train", "test"}


def test_keywords_test_voices_never_in_train(out: Path) -> None:
    rows = _manifest(out / "keywords")
    train = {r["source"] for r in rows if r["split"] == "train"}
    test = {r["source"] for r in rows if r["split"] == "test"}
    assert all(s.startswith("voice:") for s in train | test)
    assert not train & test
    train_voices, test_voices = keyword_voice_split(SEED)
    assert {f"voice:{e}/{v}" for e, v in train_voices} >= train
    assert {f"voice:{e}/{v}" for e, v in test_voices} >= test
    for seed in range(20):  # the rule itself, for many seeds: speakers and espeak variants disjoint
        tr, te = keyword_voice_split(seed)
        assert tr and te and not set(tr) & set(te)
        variant = lambda vs: {v.split("+")[1] for e, v in vs if e == "espeak-ng"}  # noqa: E731
        assert not variant(tr) & variant(te) and len(variant(te)) == len(ESPEAK_VARIANTS) // 4
        group = {ev: g for g, evs in OTHER_SPEAKERS.items() for ev in evs}
        assert not {group[v] for v in tr if v in group} & {group[v] for v in te if v in group}


def test_speakers_test_texts_never_in_train(out: Path) -> None:
    rows = _manifest(out / "speakers")
    train = {r["source"] for r in rows if r["split"] == "train"}
    test = {r["source"] for r in rows if r["split"] == "test"}
    assert all(s.startswith("text:") for s in train | test) and not train & test
    tr, te = speaker_text_split(SEED)
    assert not set(tr) & set(te) and {f"text:{t}" for t in te} >= test


def test_instruments_test_uses_other_soundfont_and_environment_seeds(out: Path) -> None:
    rows = _manifest(out / "instruments")
    assert {r["source"] for r in rows if r["split"] == "train"} == {"soundfont:FluidR3_GM"}
    assert {r["source"] for r in rows if r["split"] == "test"} == {"soundfont:TimGM6mb"}
    rows = _manifest(out / "environment")
    seeds = {s: {r["source"] for r in rows if r["split"] == s} for s in ("train", "test")}
    assert all(x.startswith("seed:") for x in seeds["train"] | seeds["test"])
    assert not seeds["train"] & seeds["test"]
    assert len(seeds["train"] | seeds["test"]) == len(rows)


def test_same_seed_same_bytes_other_seed_differs(out: Path, tmp_path: Path) -> None:
    subset = ["environment", "instruments"]
    synthesize(tmp_path / "a", subset, scale=SCALE, seed=SEED, rate=RATE, duration=DURATION, jobs=1, progress=False)
    synthesize(tmp_path / "b", subset, scale=SCALE, seed=SEED + 1, rate=RATE, duration=DURATION, jobs=2,
               progress=False)
    for bench in subset:
        paths = sorted(_wavs(out / bench))
        assert (tmp_path / "a" / bench / "manifest.csv").read_bytes() == (out / bench / "manifest.csv").read_bytes()
        for p in paths:  # same seed, other jobs count: identical bytes
            assert (tmp_path / "a" / bench / p).read_bytes() == (out / bench / p).read_bytes(), p
        same = sum((tmp_path / "b" / bench / p).read_bytes() == (out / bench / p).read_bytes() for p in paths)
        assert same == 0, f"{bench}: {same} of {len(paths)} clips unchanged by another seed"


def _path_with(bin_dir: Path, tools: tuple[str, ...]) -> str:
    """A PATH holding only the given tools (real executables, linked)."""
    bin_dir.mkdir(parents=True)
    for tool in tools:
        os.symlink(shutil.which(tool), bin_dir / tool)
    return str(bin_dir)


def test_missing_tool_names_the_apt_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _path_with(tmp_path / "bin1", ("flite", "festival", "sox", "fluidsynth")))
    with pytest.raises(MissingToolError, match=r"^espeak-ng not found: apt-get install espeak-ng$"):
        synthesize(tmp_path / "o", ["keywords"], scale=SCALE, progress=False)
    with pytest.raises(MissingToolError, match="espeak-ng not found"):
        synthesize(tmp_path / "o", ["speakers"], scale=SCALE, progress=False)
    assert not (tmp_path / "o" / "keywords").exists()
    # only sox is needed for the environment benchmark: it runs with this PATH
    done = synthesize(tmp_path / "o", ["environment"], scale=0.01, rate=16000, duration=0.3, progress=False)
    assert len(_manifest(done["environment"])) == 2 * len(BENCHMARKS["environment"])
    monkeypatch.setenv("PATH", _path_with(tmp_path / "bin2", ("sox",)))
    with pytest.raises(MissingToolError, match=r"^fluidsynth not found: apt-get install fluidsynth$"):
        synthesize(tmp_path / "o", ["instruments"], scale=SCALE, progress=False)


def test_bad_arguments_and_foreign_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown benchmark.*'drums'.*expected a subset"):
        synthesize(tmp_path, ["drums"], progress=False)
    with pytest.raises(ValueError, match="scale must be a positive number"):
        synthesize(tmp_path, ["environment"], scale=0.0, progress=False)
    with pytest.raises(ValueError, match="rate must be"):
        synthesize(tmp_path, ["environment"], rate=100, progress=False)
    (tmp_path / "environment").mkdir()
    (tmp_path / "environment" / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not an edge-pace synth benchmark"):
        synthesize(tmp_path, ["environment"], scale=0.01, progress=False)
    assert (tmp_path / "environment" / "mine.txt").read_text() == "user data"


def test_rerun_replaces_a_previous_benchmark(tmp_path: Path) -> None:
    synthesize(tmp_path, ["environment"], scale=0.03, rate=16000, duration=0.3, progress=False)
    synthesize(tmp_path, ["environment"], scale=0.01, rate=16000, duration=0.3, progress=False)
    folder = tmp_path / "environment"
    assert {r["path"] for r in _manifest(folder)} == _wavs(folder)
    assert len(_wavs(folder)) == 2 * len(BENCHMARKS["environment"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["environment"]  # no staging leftovers


def test_midi_writer_variable_length_quantities() -> None:
    # examples from the Standard MIDI File specification
    for value, encoded in [(0, "00"), (0x40, "40"), (0x7F, "7f"), (0x80, "8100"), (0x2000, "c000"),
                           (0x3FFF, "ff7f"), (0x4000, "818000"), (0x0FFFFFFF, "ffffff7f")]:
        assert R._vlq(value).hex() == encoded
    mid = R.midi_file([(500, bytes([0x80, 60, 0])), (0, bytes([0x90, 60, 100]))])
    assert mid[:14] == b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x03\xe8"  # format 0, 1 track, 1000 ticks/qn
    track = mid[22:]
    assert track.endswith(b"\x00\x90\x3c\x64\x83\x74\x80\x3c\x00\x00\xff\x2f\x00")  # sorted, delta 500


def test_cli_synth(tmp_path: Path) -> None:
    from edge_pace.cli.data import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps "data" a sub-command
    runner = CliRunner()
    res = runner.invoke(app, ["data", "synth", str(tmp_path), "-b", "environment", "--scale", "0.01",
                              "--rate", "16000", "--duration", "0.3", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "clips/s" in res.output and len(_wavs(tmp_path / "environment")) == 20
    res = runner.invoke(app, ["data", "synth", str(tmp_path), "-b", "environment,drums", "--no-progress"])
    assert res.exit_code == 2 and "unknown benchmark" in res.output
