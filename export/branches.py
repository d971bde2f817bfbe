"""Export-side checks of a multi-branch embedder (edge_pace/backbones/branches.py): each branch exported alone
(its in-graph resampling included) and held against torch, and its CPU cost per 1 s window on one core; what the
manifest lists under ``branches``."""

from __future__ import annotations

import time

import numpy as np
import torch

from edge_pace.backbones.branches import MultiBranch, branch_rms


def branch_report(model: MultiBranch, to_onnx, cases: list[np.ndarray], emb: np.ndarray | None = None,
                  tolerance: float = 1e-4, reps: int = 5) -> dict:
    """Per branch: ONNX export (``to_onnx(module, min_samples, rate) -> bytes``) of (resampling + model) alone,
    its parity with torch on ``cases`` (raises
    ValueError above ``tolerance``, relative to max |torch|), its CPU time per 1 s window (onnxruntime, one thread,
    batch 1, median of ``reps``), licence and weight (and the calibration RMS when ``emb`` is given)."""
    import onnxruntime as ort

    from edge_pace import backbones

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    rms = branch_rms(model, emb) if emb is not None else {}
    out, failed = {}, []
    one = np.ascontiguousarray(np.resize(cases[1][0] if len(cases) > 1 else cases[0][0], model.sample_rate)[None])
    for name, b, s in zip(model.names, model.branches, model.slices().values()):
        sess = ort.InferenceSession(to_onnx(b.eval(), b.min_samples, model.sample_rate), opts,
                                    providers=["CPUExecutionProvider"])
        worst_abs = worst_rel = 0.0
        for x in cases:
            with torch.no_grad():
                ref = b(torch.from_numpy(x)).numpy()
            got = sess.run(None, {"wave": x})[0]
            err = float(np.abs(got - ref).max())
            worst_abs, worst_rel = max(worst_abs, err), max(worst_rel, err / max(float(np.abs(ref).max()), 1e-12))
        if not worst_rel <= tolerance:
            failed.append(f"{name}: relative error {worst_rel:.2e}")
        sess.run(None, {"wave": one})
        times = []
        for _ in range(reps):
            t = time.process_time()
            sess.run(None, {"wave": one})
            times.append(time.process_time() - t)
        spec = backbones.BACKBONES.get(name)
        out[name] = {"dims": [s.start, s.stop], "rate": int(b.model.sample_rate),
                     "resampling": (f"in graph: windowed-sinc polyphase Conv1d {model.sample_rate} -> "
                                    f"{b.model.sample_rate} Hz (torchaudio's kernel)") if b.resample is not None else None,
                     "weight": model.weights[name], "rms": rms.get(name),
                     "conditioning": "the bundle's" if name == model.names[0] else model.conditioning,
                     "licence": spec.licence if spec else None, "credit": spec.credit if spec else None,
                     "parity": {"max_abs": worst_abs, "max_rel": worst_rel, "tolerance": tolerance},
                     "cpu_ms_per_second": round(1000 * float(np.median(times)), 3)}
    if failed:
        raise ValueError("per-branch ONNX parity failed: " + "; ".join(failed))
    base = out[model.names[0]]["cpu_ms_per_second"]
    for v in out.values():
        v["cost_vs_first"] = round(v["cpu_ms_per_second"] / max(base, 1e-9), 3)
    return out



__all__ = ["branch_report"]
