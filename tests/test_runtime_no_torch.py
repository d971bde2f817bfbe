"""The device runtime and its CLI commands run with torch made unimportable (a meta-path finder that raises
ImportError for torch/torchaudio), in fresh subprocesses: load, learn, predict, forget, save, load, stream."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import soundfile as sf

BLOCK_TORCH = '''
import sys
class _NoTorch:
    """Refuse torch and torchaudio, as on a device without the training extras."""
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchaudio"):
            raise ImportError(f"torch is not installed on this device (blocked import of {name})")
        return None
sys.meta_path.insert(0, _NoTorch())
try:
    import torch  # noqa: F401
    raise SystemExit("the torch blocker does not work")
except ImportError:
    pass
'''

RUNTIME_SCRIPT = '''
import json, sys
from pathlib import Path
import numpy as np
bundle, folder = Path(sys.argv[1]), Path(sys.argv[2])
from edge_pace.runtime.learner import Learner
from edge_pace.runtime.stream import Stream
from edge_pace.runtime.audio import load_audio

lrn = Learner.load(bundle)
for c in ("sine", "square", "speech"):
    lrn.learn_many(sorted(folder.glob(f"{c}_train*.wav")), c)
out = {"classes": lrn.classes}
out["pred"] = {p.name: lrn.predict(p) for p in sorted(folder.glob("*_test*.wav"))}
lrn.forget("square")
path = lrn.save()
back = Learner.load(bundle, int8=False, threads=1)
assert back.classes == ["sine", "speech"], back.classes
assert np.array_equal(back.classifier.R, lrn.classifier.R) and np.array_equal(back.classifier.W, lrn.classifier.W)
sig = np.concatenate([np.zeros(22050, np.float32), load_audio(folder / "sine_test0.wav", 16000)[0],
                      np.zeros(16000, np.float32)])
st = back.stream(sample_rate=16000)
events = [e for i in range(0, len(sig), 1000) for e in st.feed(sig[i:i + 1000])] + st.flush()
out["events"] = [[e.label, e.score, e.time_s] for e in events]
out["torch_loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchaudio"))
out["state"] = str(path)
print(json.dumps(out))
'''


def _python(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def _write_clips(real_sounds, folder: Path) -> Path:
    folder.mkdir()
    for c in ("sine", "square", "speech"):
        for i, x in enumerate(real_sounds[c][:3]):
            sf.write(folder / f"{c}_train{i}.wav", x, 44100, subtype="FLOAT")
        sf.write(folder / f"{c}_test0.wav", real_sounds[c][4], 44100, subtype="FLOAT")
    sf.write(folder / "noise.wav", real_sounds["noise"][0], 44100, subtype="FLOAT")
    return folder


def test_runtime_runs_without_torch(bundle_copy, real_sounds, tmp_path):
    folder = _write_clips(real_sounds, tmp_path / "clips")
    r = _python(RUNTIME_SCRIPT, bundle_copy, folder)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["torch_loaded"] == []
    assert out["classes"] == ["sine", "square", "speech"]
    assert {k: v[0] for k, v in out["pred"].items()} == {"sine_test0.wav": "sine", "square_test0.wav": "square",
                                                        "speech_test0.wav": "speech"}
    assert [e[0] for e in out["events"]] == ["sine"]
    assert Path(out["state"]) == bundle_copy / "state.safetensors"


CLI = "from edge_pace.cli import main\nsys.argv = ['edge-pace', *sys.argv[1:]]\nmain()\n"


def test_cli_learn_predict_forget_without_torch(bundle_copy, real_sounds, tmp_path):
    folder = _write_clips(real_sounds, tmp_path / "clips")
    for c in ("sine", "speech"):
        r = _python(CLI, "learn", bundle_copy, c, *sorted(folder.glob(f"{c}_train*.wav")))
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"learned {c!r} from 3 file(s)" in r.stdout
    r = _python(CLI, "predict", bundle_copy, folder / "sine_test0.wav", folder / "noise.wav", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert [row["label"] for row in rows] == ["sine", "unknown"]
    assert set(rows[0]["probabilities"]) == {"sine", "speech"}
    r = _python(CLI, "predict", bundle_copy, "sine_test0.wav", cwd=folder)  # rich table
    assert r.returncode == 0 and "sine_test0.wav" in r.stdout and "unknown threshold" in r.stdout, r.stderr[-3000:]
    r = _python(CLI, "forget", bundle_copy, "sine")
    assert r.returncode == 0 and "1 class(es) left: speech" in r.stdout, r.stderr[-3000:]
    r = _python(CLI, "forget", bundle_copy, "sine")
    assert r.returncode == 2 and "unknown class 'sine'" in r.stderr
    r = _python(CLI, "learn", bundle_copy, "bad", folder / "missing.wav")
    assert r.returncode == 2 and "cannot decode" in r.stderr and "nothing was learned" in r.stderr
