"""Device-runtime figures (not tests): latency, memory, start-up, ONNX Runtime vs PyTorch, int8 vs fp32, FLOPs.

    .venv/bin/python benchmarks/runtime_bench.py [--bundle DIR] [--reps 30] [--json out.json]

Without --bundle a frozen aisfx bundle with D = 2048 and int8 is exported once (in a subprocess, torch) to
$EDGE_PACE_CACHE/bench-bundles/aisfx-d2048. Every figure comes from a fresh worker subprocess with
OPENBLAS/OMP threads set to the thread count under test, so import time and RSS are those of a process
that never imported torch. The runtime workers run first; torch is imported only afterwards, by the
"compare" worker that times ONNX Runtime fp32, ONNX Runtime int8 and PyTorch eager on the same model and
inputs, interleaved in one process (ratios from one run). Audio: real clips made with sox (-R) and
espeak-ng: 8 classes, 4 training and 6 held-out clips each (1 s, 44.1 kHz).

Latency is per 1 s clip (= one window): embed (framing + ONNX Runtime), predict (embed + ridge scores +
unknown rule with a cached threshold), learn (embed + recursive update + publishing the new state).
The unknown threshold's recalibration after a learn (O(n D^2), paid once by the next prediction) is
reported separately. Stream RTF: a 10 s, 16 kHz signal fed in 10 ms chunks (resampling, windows every
0.5 s, so two embeddings per second of audio).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100
TONES = {"sine": "sine", "square": "square", "saw": "sawtooth", "pluck": "pluck", "trem": "sine"}
WORDS = ("hello", "stop", "seven")
TRAIN_PITCH = (220, 330, 440, 587)
TEST_PITCH = (247, 277, 370, 392, 494, 523)
VOICES_TRAIN = ("en-us", "en-gb", "en-sc", "en-us+m3")
VOICES_TEST = ("en-gb+f3", "en-us+f2", "en-gb-x-rp", "en-us+m5", "en-029", "en-gb-scotland+m2")


# ---------------------------------------------------------------------------------------------- audio
def make_clips(folder: Path) -> dict[str, dict[str, list[str]]]:
    """{"train"|"test": {label: [wav paths]}} of real generated 1 s clips."""
    out: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    for split, pitches, voices in (("train", TRAIN_PITCH, VOICES_TRAIN), ("test", TEST_PITCH, VOICES_TEST)):
        for label, kind in TONES.items():
            paths = []
            for f in pitches:
                p = folder / f"{label}_{split}_{f}.wav"
                extra = ["tremolo", "6", "80"] if label == "trem" else []
                subprocess.run(["sox", "-R", "-n", "-r", str(RATE), "-b", "16", "-c", "1", str(p), "synth", "1", kind,
                                str(f), *extra, "fade", "0.02", "1", "0.02", "gain", "-n", "-3"], check=True)
                paths.append(str(p))
            out[split][label] = paths
        for w in WORDS:
            paths = []
            for v in voices:
                p = folder / f"{w}_{split}_{v.replace('+', '_')}.wav"
                subprocess.run(["espeak-ng", "-w", str(p), "-v", v, w], check=True, capture_output=True)
                paths.append(str(p))
            out[split][w] = paths
    return out


def load_clip(path: str):
    import numpy as np

    from edge_pace.runtime.audio import load_audio

    x = load_audio(path, RATE)[0]
    if len(x) >= RATE:
        return x[:RATE]
    y = np.zeros(RATE, np.float32)
    s = (RATE - len(x)) // 2
    y[s : s + len(x)] = x
    return y


def stats(times: list[float]) -> dict:
    ms = sorted(1e3 * t for t in times)
    return {"median_ms": statistics.median(ms), "p95_ms": ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))],
            "n": len(ms)}


# ---------------------------------------------------------------------------------------------- workers
def worker_imports() -> dict:
    t0 = time.perf_counter()
    import edge_pace.runtime.learner  # noqa: F401  (numpy, onnxruntime, the runtime)

    t1 = time.perf_counter()
    return {"import_s": t1 - t0, "torch_loaded": "torch" in sys.modules}


def worker_runtime(bundle: str, clips: dict, threads: int, int8: bool, reps: int) -> dict:
    import numpy as np
    import psutil

    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    from edge_pace.runtime.learner import Learner

    t1 = time.perf_counter()
    lrn = Learner.load(bundle, int8=int8, threads=threads, state=False)
    t2 = time.perf_counter()
    rss_loaded = proc.memory_info().rss
    first = load_clip(clips["train"]["sine"][0])
    lrn.learn(first, "sine", sample_rate=RATE)  # working buffers of learn and predict allocated once
    lrn.predict_proba(first, RATE)
    rss_ready = proc.memory_info().rss  # before this script loads its clip set
    lrn.forget("sine")
    train = {k: [load_clip(p) for p in v] for k, v in clips["train"].items()}
    test = {k: [load_clip(p) for p in v] for k, v in clips["test"].items()}
    for label, xs in train.items():
        lrn.learn_many(xs, label, sample_rate=RATE)
    x = test["sine"][0]
    for _ in range(3):
        lrn.embed(x, RATE)
    out = {"threads": threads, "int8": int8, "import_s": t1 - t0, "load_s": t2 - t1, "rss_start_mb": rss0 / 2**20,
           "rss_loaded_mb": rss_loaded / 2**20, "rss_ready_mb": rss_ready / 2**20, "providers": lrn.embedder.providers,
           "D": lrn.feature_dim}
    clips_flat = [c for xs in test.values() for c in xs]

    def timed(fn):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    # embed, learn and predict interleaved on one learner (machine-load drift affects all three alike); the
    # unknown rule's calibration of each new state (paid once, by the first prediction after a learn) is
    # done untimed before the timed predict and timed separately below
    def calibrate() -> None:
        lrn.threshold()
        lrn.thresholds()

    te, tp, tl = [], [], []
    for r in range(reps):
        c = clips_flat[r % len(clips_flat)]
        te.append(timed(lambda: lrn.embed(c, RATE)))
        tl.append(timed(lambda: lrn.learn(c, "bench", sample_rate=RATE)))
        calibrate()
        tp.append(timed(lambda: lrn.predict_proba(c, RATE)))
    lrn.forget("bench")
    # predictions on held-out clips (for int8 agreement and accuracy)
    preds, truth = [], []
    for label, xs in test.items():
        for c in xs:
            s = lrn.predict_proba(c, RATE)
            preds.append(s.top)
            truth.append(label)
    out["predictions"], out["truth"] = preds, truth
    out["state"] = device_state(lrn)
    out["accuracy"] = float(np.mean([p == t for p, t in zip(preds, truth)]))
    n_examples = sum(lrn.counts.values())
    lrn.learn(x, "sine", sample_rate=RATE)
    t = time.perf_counter()
    calibrate()
    recal = time.perf_counter() - t
    z = lrn.embed(x, RATE)
    tu = []
    for _ in range(reps):  # the closed-form update alone on a copy (embedding excluded)
        from edge_pace.runtime.analytic import AnalyticClassifier

        c = AnalyticClassifier(lrn.feature_dim, keep_features=False)
        (c._R, c._P), c.W = lrn.classifier.factors(), lrn.classifier.W
        c.classes, c.counts = list(lrn.classifier.classes), list(lrn.classifier.counts)
        t = time.perf_counter()
        c.learn(z, "sine")
        tu.append(time.perf_counter() - t)
    out.update(embed=stats(te), predict=stats(tp), learn=stats(tl), learn_max_ms=1e3 * max(tl), update_only=stats(tu),
               recalibration_ms=1e3 * recal, recalibration_examples=n_examples + 1,
               rss_warm_mb=proc.memory_info().rss / 2**20)
    # stream real-time factor: 10 s at 16 kHz in 10 ms chunks
    import soxr

    sig = soxr.resample(np.concatenate(clips_flat[:10]), RATE, 16000).astype(np.float32)
    st = lrn.stream(16000)
    t = time.perf_counter()
    for i in range(0, len(sig), 160):
        st.feed(sig[i : i + 160])
    st.flush()
    out["stream_rtf"] = (time.perf_counter() - t) / (len(sig) / 16000)
    out["rss_end_mb"] = proc.memory_info().rss / 2**20
    return out


def device_state(lrn) -> dict:
    """What the device holds for its classifier: each array's shape, dtype and MB, and the saved state's size."""
    from edge_pace.runtime.state import state_to_bytes

    c = lrn.classifier
    R_base, P = c.factors()
    arrays = {"R (R_base)": R_base, "P (pending rows)": P, "W": c.W}
    for label, rows in c.features.items():
        for i, a in enumerate(rows):
            arrays[f"features[{label}][{i}]"] = a
    feats = [a for rows in c.features.values() for a in rows]
    out = {k: {"shape": list(a.shape), "dtype": str(a.dtype), "mb": a.nbytes / 2**20}
           for k, a in arrays.items() if not k.startswith("features")}
    out["features"] = {"rows": int(sum(len(a) for a in feats)), "dtype": str(feats[0].dtype) if feats else None,
                       "mb": sum(a.nbytes for a in feats) / 2**20}
    out["saved_state_mb"] = len(state_to_bytes(c)) / 2**20
    return out


def worker_real(bundle: str, root: str) -> dict:
    """fp32 and int8 learners side by side on the real-recordings benchmark (``edge-pace data real``): each learns
    every training clip of its class (device path: windows, gate, the gamma rule) and predicts every test clip;
    top-1 agreement and accuracy of both."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from latency_bench import learn_all

    from edge_pace.runtime.audio import load_audio
    from edge_pace.runtime.learner import Learner

    def split(name: str) -> dict[str, list]:
        base = Path(root) / name
        return {d.name: [load_audio(str(p), RATE)[0] for p in sorted(d.glob("*.wav"))]
                for d in sorted(base.iterdir()) if d.is_dir()}

    train, test = split("train"), split("test")
    out: dict = {"classes": len(train), "train_clips": sum(map(len, train.values())),
                 "test_clips": sum(map(len, test.values()))}
    for int8 in (False, True):
        lrn = Learner.load(bundle, int8=int8, threads=1, state=False)
        out["skipped_train_clips"] = learn_all(lrn, train)  # entirely below the level gate
        t = time.perf_counter()
        tops = [lrn.predict_proba(x, RATE).top for xs in test.values() for x in xs]
        out["int8" if int8 else "fp32"] = {"top": tops, "predict_s": time.perf_counter() - t, "gamma": lrn.gamma}
    truth = [label for label, xs in test.items() for _ in xs]
    f, q = out["fp32"]["top"], out["int8"]["top"]
    out["agreement"] = float(np.mean([a == b for a, b in zip(f, q)]))
    out["accuracy_fp32"] = float(np.mean([a == b for a, b in zip(f, truth)]))
    out["accuracy_int8"] = float(np.mean([a == b for a, b in zip(q, truth)]))
    return out


