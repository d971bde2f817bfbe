"""Small on-disk trees that reproduce the real layouts and file formats of the benchmark datasets
(generated audio, real metadata formats). Used by tests/test_loaders.py and tests/test_protocol.py."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

SECONDS = 0.05  # keep fixtures tiny


def tone(rate: int, seconds: float = SECONDS, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return x if channels == 1 else np.stack([x * (1.0 - 0.5 * c) for c in range(channels)], axis=1)


def write(path: Path, rate: int = 16000, seconds: float = SECONDS, freq: float = 440.0, channels: int = 1,
          **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(rate, seconds, freq, channels), rate, **kw)
    return path


def write_garbage(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(40)))
    return path


# --- ESC-50 ------------------------------------------------------------------------------------------

ESC_CLASSES = ("dog", "rooster", "rain", "crow")


def make_esc50(root: Path, per_fold: int = 1, missing: bool = False) -> Path:
    """``audio/<fold>-<src>-<take>-<target>.wav`` (44.1 kHz mono PCM_16) + ``meta/esc50.csv``."""
    rows = []
    for target, cat in enumerate(ESC_CLASSES):
        for fold in range(1, 6):
            for k in range(per_fold):
                src = 100000 + 1000 * target + 10 * fold + k
                name = f"{fold}-{src}-A-{target}.wav"
                write(root / "audio" / name, 44100, freq=200.0 + 50 * target, subtype="PCM_16")
                rows.append([name, fold, target, cat, str(cat in ("dog", "rooster")), src, "A"])
    if missing:
        rows.append(["5-999999-A-0.wav", 5, 0, "dog", "True", 999999, "A"])
    (root / "meta").mkdir(parents=True, exist_ok=True)
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        w.writerows(rows)
    return root


# --- UrbanSound8K ------------------------------------------------------------------------------------

US8K_CLASSES = ("air_conditioner", "dog_bark", "siren")
# US8K mixes rates, depths and channel counts; a few of the real combinations:
US8K_FORMATS = ((44100, 1, "PCM_16"), (22050, 2, "FLOAT"), (48000, 2, "PCM_24"), (8000, 1, "PCM_U8"))


def make_us8k(root: Path) -> Path:
    """``audio/fold<k>/<fsID>-<classID>-<occ>-<slice>.wav`` + ``metadata/UrbanSound8K.csv``."""
    rows = []
    for cid, cls in enumerate(US8K_CLASSES):
        for fold in range(1, 11):
            fs_id = 7000 + 100 * cid + fold
            name = f"{fs_id}-{cid}-0-0.wav"
            rate, ch, sub = US8K_FORMATS[(cid + fold) % len(US8K_FORMATS)]
            write(root / "audio" / f"fold{fold}" / name, rate, channels=ch, subtype=sub)
            rows.append([name, fs_id, "0.0", f"{SECONDS:.6f}", 1, fold, cid, cls])
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    with open(root / "metadata" / "UrbanSound8K.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"])
        w.writerows(rows)
    return root


# --- Speech Commands v2 ------------------------------------------------------------------------------

SC2_WORDS = ("yes", "no", "up")
SC2_SPEAKERS = ("0a7c2a8d", "0b09edd3", "1cb788bc", "2aca1e72", "3b4f8f24")


def make_sc2(root: Path, missing_test_entry: bool = False) -> Path:
    """``<word>/<speaker>_nohash_<n>.wav`` (16 kHz), ``testing_list.txt`` / ``validation_list.txt``
    (speaker-disjoint: speaker 4 test, speaker 3 validation), ``_background_noise_``."""
    testing, validation = [], []
    for word in SC2_WORDS:
        for si, spk in enumerate(SC2_SPEAKERS):
            for n in range(2 if si == 0 else 1):
                rel = f"{word}/{spk}_nohash_{n}.wav"
                write(root / rel, 16000, subtype="PCM_16")
                if si == 4:
                    testing.append(rel)
                elif si == 3:
                    validation.append(rel)
    write(root / "_background_noise_" / "white_noise.wav", 16000)
    (root / "_background_noise_" / "README.md").write_text("noise\n")
    if missing_test_entry:
        testing.append("up/ffffffff_nohash_0.wav")
    (root / "testing_list.txt").write_text("\n".join(testing) + "\n")
    (root / "validation_list.txt").write_text("\n".join(validation) + "\n")
    (root / "LICENSE").write_text("CC-BY-4.0\n")
    return root


# --- TIMIT -------------------------------------------------------------------------------------------

TIMIT_SPEAKERS = (("TRAIN", "DR1", "FCJF0"), ("TRAIN", "DR1", "MDAB0"), ("TRAIN", "DR2", "FAEM0"),
                  ("TEST", "DR1", "MDAW1"), ("TEST", "DR3", "FALK0"))
TIMIT_SENTENCES = ("SA1", "SA2", "SI1027", "SI1657", "SI648", "SX127", "SX217", "SX307", "SX37", "SX397")


def write_timit_sphere(path: Path, audio_int16: np.ndarray, rate: int = 16000, utt: str = "fcjf0_sa1") -> Path:
    """A NIST SPHERE file with the header fields of the LDC TIMIT distribution (note: no sample_coding
    field, as in the real corpus), little-endian PCM_16."""
    fields = [("database_id", "-s5", "TIMIT"), ("database_version", "-s3", "1.0"),
              ("utterance_id", f"-s{len(utt)}", utt), ("channel_count", "-i", "1"),
              ("sample_count", "-i", str(len(audio_int16))), ("sample_rate", "-i", str(rate)),
              ("sample_min", "-i", str(int(audio_int16.min()))), ("sample_max", "-i", str(int(audio_int16.max()))),
              ("sample_n_bytes", "-i", "2"), ("sample_byte_format", "-s2", "01"), ("sample_sig_bits", "-i", "16")]
    header = "NIST_1A\n   1024\n" + "".join(f"{k} {t} {v}\n" for k, t, v in fields) + "end_head\n"
    raw = header.encode("ascii").ljust(1024, b" ")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw + audio_int16.astype("<i2").tobytes())
    return path


def make_timit(root: Path, lowercase: bool = False, riff_copies: bool = True) -> Path:
    """``{TRAIN,TEST}/DR*/<SPK>/<SENT>.WAV`` NIST SPHERE (soundfile format='NIST') + .PHN/.TXT/.WRD;
    the first speaker also has Kaggle-style ``SA1.WAV.wav`` RIFF copies."""
    def name(s: str) -> str:
        return s.lower() if lowercase else s

    for i, (part, dr, spk) in enumerate(TIMIT_SPEAKERS):
        d = root / name(part) / name(dr) / name(spk)
        for j, sent in enumerate(TIMIT_SENTENCES):
            write(d / name(f"{sent}.WAV"), 16000, freq=120.0 + 30 * i + j, format="NIST", subtype="PCM_16")
            for ext in ("PHN", "TXT", "WRD"):
                (d / name(f"{sent}.{ext}")).write_text("0 800 h#\n")
            if riff_copies and i == 0:
                write(d / name(f"{sent}.WAV.wav"), 16000, freq=120.0 + j, subtype="PCM_16")
    return root


# --- VocalSet ----------------------------------------------------------------------------------------

VOCALSET_FILES = {
    "female1": ["arpeggios/belt/f1_arpeggios_belt_a.wav", "arpeggios/breathy/f1_arpeggios_breathy_e.wav",
                "long_tones/vibrato/f1_long_vibrato_o.wav", "long_tones/messa/f1_long_messa_a.wav",
                "scales/straight/f1_scales_straight_i.wav", "excerpts/spoken/f1_caro_spoken.wav",
                "excerpts/fry/f1_row_fry.wav"],
    "female2": ["arpeggios/belt/f2_arpeggios_belt_a.wav", "scales/lip_trill/f2_scales_lip_trill_u.wav",
                "long_tones/trillo/f2_long_trillo_a.wav", "scales/inhaled/f2_scales_inhaled_e.wav",
                "long_tones/vibrato/f2_long_vibrato_i.wav"],
    "male3": ["arpeggios/vibrato/m3_arpeggios_vibrato_a.wav", "scales/slow_forte/m3_scales_slow_forte_a.wav",
              "long_tones/trill/m3_long_trill_u.wav", "excerpts/straight/m3_dona_straight.wav"],
    # real VocalSet quirk: a file named m9_* inside male8's folder (the folder is the singer)
    "male8": ["excerpts/vibrato/m9_caro_vibrato.wav", "arpeggios/breathy/m8_arpeggios_breathy_a.wav",
              "scales/belt/m8_scales_belt_o.wav"],
}


def make_vocalset(root: Path, publisher_split: bool = True) -> Path:
    """``FULL/<singer>/<context>/<technique>/*.wav`` (44.1 kHz), a ``__MACOSX`` tree and ``._`` files,
    and (optionally) ``test_singers_technique.txt`` / ``train_singers_technique.txt``."""
    for si, (singer, files) in enumerate(VOCALSET_FILES.items()):
        for fi, rel in enumerate(files):
            p = write(root / "FULL" / singer / rel, 44100, freq=220.0 + 40 * si + 5 * fi)
            (p.parent / f"._{p.name}").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (root / "__MACOSX" / "FULL" / "female1").mkdir(parents=True, exist_ok=True)
    (root / "__MACOSX" / "FULL" / "female1" / "._x.wav").write_bytes(b"\x00\x05\x16\x07")
    if publisher_split:
        (root / "test_singers_technique.txt").write_text("female2\nmale3\n")
        (root / "train_singers_technique.txt").write_text("female1\nmale8\n")
    return root


# --- folder-per-class and synth ----------------------------------------------------------------------

def make_folder(root: Path, split_layout: bool = False, per_class: int = 5) -> Path:
    """``<class>/*.{wav,flac,ogg}`` or ``{train,test}/<class>/...``."""
    exts = ("wav", "flac", "ogg")
    for ci, cls in enumerate(("bell", "clap", "whistle")):
        for k in range(per_class):
            split = "test" if k == per_class - 1 else "train"
            base = root / split / cls if split_layout else root / cls
            fmt = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG"}[exts[k % 3]]
            write(base / f"{cls}_{k:02d}.{exts[k % 3]}", 16000, freq=300.0 + 100 * ci + 10 * k, format=fmt)
    return root


def make_synth(root: Path, with_manifest: bool = True) -> Path:
    """The ``edge-pace data synth`` layout: ``<split>/<class>/<id>.wav`` + ``manifest.csv``
    (path relative to ROOT, label, split, source, benchmark)."""
    rows = []
    spec = {"coarse": ("piano", "violin", "tts_hello"), "fine": ("voice_kal", "voice_slt")}
    for bench, classes in spec.items():
        for ci, cls in enumerate(classes):
            for k in range(4):
                split = "test" if k == 3 else "train"
                rel = f"{split}/{cls}/{cls}_{k:04d}.wav"
                write(root / rel, 16000, freq=250.0 + 50 * ci + 7 * k)
                rows.append([rel, cls, split, f"{bench}-src{k % 2}", bench])
    if with_manifest:
        with open(root / "manifest.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "split", "source", "benchmark"])
            w.writerows(rows)
    return root
