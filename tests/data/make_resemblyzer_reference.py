"""Writes tests/data/resemblyzer_0.1.4_reference.npz: what Resemblyzer 0.1.4's own code computes for a fixed
analytic test signal, so that tests/test_backbone_speech.py can check our GE2E encoder against it without
Resemblyzer installed.

Resemblyzer is never a project dependency. To regenerate, use a throwaway environment that has torch,
Resemblyzer==0.1.4 and its requirements (librosa, webrtcvad, scipy), e.g. a venv whose site-packages has a
.pth line pointing at the project venv's site-packages (for torch), then ``pip install Resemblyzer==0.1.4``:

    /tmp/rzvenv/bin/python tests/data/make_resemblyzer_reference.py

Recorded with Resemblyzer 0.1.4, librosa 0.11.0, numpy 2.4.6, torch 2.9.1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("resemblyzer_0.1.4_reference.npz")
LENGTHS = (8000, 16000, 40000)  # 0.5 s, 1 s (one partial), 2.5 s (three partials, the last dropped)


def reference_signal(n: int = 48000, sr: int = 16000) -> np.ndarray:
    """A voiced, vowel-like test signal (no randomness): 19 harmonics of a 120 +- 30 Hz glide with
    harmonic-dependent tremolo, under a 3 s raised-cosine envelope, peak about 0.3."""
    t = np.arange(n) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    sig = sum((0.3 / k) * np.sin(k * phase) * (1 + 0.5 * np.sin(2 * np.pi * (3 + k) * t)) for k in range(1, 20))
    return (0.3 * sig * 0.5 * (1 - np.cos(2 * np.pi * t / 3))).astype(np.float32)


def main() -> int:
    import librosa
    import torch
    from resemblyzer import VoiceEncoder, normalize_volume, wav_to_mel_spectrogram

    enc = VoiceEncoder(device="cpu", verbose=False).eval()
    sig = reference_signal()
    out = {"mel_1s": wav_to_mel_spectrogram(sig[:16000]),
           "mel_fb_sums": librosa.filters.mel(sr=16000, n_fft=400, n_mels=40).sum(axis=1).astype(np.float64)}
    # the network alone, on the same mel partials (1.6 s windows at 0, 0.5 and 1 s of the normalised signal)
    mels = np.stack([wav_to_mel_spectrogram(normalize_volume(sig[i:i + 25600], -30, increase_only=True))[:160]
                     for i in (0, 8000, 16000)])
    with torch.no_grad():
        out["partial_mels"] = mels
        out["partial_embeds"] = enc(torch.from_numpy(mels)).numpy()
    for n in LENGTHS:  # embed_utterance after the volume rule of preprocess_wav (silence trimming left out)
        out[f"utterance_{n}"] = enc.embed_utterance(normalize_volume(sig[:n], -30, increase_only=True))
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