def worker_compare(bundle: str, clips: dict, reps: int) -> dict:
    """ORT fp32 vs ORT int8 vs PyTorch eager, one thread, same inputs, interleaved; FLOPs; numpy peak."""
    import numpy as np

    from edge_pace.runtime.bundle import open_bundle
    from edge_pace.runtime.embedder import OnnxEmbedder

    b = open_bundle(bundle)
    m = b.manifest
    fp = OnnxEmbedder(b.read("embedder.onnx"), threads=1, providers=["CPUExecutionProvider"])
    q = OnnxEmbedder(b.read("embedder.int8.onnx"), threads=1, providers=["CPUExecutionProvider"]) \
        if "embedder.int8.onnx" in m["files"] else None
    xs = np.stack([load_clip(p) for v in clips["test"].values() for p in v])
    import torch

    torch.set_num_threads(1)
    from torch.utils.flop_counter import FlopCounterMode

    from edge_pace.export.exporter import Embedder, source_from_backbone

    proj = m.get("projection") or {}
    from edge_pace.method.projection import RandomProjection

    src = source_from_backbone(m["backbone"]["name"], int(proj.get("dim", m["feature_dim"])), int(proj.get("seed", 0)),
                               gamma=1.0, standardize="none")
    if "in_dim" in proj:
        src.projection = RandomProjection.from_description(proj)  # the bundle's own statistics
    model = Embedder(src.backbone, src.projection).eval()
    with torch.inference_mode():
        ref = model(torch.from_numpy(xs[:8])).numpy()
        flops = FlopCounterMode(display=False)
        with flops:
            model(torch.from_numpy(xs[:1]))
        flops_window = flops.get_total_flops()
    parity = float(np.abs(fp(xs[:8]) - ref).max() / np.abs(ref).max())
    t_fp, t_q, t_torch = [], [], []
    for _ in range(3):
        fp(xs[:1]), q(xs[:1]) if q else None
        with torch.inference_mode():
            model(torch.from_numpy(xs[:1]))
    for r in range(reps):
        x = xs[r % len(xs)][None]
        t = time.perf_counter()
        fp(x)
        t_fp.append(time.perf_counter() - t)
        if q is not None:
            t = time.perf_counter()
            q(x)
            t_q.append(time.perf_counter() - t)
        with torch.inference_mode():
            xt = torch.from_numpy(x)
            t = time.perf_counter()
            model(xt)
            t_torch.append(time.perf_counter() - t)
    out = {"ort_fp32": stats(t_fp), "torch_eager": stats(t_torch), "parity_max_rel": parity,
           "flops_per_window": int(flops_window), "window_s": float(m["window_seconds"]), "hop_s": float(m["hop_seconds"])}
    if q is not None:
        out["ort_int8"] = stats(t_q)
        zf, zq = fp(xs), q(xs)
        cos = np.sum(zf * zq, 1) / (np.linalg.norm(zf, axis=1) * np.linalg.norm(zq, axis=1))
        out["int8_cosine_mean"], out["int8_cosine_min"] = float(cos.mean()), float(cos.min())
    # one core's float32 matmul peak (numpy BLAS, OPENBLAS_NUM_THREADS=1 in this worker)
    n = 1024
    a, bm = np.random.default_rng(0).standard_normal((2, n, n)).astype(np.float32)
    best = float("inf")
    for _ in range(10):
        t = time.perf_counter()
        a @ bm
        best = min(best, time.perf_counter() - t)
    out["peak_gflops"] = 2 * n**3 / best / 1e9
    return out


