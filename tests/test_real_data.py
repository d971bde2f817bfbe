"""edge-pace data real: built from small fixture trees that mimic the Debian packages' layouts.

Drum kits: two presets of the installed TimGM6mb soundfont stand in for the avldrums kits; asterisk
prompts: GSM (sox) and WAV files; freepats: GUS patches written here; 0ad: a small zip of OGG files.
No download, no 0ad-data.
"""

from __future__ import annotations

import csv
import io
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import typer
from typer.testing import CliRunner

from edge_pace.data import real as R
from edge_pace.data import real_audio as A
from edge_pace.data.loaders import load_dataset
from edge_pace.data.real import FREEPATS, VOICES, MissingPackageError, RealPaths, build_real, class_counts

TIMGM = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
RATE, DURATION, SEED = 16000, 0.5, 3

pytestmark = pytest.mark.skipif(shutil.which("sox") is None or shutil.which("fluidsynth") is None
                                or not TIMGM.is_file(), reason="needs sox, fluidsynth, timgm6mb-soundfont (apt)")


def _tone(f0: float, seconds: float, rate: int, seed: int, bursts: int = 1) -> np.ndarray:
    """Voice-like test signal: harmonic bursts separated by pauses, a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    env = np.zeros_like(t)
    for k in range(bursts):
        a, b = (k + 0.1) / bursts * seconds, (k + 0.8) / bursts * seconds
        env += (t >= a) & (t < b)
    x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 5)) * env
    return 0.4 * x / np.abs(x).max() + 0.003 * rng.standard_normal(len(t))


def _write_gus(path: Path, samples: list[tuple[np.ndarray, int, float]]) -> None:
    """A GF1PATCH110 file with one layer of looped 16-bit samples (data, rate, root Hz)."""
    body = b""
    for k, (x, rate, root) in enumerate(samples):
        pcm = np.round(x * 32000).astype("<i2").tobytes()
        n = len(x)
        header = struct.pack("<7sBIIIHIII", f"s{k}".encode(), 0, len(pcm), (n // 2) * 2, (n - 1) * 2, rate,
                             int(root * 1000 / 1.5), int(root * 1000 * 1.5), int(root * 1000))
        header += b"\0" * (55 - len(header)) + bytes([1 | 4]) + b"\0" * 40
        assert len(header) == 96
        body += header + pcm
    head = b"GF1PATCH110\0ID#000002\0" + b"\0" * 60 + bytes([1, 14, 0]) + struct.pack("<HHI", len(samples), 127,
                                                                                       len(body)) + b"\0" * 36
    inst = b"\0\0" + b"test".ljust(16, b"\0") + struct.pack("<I", len(body)) + b"\x01" + b"\0" * 40
    layer = b"\0\0" + struct.pack("<I", len(body)) + bytes([len(samples)]) + b"\0" * 40
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + inst + layer + body)


def _ogg(x: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="OGG", subtype="VORBIS")
    return buf.getvalue()


ZIP_MEMBERS = {  # member -> (f0, seconds)
    "audio/actor/singlesteps/fs_grass1.ogg": (90, 0.4), "audio/actor/singlesteps/fs_grass2.ogg": (95, 0.4),
    "audio/actor/singlesteps/fs_rock1.ogg": (120, 0.4),
    "audio/actor/human/movement/Footsteps/Footstep_Wood_Walking.ogg": (130, 2.4),
    "audio/actor/human/death/male_death_1.ogg": (200, 0.8), "audio/actor/human/death/male_death_2.ogg": (210, 0.9),
    "audio/actor/human/death/male_death_3.ogg": (220, 1.0),
    "audio/resource/lumbering/lumber_tree_01.ogg": (300, 0.6),
    "audio/resource/lumbering/lumber_tree_02.ogg": (310, 0.6),
    "audio/resource/mining/mine_metal_01.ogg": (900, 0.5), "audio/resource/mining/mine_metal_02.ogg": (950, 0.5),
    "audio/attack/impact/arrow_wood_01.ogg": (700, 0.3), "audio/attack/impact/arrow_wood_02.ogg": (720, 0.3),
    "audio/attack/weapon/swordhit_11a.ogg": (1500, 0.4), "audio/attack/weapon/swordhit_11b.ogg": (1550, 0.4),
    "audio/attack/weapon/sword_attack_01.ogg": (1400, 0.8),
    "audio/resource/foraging/leaves_01.ogg": (2500, 2.6), "audio/resource/foraging/leaves_02.ogg": (2600, 2.6),
    "audio/music/theme.ogg": (440, 1.0),
}
DUPLICATE = "audio/resource/mining/mine_stone_09.ogg"  # byte-identical to mine_metal_01: used once


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> RealPaths:
    root = tmp_path_factory.mktemp("debian")
    asterisk = root / "asterisk"
    for v, (label, (folder, _, _)) in enumerate(VOICES.items()):
        for k in range(6):
            x = _tone(110 + 60 * v, 0.6 + 0.4 * k, 8000, seed=10 * v + k, bursts=1 + k % 3)
            wav = asterisk / folder / ("digits" if k % 2 else "") / f"prompt-{k}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            sf.write(wav, x, 8000, subtype="PCM_16")
            if label != "voice_it":  # es and fr ship raw GSM 06.10
                subprocess.run(["sox", "-R", str(wav), str(wav.with_suffix(".gsm"))], check=True)
                wav.unlink()
    for c, rel in enumerate(FREEPATS.values()):
        samples = [(_tone(f, 0.3, 22050, seed=c * 7 + j) * np.linspace(1, 0.6, 6615), 22050, f)
                   for j, f in enumerate((110.0 * (c + 1), 220.0 * (c + 1), 330.0 * (c + 1), 440.0 * (c + 1)))]
        _write_gus(root / "freepats" / rel, samples)
    zpath = root / "public.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for k, (name, (f0, seconds)) in enumerate(ZIP_MEMBERS.items()):
            z.writestr(name, _ogg(_tone(f0, seconds, 22050, seed=100 + k, bursts=max(1, int(seconds * 2))), 22050))
        z.writestr(DUPLICATE, z.read("audio/resource/mining/mine_metal_01.ogg"))
    return RealPaths(drum_kits={"standard": (TIMGM, 128, 0), "orchestra": (TIMGM, 128, 48)}, asterisk=asterisk,
                     freepats=root / "freepats", zero_ad_zip=zpath)


@pytest.fixture(scope="module")
def built(sources: RealPaths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("real")
    folder = build_real(out, seed=SEED, rate=RATE, duration=DURATION, jobs=2, progress=False, paths=sources)
    assert folder == out / "real"
    return out


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_manifest_layout_and_clips(built: Path) -> None:
    folder = built / "real"
    with open(folder / "manifest.csv", newline="") as fh:
        assert next(csv.reader(fh)) == ["path", "label", "split", "source", "benchmark"]
    rows = _rows(folder)
    assert {r["label"] for r in rows} == {c for labels in R.CLASSES.values() for c in labels}
    assert {r["benchmark"] for r in rows} == {"real"}
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*.wav")} == {r["path"] for r in rows}
    for r in rows:
        assert r["path"].startswith(f"{r['split']}/{r['label']}/")
        info = sf.info(folder / r["path"])
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (RATE, 1, RATE * DURATION, "PCM_16")
    counts = class_counts(folder)
    assert all(c["train"] >= 1 and c["test"] >= 1 for c in counts.values())
    assert counts["piano"] == {"train": R.FREEPATS_CLIPS[0], "test": R.FREEPATS_CLIPS[1]}
    assert counts["voice_es"] == {"train": 4, "test": 2}  # a third of 6 prompt files is test


def test_splits_disjoint_by_source(built: Path) -> None:
    rows = _rows(built / "real")
    train = {r["source"] for r in rows if r["split"] == "train"}
    test = {r["source"] for r in rows if r["split"] == "test"}
    assert train and test and not train & test
    by = {(r["label"], r["split"]): set() for r in rows}
    for r in rows:
        by[(r["label"], r["split"])].add(r["source"])
    # drums: kit-held-out classes test on the second kit only; the hi-hat alternates strikes of the first
    assert all(s.startswith("drums:orchestra/") for s in by[("kick", "test")] | by[("tom", "test")])
    assert all(s.startswith("drums:standard/") for s in by[("kick", "train")] | by[("hihat", "test")])
    assert by[("footsteps", "test")] == {"0ad:footsteps/rock", "0ad:footsteps/wood"}
    assert by[("footsteps", "train")] == {"0ad:footsteps/grass"}
    assert all(s.startswith("prompt:es/") for s in by[("voice_es", "test")])
    assert all("/sample" in s for s in by[("harp", "train")] | by[("harp", "test")])
    sources = {r["source"] for r in rows}
    assert "0ad:audio/attack/weapon/swordhit_11" in sources  # a/b parts are one recording
    assert not any("mine_stone_09" in s or "music" in s for s in sources)  # duplicate and unlisted members
    long_take = [r for r in rows if r["source"] == "0ad:footsteps/wood"]
    assert len(long_take) >= 2 and len({r["split"] for r in long_take}) == 1  # several clips of one long file


def test_same_seed_same_bytes(built: Path, sources: RealPaths, tmp_path: Path) -> None:
    again = build_real(tmp_path / "a", seed=SEED, rate=RATE, duration=DURATION, jobs=1, progress=False, paths=sources)
    first = built / "real"
    files = sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (again / f).read_bytes() for f in files)
    other = build_real(tmp_path / "b", sources=["voices"], seed=SEED + 1, rate=RATE, duration=DURATION, jobs=1,
                       progress=False, paths=sources)
    assert [r["source"] for r in _rows(other) if r["split"] == "test"] != \
        [r["source"] for r in _rows(first) if r["split"] == "test" and r["label"].startswith("voice_")]


def test_loader_reads_out_or_out_real(built: Path) -> None:
    rows = _rows(built / "real")
    for root in (built, built / "real"):
        clips = load_dataset("real", root)
        assert len(clips) == len(rows)
        assert {(c.label, c.split, c.group) for c in clips} == {(r["label"], r["split"], r["source"]) for r in rows}
    from edge_pace.evaluation.protocol import make_sessions, protocol_for

    sessions = make_sessions(load_dataset("real", built), **protocol_for("real"), seed=0)
    assert len(sessions) == 6


@pytest.mark.parametrize("source, broken, package", [
    ("drums", {"drum_kits": {"a": (Path("/nonexistent/a.sf2"), 0, 0), "b": (TIMGM, 128, 0)}}, "avldrums.lv2-soundfont"),
    ("voices", {"asterisk": Path("/nonexistent")}, "asterisk-prompt-es-co"),
    ("freepats", {"freepats": Path("/nonexistent")}, "freepats"),
    ("0ad", {"zero_ad_zip": Path("/nonexistent/public.zip")}, "0ad-data"),
])
def test_missing_package_names_apt_command(source: str, broken: dict, package: str, sources: RealPaths,
                                           tmp_path: Path) -> None:
    paths = RealPaths(**{**sources.__dict__, **broken})
    with pytest.raises(MissingPackageError, match=f"apt-get install {package}"):
        build_real(tmp_path, sources=[source], progress=False, paths=paths)
    assert not (tmp_path / "real").exists()


def test_cli(sources: RealPaths, tmp_path: Path) -> None:
    from edge_pace.cli.data import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    runner = CliRunner()
    res = runner.invoke(app, ["data", "real", str(tmp_path), "--sources", "voices,freepats", "--rate", "8000",
                              "--no-progress", "--asterisk-dir", str(sources.asterisk),
                              "--freepats-dir", str(sources.freepats)])
    assert res.exit_code == 0, res.output
    assert "voice_it" in res.output and "french_horn" in res.output and "7 classes" in res.output
    res = runner.invoke(app, ["data", "real", str(tmp_path / "x"), "-s", "0ad", "--0ad-zip", "/nonexistent.zip"])
    assert res.exit_code == 2 and "apt-get install 0ad-data" in res.output


def test_readers() -> None:
    rate = 8000
    x = _tone(200, 3.5, rate, seed=1, bursts=7)
    clips = A.cut(x, rate, 1.0, max_clips=3)
    assert len(clips) == 3 and all(len(c) == rate for c in clips)
    one = A.cut(np.concatenate([np.zeros(rate), x[:rate // 4], np.zeros(rate)]), rate, 1.0)
    assert len(one) == 1 and np.abs(one[0][: rate // 4]).max() < 0.05  # centred: silence before the burst
    assert A.cut(np.zeros(rate), rate, 1.0) == []
    noise = np.random.default_rng(0).standard_normal(4000)
    assert A.same_recording(noise, 0.3 * np.concatenate([np.zeros(40), noise]))
    assert not A.same_recording(noise, np.random.default_rng(1).standard_normal(4000))
    pcm = A.finish(np.sin(np.arange(rate) / 5), rate, -6.0)
    assert pcm.dtype == np.dtype("<i2") and abs(np.abs(pcm).max() / 32767 - 10 ** (-6 / 20)) < 1e-3


def test_gus_patch_roundtrip(tmp_path: Path) -> None:
    x = _tone(220, 0.2, 22050, seed=0) * 0.9
    _write_gus(tmp_path / "p.pat", [(x, 22050, 220.0), (x[::-1].copy(), 22050, 440.0)])
    samples = A.read_gus_patch(tmp_path / "p.pat")
    assert len(samples) == 2 and samples[1].root_hz == 440.0 and samples[0].loop == (len(x) // 2, len(x) - 1)
    assert np.abs(samples[0].data - np.round(x * 32000) / 32768).max() < 1e-9
    y, sr = A.play_gus_note(samples[0], 440.0, 0.5)  # an octave up: twice the rate, looped to 0.5 s
    assert sr == 44100 and len(y) >= 0.5 * sr
    with pytest.raises(ValueError, match="GUS"):
        A.read_gus_patch(TIMGM)
