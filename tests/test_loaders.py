"""Dataset loaders on small trees with the real layouts and formats, and read_clips decoding."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_pace.data.loaders import (
    KINDS,
    Clip,
    DatasetError,
    fit_length,
    held_out_positions,
    load_dataset,
    read_clips,
)
from edge_pace.runtime.audio import AudioError

try:
    import fixtures_data as fx
except ImportError:  # tests/ imported as a package
    from tests import fixtures_data as fx


def _by_name(clips: list[Clip]) -> dict[str, Clip]:
    return {os.path.basename(c.path): c for c in clips}


def _common_checks(clips: list[Clip]) -> None:
    assert clips == sorted(clips, key=lambda c: c.path)
    assert all(os.path.isabs(c.path) and os.path.isfile(c.path) for c in clips)
    assert {c.split for c in clips} <= {"train", "test"}
    assert len({c.path for c in clips}) == len(clips)


# --- ESC-50 ------------------------------------------------------------------------------------------

def test_esc50_fold5_is_test_and_labels_are_categories(tmp_path):
    clips = load_dataset("esc50", fx.make_esc50(tmp_path / "ESC-50-master", per_fold=2))
    _common_checks(clips)
    assert len(clips) == 4 * 5 * 2
    assert {c.label for c in clips} == set(fx.ESC_CLASSES)
    for c in clips:
        fold = int(os.path.basename(c.path).split("-")[0])
        assert c.group == f"fold{fold}"
        assert c.split == ("test" if fold == 5 else "train")
    assert Counter(c.split for c in clips) == {"train": 32, "test": 8}
    target = {c.label: int(os.path.basename(c.path).rsplit("-", 1)[1][:-4]) for c in clips}
    assert target == {name: i for i, name in enumerate(fx.ESC_CLASSES)}  # category matches the target column


def test_esc50_missing_file_is_reported_then_strict_raises(tmp_path, caplog):
    root = fx.make_esc50(tmp_path / "esc", missing=True)
    with caplog.at_level(logging.WARNING, logger="edge_pace.data.loaders"):
        clips = load_dataset("esc50", root)
    assert len(clips) == 20
    assert "5-999999-A-0.wav" in caplog.text
    with pytest.raises(DatasetError, match="5-999999-A-0.wav"):
        load_dataset("esc50", root, strict=True)


def test_esc50_wrong_root_says_what_was_expected(tmp_path):
    (tmp_path / "audio").mkdir()
    with pytest.raises(DatasetError, match="meta/esc50.csv"):
        load_dataset("esc50", tmp_path)


def test_esc50_bad_csv_header(tmp_path):
    root = fx.make_esc50(tmp_path / "esc")
    (root / "meta" / "esc50.csv").write_text("file,fold\nx.wav,1\n")
    with pytest.raises(DatasetError, match="missing"):
        load_dataset("esc50", root)
    (root / "meta" / "esc50.csv").write_text("filename,fold,target,category,esc10,src_file,take\n"
                                             "1-100000-A-0.wav,one,0,dog,True,100000,A\n")
    with pytest.raises(DatasetError, match="integer fold"):
        load_dataset("esc50", root)


# --- UrbanSound8K ------------------------------------------------------------------------------------

def test_us8k_fold10_is_test_and_mixed_formats_decode(tmp_path):
    clips = load_dataset("us8k", fx.make_us8k(tmp_path / "UrbanSound8K"))
    _common_checks(clips)
    assert len(clips) == 30 and {c.label for c in clips} == set(fx.US8K_CLASSES)
    assert {c.group for c in clips if c.split == "test"} == {"fold10"}
    assert sum(c.split == "test" for c in clips) == 3
    assert all(f"/fold{c.group[4:]}/" in c.path for c in clips)
    infos = {(sf.info(c.path).samplerate, sf.info(c.path).channels, sf.info(c.path).subtype) for c in clips}
    assert infos == set(fx.US8K_FORMATS)
    audio, kept = read_clips(clips, 44100)
    assert kept == clips and audio.dtype == np.float32
    assert audio.shape == (30, round(fx.SECONDS * 44100))
    # every file holds a 0.3-amplitude tone on channel 0 (0.15 on channel 1 of stereo files): mean 0.225
    peaks = np.abs(audio).max(axis=1)
    assert np.all((peaks > 0.18) & (peaks < 0.35)), peaks


# --- Speech Commands v2 ------------------------------------------------------------------------------

def test_sc2_testing_list_is_test_validation_is_train_background_excluded(tmp_path):
    root = fx.make_sc2(tmp_path / "speech_commands_v0.02")
    clips = load_dataset("sc2", root)
    _common_checks(clips)
    assert {c.label for c in clips} == set(fx.SC2_WORDS)
    assert not any("_background_noise_" in c.path for c in clips)
    testing = set((root / "testing_list.txt").read_text().split())
    validation = set((root / "validation_list.txt").read_text().split())
    for c in clips:
        rel = Path(c.path).relative_to(root.absolute()).as_posix()
        assert c.split == ("test" if rel in testing else "train")
        if rel in validation:
            assert c.split == "train"
        assert c.group == os.path.basename(c.path).split("_nohash_")[0]
    assert len(clips) == 3 * 6 and sum(c.split == "test" for c in clips) == 3
    assert not {c.group for c in clips if c.split == "test"} & {c.group for c in clips if c.split == "train"}


def test_sc2_missing_testing_entry_reported(tmp_path, caplog):
    root = fx.make_sc2(tmp_path / "sc", missing_test_entry=True)
    with caplog.at_level(logging.WARNING):
        load_dataset("sc2", root)
    assert "ffffffff_nohash_0.wav" in caplog.text
    with pytest.raises(DatasetError, match="ffffffff_nohash_0.wav"):
        load_dataset("sc2", root, strict=True)


# --- TIMIT -------------------------------------------------------------------------------------------

def test_timit_speakers_and_sentence_split(tmp_path):
    root = fx.make_timit(tmp_path / "TIMIT")
    clips = load_dataset("timit2", root)
    _common_checks(clips)
    assert {c.label for c in clips} == {s for _, _, s in fx.TIMIT_SPEAKERS}
    assert all(c.group == c.label for c in clips)
    assert len(clips) == 5 * 10  # RIFF copies SA1.WAV.wav de-duplicated
    assert not any(c.path.endswith(".WAV.wav") for c in clips)
    for c in clips:
        sent = os.path.basename(c.path).split(".")[0]
        assert c.split == ("test" if sent.startswith("SI") else "train")
        assert open(c.path, "rb").read(7) == b"NIST_1A"
    per_speaker = Counter((c.label, c.split) for c in clips)
    assert all(per_speaker[(s, "train")] == 7 and per_speaker[(s, "test")] == 3 for _, _, s in fx.TIMIT_SPEAKERS)
    assert load_dataset("timit3", root) == clips  # same data, the protocol differs
    audio, kept = read_clips(clips[:3], 16000)
    assert audio.shape == (3, round(16000 * fx.SECONDS)) and len(kept) == 3


def test_timit_lowercase_tree_and_kaggle_data_folder(tmp_path):
    fx.make_timit(tmp_path / "timit" / "data", lowercase=True, riff_copies=False)
    clips = load_dataset("timit3", tmp_path / "timit")
    assert {c.label for c in clips} == {s for _, _, s in fx.TIMIT_SPEAKERS}
    assert Counter(c.split for c in clips) == {"train": 35, "test": 15}


def test_timit_ldc_header_without_sample_coding_decodes(tmp_path):
    x = (np.sin(np.arange(1600) * 0.05) * 12000).astype(np.int16)
    p = fx.write_timit_sphere(tmp_path / "TRAIN" / "DR1" / "FCJF0" / "SA1.WAV", x)
    fx.write_timit_sphere(tmp_path / "TEST" / "DR1" / "MDAB0" / "SI648.WAV", x, utt="mdab0_si648")
    audio, rate = sf.read(str(p), dtype="int16")
    assert rate == 16000 and np.array_equal(audio, x)
    clips = load_dataset("timit2", tmp_path)
    decoded, _ = read_clips(clips, 16000)
    assert np.array_equal(decoded[0], x.astype(np.float32) / 32768.0)


def test_timit_duplicate_speaker_id_raises(tmp_path):
    root = fx.make_timit(tmp_path / "t", riff_copies=False)
    fx.write(root / "TEST" / "DR4" / "FCJF0" / "SA1.WAV", 16000, format="NIST", subtype="PCM_16")
    with pytest.raises(DatasetError, match="FCJF0 appears twice"):
        load_dataset("timit2", root)


def test_timit_wrong_root(tmp_path):
    with pytest.raises(DatasetError, match="TRAIN/DR"):
        load_dataset("timit2", tmp_path)


# --- VocalSet ----------------------------------------------------------------------------------------

def test_vocalset_singers_from_folders_and_held_out_rule(tmp_path):
    root = fx.make_vocalset(tmp_path / "VocalSet")
    clips = load_dataset("vocalset", root)
    _common_checks(clips)
    assert not any("__MACOSX" in c.path or os.path.basename(c.path).startswith("._") for c in clips)
    assert {c.label for c in clips} == set(fx.VOCALSET_FILES)
    assert all(c.group == c.label for c in clips)
    assert _by_name(clips)["m9_caro_vibrato.wav"].label == "male8"
    for singer, files in fx.VOCALSET_FILES.items():
        ordered = sorted(files)
        test = {os.path.basename(ordered[i]) for i in held_out_positions(len(files))}
        got = {os.path.basename(c.path) for c in clips if c.label == singer and c.split == "test"}
        assert got == test and 1 <= len(got) < len(files)
    # ROOT may be the FULL folder itself
    assert [(c.label, c.split) for c in load_dataset("vocalset", root / "FULL")] == [(c.label, c.split) for c in clips]


def test_vocalset_technique_uses_publisher_singer_split(tmp_path):
    clips = load_dataset("vocalset_technique", fx.make_vocalset(tmp_path / "VocalSet"))
    names = _by_name(clips)
    assert "f1_long_messa_a.wav" not in names and "m3_scales_slow_forte_a.wav" not in names
    assert names["f1_row_fry.wav"].label == "vocal_fry"
    assert names["f2_scales_lip_trill_u.wav"].label == "lip_trill"
    assert {c.group for c in clips if c.split == "test"} == {"female2", "male3"}
    assert {c.group for c in clips if c.split == "train"} == {"female1", "male8"}


def test_vocalset_technique_without_publisher_file_splits_per_singer(tmp_path):
    clips = load_dataset("vocalset_technique", fx.make_vocalset(tmp_path / "V", publisher_split=False))
    for singer in fx.VOCALSET_FILES:
        splits = {c.split for c in clips if c.group == singer}
        assert splits == {"train", "test"}


@pytest.mark.parametrize("n", range(0, 60))
def test_held_out_positions_count_and_spread(n):
    pos = sorted(held_out_positions(n))
    if n < 2:
        assert pos == []
        return
    k = min(n - 1, max(1, int(np.floor(0.2 * n + 0.5))))
    assert len(pos) == k and pos[0] >= 0 and pos[-1] <= n - 1
    gaps = np.diff(pos)
    assert np.all(gaps >= np.floor(n / k)) and np.all(gaps <= np.ceil(n / k))


# --- folder and synth --------------------------------------------------------------------------------

def test_folder_flat_layout_with_wav_flac_ogg(tmp_path):
    clips = load_dataset("folder", fx.make_folder(tmp_path / "f", per_class=5))
    _common_checks(clips)
    assert Counter(c.label for c in clips) == {"bell": 5, "clap": 5, "whistle": 5}
    assert {Path(c.path).suffix for c in clips} == {".wav", ".flac", ".ogg"}
    assert [os.path.basename(c.path) for c in clips if c.split == "test"] == ["bell_02.ogg", "clap_02.ogg",
                                                                              "whistle_02.ogg"]
    audio, kept = read_clips(clips, 44100, duration=0.02)
    assert audio.shape == (15, 882) and len(kept) == 15


def test_folder_split_layout(tmp_path):
    root = fx.make_folder(tmp_path / "f", split_layout=True, per_class=4)
    fx.write(root / "validation" / "bell" / "extra.wav")
    clips = load_dataset("folder", root)
    assert Counter(c.split for c in clips) == {"train": 10, "test": 3}
    assert all(("/test/" in c.path) == (c.split == "test") for c in clips)
    assert {c.label for c in clips} == {"bell", "clap", "whistle"}


def test_folder_errors(tmp_path):
    (tmp_path / "only" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="not the other"):
        load_dataset("folder", tmp_path / "only")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no audio files"):
        load_dataset("folder", tmp_path / "empty")
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset("folder", tmp_path / "nope")
    with pytest.raises(DatasetError, match="unknown dataset kind"):
        load_dataset("esc-50", tmp_path)
    assert "esc50" in KINDS


def test_synth_manifest_groups_and_benchmark_filter(tmp_path):
    root = fx.make_synth(tmp_path / "synth")
    clips = load_dataset("synth", root)
    _common_checks(clips)
    assert len(clips) == 5 * 4 and all(c.group.endswith(("src0", "src1")) for c in clips)
    assert all(f"/{c.split}/{c.label}/" in c.path for c in clips)
    fine = load_dataset("synth:fine", root)
    assert {c.label for c in fine} == {"voice_kal", "voice_slt"} and all(c.group.startswith("fine-") for c in fine)
    with pytest.raises(DatasetError, match="found"):
        load_dataset("synth:nothing", root)


def test_synth_out_folder_with_one_folder_per_benchmark(tmp_path):
    out = tmp_path / "out"
    fx.make_synth(out / "speakers")
    fx.make_synth(out / "instruments")
    a = load_dataset("synth:speakers", out)
    assert a == load_dataset("synth", out / "speakers") and all("/speakers/" in c.path for c in a)
    with pytest.raises(DatasetError, match="synth:<benchmark>"):
        load_dataset("synth", out)


def test_synth_without_manifest_falls_back_to_folders(tmp_path):
    root = fx.make_synth(tmp_path / "synth", with_manifest=False)
    clips = load_dataset("synth", root)
    assert len(clips) == 20 and Counter(c.split for c in clips) == {"train": 15, "test": 5}
    assert all(c.group == "" for c in clips)


def test_synth_bad_split_and_missing_row(tmp_path, caplog):
    root = fx.make_synth(tmp_path / "s")
    text = (root / "manifest.csv").read_text()
    (root / "manifest.csv").write_text(text + "train/piano/gone.wav,piano,train,x,coarse\n")
    with caplog.at_level(logging.WARNING):
        assert len(load_dataset("synth", root)) == 20
    assert "gone.wav" in caplog.text
    (root / "manifest.csv").write_text(text + "train/piano/piano_0000.wav,piano,holdout,x,coarse\n")
    with pytest.raises(DatasetError, match="holdout"):
        load_dataset("synth", root)


# --- read_clips --------------------------------------------------------------------------------------

def test_read_clips_stereo_22k_to_mono_44k(tmp_path):
    rate, n, f0 = 22050, 2205, 441.0
    t = np.arange(n) / rate
    left = 0.4 * np.sin(2 * np.pi * f0 * t)
    stereo = np.stack([left, -0.5 * left], axis=1)  # mono mean = 0.1 * sin
    p = tmp_path / "st.wav"
    sf.write(str(p), stereo, rate, subtype="FLOAT")
    audio, kept = read_clips([Clip(str(p), "a", "train")], 44100)
    assert audio.shape == (1, 2 * n)
    t2 = np.arange(2 * n) / 44100
    expected = 0.1 * np.sin(2 * np.pi * f0 * t2)
    inner = slice(200, 2 * n - 200)  # resampler edge transients excluded
    assert np.max(np.abs(audio[0, inner] - expected[inner])) < 2e-3


def test_read_clips_centre_crop_and_zero_pad_are_exact(tmp_path):
    x = (np.arange(1000) - 500).astype(np.int16)
    p = tmp_path / "ramp.wav"
    sf.write(str(p), x, 16000, subtype="PCM_16")
    clip = Clip(str(p), "r", "train")
    ref = x.astype(np.float32) / 32768.0
    crop, _ = read_clips([clip], 16000, duration=0.025)  # 400 samples
    assert np.array_equal(crop[0], ref[300:700])
    pad, _ = read_clips([clip], 16000, duration=0.1)  # 1600 samples
    assert np.array_equal(pad[0, :1000], ref) and not pad[0, 1000:].any()
    assert np.array_equal(fit_length(np.arange(5.0), 4), [0.0, 1.0, 2.0, 3.0])
    assert np.array_equal(fit_length(np.arange(6.0), 3), [1.0, 2.0, 3.0])


def test_read_clips_without_duration_pads_to_longest(tmp_path):
    a = fx.write(tmp_path / "a.wav", 16000, seconds=0.01)
    b = fx.write(tmp_path / "b.wav", 16000, seconds=0.02)
    audio, _ = read_clips([Clip(str(a), "x", "train"), Clip(str(b), "y", "train")], 16000)
    assert audio.shape == (2, 320) and not audio[0, 160:].any() and audio[0, :160].any()


def test_read_clips_unreadable_reported_and_skipped_or_strict(tmp_path, caplog):
    good = Clip(str(fx.write(tmp_path / "good.wav")), "a", "train")
    bad = Clip(str(fx.write_garbage(tmp_path / "bad.wav")), "a", "train")
    gone = Clip(str(tmp_path / "gone.wav"), "b", "test")
    errors: list[tuple[str, str]] = []
    calls = []
    with caplog.at_level(logging.WARNING):
        audio, kept = read_clips([bad, good, gone], 16000, duration=0.01, errors=errors,
                                 progress=lambda i, n: calls.append((i, n)))
    assert kept == [good] and audio.shape == (1, 160)
    assert [p for p, _ in errors] == [bad.path, gone.path]
    assert bad.path in caplog.text and gone.path in caplog.text
    assert calls == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(AudioError, match="bad.wav"):
        read_clips([good, bad], 16000, strict=True)
    empty, none = read_clips([bad], 16000, duration=0.01)
    assert empty.shape == (0, 160) and none == []


def test_read_clips_argument_errors():
    with pytest.raises(ValueError, match="sample_rate"):
        read_clips([], 0)
    with pytest.raises(ValueError, match="duration"):
        read_clips([], 16000, duration=-1.0)