# ---------------------------------------------------------------------------------------------- orchestration
def run_worker(name: str, args: dict, threads: int = 1) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    r = subprocess.run([sys.executable, __file__, "--worker", name, json.dumps(args)], capture_output=True, text=True,
                       env=env, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"worker {name} failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def ensure_bundle(dim: int) -> str:
    cache = Path(os.environ.get("EDGE_PACE_CACHE", Path.home() / ".cache" / "edge-pace")) / "bench-bundles"
    import hashlib

    # the cached bundle is rebuilt whenever the code that shapes it changes
    src = b"".join((ROOT / p).read_bytes() for p in ("edge_pace/backbones/frontends.py", "export/exporter.py",
                                                   "edge_pace/method/projection.py", "runtime/state.py"))
    out = cache / f"aisfx-d{dim}-{hashlib.sha256(src).hexdigest()[:10]}"
    if not (out / "manifest.json").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"exporting a frozen aisfx bundle (D={dim}, int8) to {out} …", file=sys.stderr)
        code = ("import torch; torch.set_num_threads(1)\n"
                "from edge_pace.export.exporter import source_from_backbone, export_bundle\n"
                f"export_bundle(source_from_backbone('aisfx', {dim}), {str(out)!r}, int8=True)")
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    return str(out)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", help="bundle folder (default: export aisfx D=2048 once into the cache)")
    ap.add_argument("--dim", type=int, default=2048, help="D of the bundle exported when --bundle is not given")
    ap.add_argument("--reps", type=int, default=30, help="timed repetitions per figure")
    ap.add_argument("--json", help="also write all figures to this JSON file")
    ap.add_argument("--real", help="the real-recordings benchmark folder (edge-pace data real): int8 vs fp32 "
                    "top-1 agreement and accuracy on it")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("worker_args", nargs="?", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        kw = json.loads(a.worker_args or "{}")
        fn = {"imports": worker_imports, "runtime": worker_runtime, "compare": worker_compare,
              "real": worker_real}[a.worker]
        print(json.dumps(fn(**kw)))
        return

    bundle = a.bundle or ensure_bundle(a.dim)
    tmp = Path(tempfile.mkdtemp(prefix="edge_pace_bench_"))
    t = time.perf_counter()
    clips = make_clips(tmp)
    print(f"clips: {sum(len(v) for v in clips['train'].values())} train, {sum(len(v) for v in clips['test'].values())} "
          f"test ({time.perf_counter() - t:.1f} s); load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
          file=sys.stderr)
    fig: dict = {"bundle": bundle, "load_average": os.getloadavg()[0], "cpus": os.cpu_count(),
                 "sizes_mb": {p.name: p.stat().st_size / 1e6 for p in sorted(Path(bundle).iterdir()) if p.is_file()}}
    fig["imports"] = [run_worker("imports", {}) for _ in range(3)]
    for threads in (1, 2):
        for int8 in (False, True):
            key = f"{'int8' if int8 else 'fp32'}_t{threads}"
            print(f"runtime worker {key} …", file=sys.stderr)
            fig[key] = run_worker("runtime", {"bundle": bundle, "clips": clips, "threads": threads, "int8": int8,
                                              "reps": a.reps}, threads)
    print("compare worker (ORT fp32 / int8 / torch eager, 1 thread) …", file=sys.stderr)
    fig["compare"] = run_worker("compare", {"bundle": bundle, "clips": clips, "reps": a.reps}, 1)
    if a.real:
        print("real worker (fp32 and int8 learners on the real-recordings benchmark) …", file=sys.stderr)
        fig["real"] = run_worker("real", {"bundle": bundle, "root": a.real}, 1)
    report(fig)
    if a.json:
        Path(a.json).write_text(json.dumps(fig, indent=2))


def report(fig: dict) -> None:
    f1, q1, c = fig["fp32_t1"], fig["int8_t1"], fig["compare"]
    D = f1["D"]
    rows = []
    for key in ("fp32_t1", "int8_t1", "fp32_t2", "int8_t2"):
        r = fig[key]
        rows.append(f"| {key:8s} | {r['embed']['median_ms']:6.1f} / {r['embed']['p95_ms']:6.1f} "
                    f"| {r['predict']['median_ms']:6.1f} / {r['predict']['p95_ms']:6.1f} "
                    f"| {r['learn']['median_ms']:6.1f} / {r['learn']['p95_ms']:6.1f} "
                    f"| {r['update_only']['median_ms']:5.1f} | {r['predict']['median_ms'] / 1e3:6.3f} "
                    f"| {r['stream_rtf']:6.3f} | {r['load_s']:5.2f} | {r['rss_ready_mb']:6.1f} | {r['accuracy']:.3f} |")
    imp = statistics.median(x["import_s"] for x in fig["imports"])
    agree = sum(a == b for a, b in zip(f1["predictions"], q1["predictions"])) / len(f1["predictions"])
    ort_vs_torch = c["torch_eager"]["median_ms"] / c["ort_fp32"]["median_ms"]
    int8_speed = c["ort_fp32"]["median_ms"] / c["ort_int8"]["median_ms"] if "ort_int8" in c else float("nan")
    flops = c["flops_per_window"]
    per_audio_s = flops / c["window_s"]  # one 1 s window per second of clip audio
    per_stream_s = flops / c["hop_s"]  # a stream embeds one window per hop
    achieved = flops / (c["ort_fp32"]["median_ms"] / 1e3) / 1e9
    rtf = f1["predict"]["median_ms"] / 1e3
    learn_extra = f1["learn"]["median_ms"] - f1["predict"]["median_ms"]
    print(f"\nedge-pace runtime benchmark — bundle {fig['bundle']} (D={D}), {fig['cpus']} CPUs, load average "
          f"{fig['load_average']:.2f}; latency per 1 s clip (one window), ms median / p95\n")
    print("| run      | embed           | predict         | learn           | update | RTF    | stream | load s | RSS MB | acc   |")
    # RSS: after load + one learn + one predict; acc: top-1 on the 48 held-out clips; stream: RTF of 16 kHz input
    print("|----------|-----------------|-----------------|-----------------|--------|--------|--------|--------|--------|-------|")
    print("\n".join(rows))
    print(f"\nimport edge_pace.runtime.learner (numpy + onnxruntime): {imp:.3f} s (median of 3 fresh processes; "
          f"torch loaded: {any(x['torch_loaded'] for x in fig['imports'])}); cold start Learner.load: "
          f"{f1['load_s']:.2f} s fp32, {q1['load_s']:.2f} s int8 (verifies every checksum)")
    print(f"RSS fp32: {f1['rss_start_mb']:.0f} MB interpreter, {f1['rss_loaded_mb']:.0f} MB after load, "
          f"{f1['rss_ready_mb']:.0f} MB after a first learn + predict ({q1['rss_ready_mb']:.0f} MB int8); "
          f"{f1['rss_end_mb']:.0f} MB at the end of this worker (with its 80 clips in memory); "
          f"R alone is {D * D * 8 / 2**20:.0f} MB")
    print(f"learn: max {f1['learn_max_ms']:.0f} ms (a fold of the pending low-rank rows into R, every "
          f"64 learned windows); the closed-form update alone {f1['update_only']['median_ms']:.1f} ms median")
    print(f"unknown-threshold recalibration after a learn: {f1['recalibration_ms']:.1f} ms for "
          f"{f1['recalibration_examples']} stored examples (paid once by the next prediction)")
    print(f"ONNX Runtime fp32 {c['ort_fp32']['median_ms']:.1f} ms vs PyTorch eager {c['torch_eager']['median_ms']:.1f} ms "
          f"(1 thread, same model, parity max rel {c['parity_max_rel']:.1e}): {ort_vs_torch:.2f}x")
    if "ort_int8" in c:
        print(f"int8 {c['ort_int8']['median_ms']:.1f} ms vs fp32 {c['ort_fp32']['median_ms']:.1f} ms: {int8_speed:.2f}x; "
              f"top-1 agreement {agree:.3f} on {len(f1['predictions'])} held-out clips (each learner trained on its own "
              f"features); accuracy fp32 {f1['accuracy']:.3f}, int8 {q1['accuracy']:.3f}; feature cosine mean "
              f"{c['int8_cosine_mean']:.4f}, min {c['int8_cosine_min']:.4f}")
    print(f"backbone+projection FLOPs: {flops / 1e9:.2f} GFLOP per 1 s window (torch FlopCounterMode: conv, matmul) = "
          f"{per_audio_s / 1e9:.2f} GFLOP per second of clip audio, {per_stream_s / 1e9:.2f} GFLOP per second of stream "
          f"(hop {c['hop_s']} s); achieved {achieved:.1f} GFLOP/s vs one core's numpy float32 matmul peak "
          f"{c['peak_gflops']:.1f} GFLOP/s = {achieved / c['peak_gflops']:.0%}")
    sizes = fig["sizes_mb"]
    print("bundle files: " + ", ".join(f"{k} {v:.1f} MB" for k, v in sizes.items()))
    st = f1["state"]
    print("device classifier state after the benchmark's classes (" + f"{st['features']['rows']} stored windows): "
          + ", ".join(f"{k} {v['shape']} {v['dtype']} {v['mb']:.2f} MB" for k, v in st.items()
                      if isinstance(v, dict) and "shape" in v)
          + f", features {st['features']['dtype']} {st['features']['mb']:.2f} MB; saved state "
          f"{st['saved_state_mb']:.1f} MB")
    real = fig.get("real")
    if real:
        print(f"real recordings ({real['classes']} classes, {real['train_clips']} train / {real['test_clips']} test "
              f"clips, each learner trained on its own features): int8 top-1 agreement {real['agreement']:.1%}, "
              f"accuracy fp32 {real['accuracy_fp32']:.1%}, int8 {real['accuracy_int8']:.1%}")
    f_ms, q_ms = c["ort_fp32"]["median_ms"], c.get("ort_int8", {}).get("median_ms", float("nan"))
    print("\ntargets (one core):")
    targets = [
        ("fp32 embed <= 10 ms per 1 s window", f_ms <= 10, f"{f_ms:.1f} ms"),
        ("int8 embed <= 4.5 ms per 1 s window", q_ms <= 4.5, f"{q_ms:.1f} ms"),
        ("embedder.onnx <= 22 MB", sizes.get("embedder.onnx", 1e9) <= 22, f"{sizes.get('embedder.onnx', 0):.1f} MB"),
        ("embedder.int8.onnx <= 8 MB", sizes.get("embedder.int8.onnx", 1e9) <= 8,
         f"{sizes.get('embedder.int8.onnx', 0):.1f} MB"),
        ("RSS <= 120 MB (fp32, bundle loaded)", f1["rss_ready_mb"] <= 120, f"{f1['rss_ready_mb']:.0f} MB"),
        ("RSS <= 120 MB (int8, bundle loaded)", q1["rss_ready_mb"] <= 120, f"{q1['rss_ready_mb']:.0f} MB"),
        (f"RTF <= 0.05 fp32 (predict of 1 s)", rtf <= 0.05, f"{rtf:.3f}"),
        (f"learn <= predict + 10 ms at D={D}", learn_extra <= 10, f"+{learn_extra:.1f} ms"),
        ("ORT >= 1.2x torch eager", ort_vs_torch >= 1.2, f"{ort_vs_torch:.2f}x"),
        ("int8 >= 1.5x fp32", int8_speed >= 1.5, f"{int8_speed:.2f}x"),
        ("int8 top-1 agreement >= 98 % (tones)", agree >= 0.98, f"{agree:.1%}"),
        *([("int8 top-1 agreement >= 98 % (real)", real["agreement"] >= 0.98, f"{real['agreement']:.1%}")]
          if real else []),
        ("import <= 0.5 s", imp <= 0.5, f"{imp:.3f} s"),
    ]
    for name, ok, val in targets:
        print(f"  {verdict(ok):6s}  {name:34s} {val}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
