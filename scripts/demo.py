"""The main job, end to end, on the shipped default backbone and offline data (CPU is enough).

1. build a small offline benchmark with real synthesizers (`edge-pace data synth`),
2. adapt the default backbone with PACE on session 0 (improved FSA + analytic classifier) -> checkpoint,
3. export a verified bundle (ONNX embedder, fp32 + int8, classifier, manifest),
4. on the device side (runtime only: numpy + onnxruntime), learn every later session's classes from audio in
   closed form, printing accuracy on all classes seen so far after each session, and plot the curve.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    ap.add_argument("--benchmark", default="environment", help="keywords | environment | speakers | instruments")
    ap.add_argument("--scale", type=float, default=0.4, help="clips per class relative to the default benchmark")
    ap.add_argument("--sessions", type=int, default=4, help="number of sessions (session 0 has half the classes)")
    ap.add_argument("--e0", type=int, default=1, help="FSA epochs (the paper uses 1-30 depending on the dataset)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t_start = time.perf_counter()

    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    from edge_pace.backbones import DEFAULT as BACKBONE
    from edge_pace.backbones import get_spec
    from edge_pace.data.loaders import load_dataset, read_clips
    from edge_pace.data.synth import synthesize
    from edge_pace.evaluation.metrics import cil_metrics, plot_curve, save_metrics_json
    from edge_pace.evaluation.protocol import make_sessions
    from edge_pace.export.exporter import export_bundle, source_from_checkpoint
    from edge_pace.method.checkpoint import save_checkpoint
    from edge_pace.method.config import PaceConfig
    from edge_pace.method.pace import PaceLearner
    from edge_pace.method.sessions import run_sessions
    from edge_pace.runtime.learner import Learner

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/4] synthesising the '{args.benchmark}' benchmark (scale {args.scale}) into {out / 'data'}")
    synthesize(out / "data", [args.benchmark], scale=args.scale, seed=args.seed)
    clips = load_dataset(f"synth:{args.benchmark}", out / "data")
    sessions = make_sessions(clips, base_fraction=0.5, n_sessions=args.sessions, seed=args.seed)
    print("      sessions: " + " | ".join(f"{len(s.classes)} classes" for s in sessions))

    sr = get_spec(BACKBONE).sample_rate
    s0 = sessions[0]
    waves, kept = read_clips(s0.train, sr, duration=1.0)
    print(f"[2/4] PACE session 0 on the server side: {len(kept)} clips, {len(s0.classes)} classes, e0={args.e0}")
    t = time.perf_counter()
    learner = PaceLearner(BACKBONE, PaceConfig(e0=args.e0, seed=args.seed, msa_epochs=args.e0))
    m0 = learner.fit_session(0, waves, [c.label for c in kept])
    ckpt = save_checkpoint(learner, out / "ckpt")
    print(f"      L_tune = block {learner.tune_start + 1 if learner.tune_start is not None else '-'}, gamma = "
          f"{m0.get('gamma')}, {time.perf_counter() - t:.1f} s -> checkpoint {ckpt}")

    test0, test0_kept = read_clips(s0.test, sr, duration=1.0)
    server_pred = learner.predict(test0)
    print("[3/4] exporting the bundle (ONNX embedder with the frontend inside, int8 too, parity-checked)")
    bundle = export_bundle(source_from_checkpoint(ckpt), out / "bundle", int8=True, clips=test0,
                           clip_labels=[c.label for c in test0_kept], log=lambda m: print("      " + m))

    print("[4/4] the device learns the later sessions in closed form (runtime: numpy + onnxruntime)")
    device = Learner.load(bundle, threads=2)
    device_pred = [device.predict_proba(x, sample_rate=sr).top for x in test0]
    agree = np.mean([a == b for a, b in zip(server_pred, device_pred)])
    print(f"      session 0 predictions, device vs server model: {100 * agree:.1f}% identical")

    def learn(s):  # session 0 is in the bundle; the device learns the later ones (returns the learning time)
        if s.index > 0:
            w, k = read_clips(s.train, sr, duration=1.0)
            t = time.perf_counter()
            device.learn_many(w, [c.label for c in k], sample_rate=sr)
            return time.perf_counter() - t

    def evaluate(s):
        tw, tk = read_clips(s.test, sr, duration=1.0)
        return [device.predict_proba(x, sample_rate=sr).top for x in tw], [c.label for c in tk]

    def report(r) -> None:
        extra = f", learned {len(sessions[r.index].train)} clips in {r.metrics:.2f} s" if r.index > 0 else ""
        print(f"      after session {r.index}: {r.seen} classes, accuracy {100 * r.accuracy:.1f}%{extra}")

    runs = run_sessions(sessions, learn, evaluate, after=report)
    acc, seen_counts = [r.accuracy for r in runs], [r.seen for r in runs]
    device.save()
    metrics = cil_metrics(acc)
    curve = plot_curve(out / "accuracy_per_session.png", {"PACE (device, closed form)": acc}, x=seen_counts,
                       title=f"edge-pace demo: {args.benchmark}", xlabel="classes seen")
    save_metrics_json(out / "metrics.json", metrics, accuracy_per_session=acc, classes_seen=seen_counts,
                      benchmark=args.benchmark, scale=args.scale, e0=args.e0, seed=args.seed,
                      device_vs_server_agreement=float(agree))
    print(f"\naverage incremental accuracy {100 * metrics.average_incremental_accuracy:.1f}%, last {100 * metrics.last_accuracy:.1f}%"
          f"  ({time.perf_counter() - t_start:.0f} s in all)")
    print(f"bundle: {bundle}\nplot:   {curve}\nmetrics: {out / 'metrics.json'}")
    print(json.dumps({"bundle": str(bundle), "plot": str(curve)}))


if __name__ == "__main__":
    main()
