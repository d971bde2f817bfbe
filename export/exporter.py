"""``edge-pace export``: merged backbone + frontend + random projection -> one verified ONNX embedder,
plus the classifier state and a manifest with checksums (runtime/bundle.py defines the format).

Export verifies before it writes: ONNX Runtime and PyTorch run on real clips of several lengths and
batch sizes, and the bundle is refused when the relative feature error exceeds the tolerance.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_pace import __version__, backbones
from edge_pace.runtime import bundle as B
from edge_pace.runtime.analytic import AnalyticClassifier
from edge_pace.runtime.state import state_to_bytes

OPSET = 18
PARITY_TOLERANCE = 1e-4  # max |onnx - torch| / max |torch| over all parity cases
MAX_SECONDS = 3600  # the dynamic length's upper bound: one hour at the backbone's rate


class ExportError(RuntimeError):
    pass


class Embedder(nn.Module):
    """waveform [B, S] -> z = ReLU(backbone(wave) W_proj) [B, D]: the whole device-side feature path."""

    def __init__(self, backbone: nn.Module, projection: nn.Module) -> None:
        super().__init__()
        self.backbone, self.projection = backbone, projection

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.projection(self.backbone(wave))


@dataclass
class ExportSource:
    """What export needs from training: the adapted model, projection, classifier and settings; a frozen export
    also keeps its calibration audio (clips [n, S], labels or None, groups), which the int8 calibration reuses."""

    backbone: nn.Module
    projection: nn.Module
    classifier: AnalyticClassifier
    config: dict
    calibration: tuple[np.ndarray, list[str] | None, list[int]] | None = None


def source_from_checkpoint(ckpt: str | Path, log=print) -> ExportSource:
    """What a PACE checkpoint exports: its backbone with every LoRA merged, projection, classifier and settings. A
    multi-branch checkpoint (PACE adapted the first branch, the others frozen; edge_pace/method/pace.py) exports
    as one multi-branch embedder; each branch is checked on its own (ONNX parity, CPU cost) as in a frozen export,
    and the manifest's ``branches`` also says which branch PACE trained and whether it kept the adaptation."""
    from edge_pace.backbones.branches import MultiBranch
    from edge_pace.method.checkpoint import load_adapted_model

    backbone, projection, classifier, config = load_adapted_model(ckpt)
    if isinstance(backbone, MultiBranch):
        from edge_pace.export.branches import branch_report

        log(f"checking each branch of {config.get('backbone')} (ONNX parity, CPU cost)")
        report = branch_report(backbone, to_onnx_bytes, parity_inputs(None, backbone.sample_rate,
                                                                      backbone.min_samples))
        trained = config.get("branches") or {}
        config = {**config, "branches": {n: {**r, **{k: v for k, v in trained.get(n, {}).items()
                                                     if k in ("trainable", "adapted", "conditioning")}}
                                         for n, r in report.items()}}
    return ExportSource(backbone, projection, classifier, config)


def source_from_backbone(name: str = backbones.DEFAULT, dim: int = 2048, seed: int = 0, gamma: float | None = None,
                         weights: str | None = None, pretrained: bool = True,
                         calibration: tuple[np.ndarray, list[str] | None, list[int]] | None = None,
                         standardize: str = "scalar", branch_weights: str | dict | None = None,
                         log=print) -> ExportSource:
    """A frozen-backbone bundle (no adaptation): every class is learned on the device (ACIL-style).

    ``calibration`` = (clips [n, S] at the backbone's rate, labels or None, clip groups), default: the
    rendered default set (export/calibration.py). Its embeddings give the projection's standardisation
    (``standardize``: "scalar", "dims" or "none", edge_pace/method/projection.py) and, when labelled, the bundle's
    gamma prior by the device's own rule (leave-one-clip-out,
    runtime/gamma.py); unlabelled clips give statistics only and the prior comes from the default set.
    ``gamma`` fixes the prior instead. A multi-branch backbone (edge_pace/backbones/branches.py) is conditioned
    per branch; ``branch_weights``: None (the measured defaults), a dict {branch: weight}, or "loo" (chosen by
    leave-one-clip-out on the labelled calibration clips, ``choose_weights``)."""
    from edge_pace.backbones.branches import MultiBranch, branch_stats, set_weights
    from edge_pace.export.branches import branch_report
    from edge_pace.export.calibration import default_calibration
    from edge_pace.method.projection import RandomProjection, embedding_stats
    from edge_pace.runtime.gamma import select_gamma

    backbone, spec = backbones.load(name, weights, pretrained=pretrained)
    sr = spec.sample_rate
    branched = isinstance(backbone, MultiBranch)

    def embed(waves: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.vstack([backbone(torch.from_numpy(np.ascontiguousarray(waves[i:i + 32]))).numpy()
                              for i in range(0, len(waves), 32)])

    if standardize not in ("scalar", "dims", "none"):
        raise ValueError(f"standardize must be 'scalar', 'dims' or 'none', got {standardize!r}")
    if calibration is None and (standardize != "none" or gamma is None):
        log("rendering the default calibration audio (export/calibration.py)")
        calibration = default_calibration(sr)
    mean = scale = labels = None
    cal = {"clips": 0}
    if calibration is not None:
        waves, labels, groups = calibration
        emb = embed(waves)
        cal = {"clips": int(len(waves)), "labelled": labels is not None}
        if branched and branch_weights is not None:
            cal["branch_weights"] = set_weights(backbone, branch_weights, emb, labels, groups, dim, seed)
        if standardize != "none":  # a multi-branch backbone: per branch, times its weight (backbones/branches.py)
            mean, scale = branch_stats(backbone, emb, mode=standardize) if branched else embedding_stats(emb, standardize)
    projection = RandomProjection(backbone.embed_dim, dim, seed, mean, scale)
    if gamma is None:
        if labels is None:
            waves, labels, groups = default_calibration(sr)
            emb = embed(waves)
        found = select_gamma(projection.numpy(emb), labels, groups)
        gamma = found.gamma
        cal["gamma_search"] = {k: v for k, v in found.as_dict().items() if k not in ("grid", "mse", "accuracy")}
    config = {"backbone": name, "projection": projection.describe(), "window_seconds": spec.window_seconds,
              "hop_seconds": spec.hop_seconds, "pace": None, "adapted": False, "gamma_prior": float(gamma),
              "calibration": cal}
    if branched:  # per-branch parity (each branch exported alone), cost, weight, licence: the manifest's "branches"
        log(f"checking each branch of {name} (ONNX parity, CPU cost)")
        cases = parity_inputs(calibration[0] if calibration is not None else None, sr, backbone.min_samples)
        config["branches"] = branch_report(backbone, to_onnx_bytes, cases, emb if calibration is not None else None)
    return ExportSource(backbone, projection, AnalyticClassifier(dim, float(gamma)), config, calibration)


def to_onnx_bytes(embedder: Embedder, min_samples: int, sample_rate: int) -> bytes:
    """Dynamo export with dynamic batch and length, checked with onnx.checker."""
    import onnx

    import logging

    # torch.onnx warns about every torchvision op it cannot register; torchvision is not used here
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    embedder = embedder.eval()
    example = torch.zeros(2, max(min_samples, sample_rate))
    example[:, ::7] = 0.1  # non-silent example input
    batch = torch.export.Dim("batch", min=1, max=4096)
    samples = torch.export.Dim("samples", min=min_samples, max=MAX_SECONDS * sample_rate)
    with torch.no_grad():
        program = torch.onnx.export(embedder, (example,), dynamo=True, opset_version=OPSET, verbose=False,
                                    input_names=["wave"], output_names=["z"],
                                    dynamic_shapes={"wave": {0: batch, 1: samples}})
    model = program.model_proto
    onnx.checker.check_model(model)
    return model.SerializeToString()


def add_metadata(onnx_bytes: bytes, props: dict[str, str]) -> bytes:
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, str(v)
    return model.SerializeToString()


def parity_inputs(clips: np.ndarray | None, sample_rate: int, min_samples: int, seed: int = 0) -> list[np.ndarray]:
    """Batches of several lengths and sizes cut from real clips (or, lacking clips, from deterministic
    test signals: chirp, tones and noise)."""
    rng = np.random.default_rng(seed)
    if clips is None or len(clips) == 0:
        t = np.arange(int(3 * sample_rate)) / sample_rate
        clips = np.stack([0.5 * np.sin(2 * np.pi * (200 + 2000 * t) * t),
                          0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t)),
                          0.2 * rng.standard_normal(len(t))]).astype(np.float32)
    lengths = [min_samples, sample_rate, int(2.5 * sample_rate)]
    cases = []
    for n, b in zip(lengths, (1, 3, 2)):
        rows = [np.resize(clips[(i + n) % len(clips)], n) for i in range(b)]  # tiles short clips
        cases.append(np.stack(rows).astype(np.float32))
    return cases


def check_parity(embedder: Embedder, onnx_bytes: bytes, cases: list[np.ndarray],
                 tolerance: float = PARITY_TOLERANCE) -> dict:
    """Run ONNX Runtime and PyTorch on each case; raise ExportError naming the failing cases."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    report, worst_abs, worst_rel, failed = [], 0.0, 0.0, []
    for x in cases:
        with torch.no_grad():
            ref = embedder(torch.from_numpy(x)).numpy()
        out = sess.run(None, {"wave": x})[0]
        if out.shape != ref.shape:
            raise ExportError(f"ONNX output shape {out.shape} != torch {ref.shape} for input {x.shape}")
        err = float(np.abs(out - ref).max())
        rel = err / max(float(np.abs(ref).max()), 1e-12)
        report.append({"batch": x.shape[0], "samples": x.shape[1], "max_abs": err, "max_rel": rel})
        worst_abs, worst_rel = max(worst_abs, err), max(worst_rel, rel)
        if not rel <= tolerance:
            failed.append(f"batch {x.shape[0]} x {x.shape[1]} samples: relative error {rel:.2e}")
    if failed:
        raise ExportError(f"ONNX parity check failed (tolerance {tolerance:g}): " + "; ".join(failed)
                          + ". The bundle was not written.")
    return {"max_abs": worst_abs, "max_rel": worst_rel, "tolerance": tolerance, "cases": report}


def frontend_nodes(model_bytes: bytes, frontend: nn.Module) -> list[str]:
    """Names of the ONNX nodes that use the frontend's constant kernels (kept in float for int8)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    shapes = {tuple(b.shape) for b in frontend.buffers()}
    consts = {i.name for i in model.graph.initializer if tuple(numpy_helper.to_array(i).shape) in shapes}
    consts |= {n.output[0] for n in model.graph.node if n.op_type == "Constant" and any(
        a.name == "value" and tuple(a.t.dims) in shapes for a in n.attribute)}
    return [n.name for n in model.graph.node if n.op_type in ("Conv", "MatMul") and consts & set(n.input)]


def first_backbone_conv(model_bytes: bytes, frontend_names: list[str]) -> list[str]:
    """The first Conv after the frontend: its input is the log-mel itself, which int8 resolves poorly."""
    import onnx

    convs = [n.name for n in onnx.load_from_string(model_bytes).graph.node if n.op_type == "Conv"]
    rest = [c for c in convs if c not in frontend_names]
    return rest[:1]


def quantize_int8(model_bytes: bytes, exclude: list[str], calibration: np.ndarray) -> bytes:
    """Static int8 quantisation (QDQ, per-channel weights) with onnxruntime's tools, calibrated on real clips.

    Only Conv and MatMul are quantised: quantising the frontend's element-wise ops (abs, max, log, divide)
    destroyed the features (cosine 0.79 to fp32 on aisfx), while Conv/MatMul alone keep ~0.998.
    Dynamic quantisation (ConvInteger) was measured 3x *slower* than fp32 on this CPU, hence static.
    """
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(calibration[i : i + 1] for i in range(len(calibration)))

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {"wave": row}

    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime's quantiser logs a generic pre-processing hint on the root logger
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model_bytes)
        try:
            quantize_static(str(src), str(dst), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv", "MatMul"], nodes_to_exclude=exclude)
        finally:
            root.setLevel(level)
        return dst.read_bytes()


def compare_int8(fp32: bytes, int8: bytes, clips: np.ndarray, classifier: AnalyticClassifier,
                 labels: list[str] | None = None) -> dict:
    """Top-1 agreement of int8 with fp32 (and accuracy of both when labels are given) on held-out clips."""
    import onnxruntime as ort

    z = {}
    for name, data in (("fp32", fp32), ("int8", int8)):
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        z[name] = np.vstack([sess.run(None, {"wave": clips[i : i + 16]})[0] for i in range(0, len(clips), 16)])
    cos = np.sum(z["fp32"] * z["int8"], 1) / (np.linalg.norm(z["fp32"], axis=1) * np.linalg.norm(z["int8"], axis=1) + 1e-12)
    out = {"clips": int(len(clips)), "mean_cosine": float(cos.mean())}
    if len(classifier.classes) >= 2:
        p32, p8 = classifier.predict(z["fp32"]), classifier.predict(z["int8"])
        out["top1_agreement"] = float(np.mean([a == b for a, b in zip(p32, p8)]))
        if labels is not None:
            out["accuracy_fp32"] = float(np.mean([a == b for a, b in zip(p32, labels)]))
            out["accuracy_int8"] = float(np.mean([a == b for a, b in zip(p8, labels)]))
            out["accuracy_change"] = out["accuracy_int8"] - out["accuracy_fp32"]
    return out


def export_bundle(source: ExportSource, out: str | Path, int8: bool = False, single_file: bool = False,
                  clips: np.ndarray | None = None, clip_labels: list[str] | None = None,
                  tolerance: float = PARITY_TOLERANCE, log=print) -> Path:
    """Build, verify and write a bundle. ``clips`` ([n, S] float32 at the backbone's rate) are real audio
    used for parity and int8 figures; ``clip_labels`` make the int8 accuracy change measurable."""
    t0 = time.perf_counter()
    backbone = source.backbone.eval()
    embedder = Embedder(backbone, source.projection).eval()
    sr, min_samples = int(backbone.sample_rate), int(backbone.min_samples)
    log(f"exporting {source.config.get('backbone')} embedder to ONNX (opset {OPSET}, dynamic batch and length)")
    fp32 = to_onnx_bytes(embedder, min_samples, sr)
    log("checking ONNX Runtime against PyTorch on several lengths and batch sizes")
    parity = check_parity(embedder, fp32, parity_inputs(clips, sr, min_samples), tolerance)
    cfg = source.config
    spec = backbones.spec_of(backbone)
    win = float(cfg.get("window_seconds", spec.window_seconds))
    hop = float(cfg.get("hop_seconds", spec.hop_seconds))
    dim = int(source.projection.out_dim)
    essentials = {"edge_pace.format_version": B.BUNDLE_VERSION, "edge_pace.sample_rate": sr,
                  "edge_pace.feature_dim": dim, "edge_pace.window_seconds": win, "edge_pace.hop_seconds": hop,
                  "edge_pace.min_samples": min_samples, "edge_pace.backbone": cfg.get("backbone"),
                  "edge_pace.input": "wave: float32 [batch, samples], mono, peak-normalised inside",
                  "edge_pace.output": "z: float32 [batch, feature_dim], ReLU(random projection of the (standardised) embedding)"}
    files = {B.EMBEDDER: add_metadata(fp32, essentials)}
    quant = None
    if int8:
        log("quantising to int8 (static QDQ, calibrated on real clips) and measuring agreement")
        front = frontend_nodes(fp32, backbone.frontend)
        calib = clips
        if calib is None or not len(calib):  # no clips given: the frozen export's calibration audio, else the default
            if source.calibration is not None:
                calib, clip_labels, _ = source.calibration
            else:
                from edge_pace.export.calibration import default_calibration

                log("rendering the default calibration audio for the int8 calibration (export/calibration.py)")
                calib, clip_labels, _ = default_calibration(sr)
            spread = np.linspace(0, len(calib) - 1, min(len(calib), 128)).astype(int)  # every class, 128 clips
            calib = calib[spread]
            clip_labels = None if clip_labels is None else [clip_labels[i] for i in spread]
        # calibrate on even clips, measure on the odd ones (held out from calibration) when there are enough
        held = np.arange(len(calib)) % 2 == 1 if len(calib) >= 8 else np.ones(len(calib), bool)
        even = calib[~held] if len(calib) >= 8 else calib
        cal = even[np.linspace(0, len(even) - 1, min(len(even), 32)).astype(int)]  # 32 clips spread over classes
        q = quantize_int8(fp32, front + first_backbone_conv(fp32, front), cal)
        files[B.EMBEDDER_INT8] = add_metadata(q, {**essentials, "edge_pace.quantization": "static int8 QDQ"})
        labels = [l for l, h in zip(clip_labels, held) if h] if clip_labels is not None else None
        quant = compare_int8(fp32, q, calib[held], source.classifier, labels)
        quant["calibration_clips"] = int(len(cal))
    files[B.CLASSIFIER] = state_to_bytes(source.classifier)
    info = backbones.BACKBONES.get(str(cfg.get("backbone")))
    manifest = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__, "opset": OPSET,
        "sample_rate": sr, "window_seconds": win, "hop_seconds": hop, "min_samples": min_samples,
        "feature_dim": dim, "labels": list(source.classifier.classes), "gamma": source.classifier.gamma,
        "gamma_prior": float(cfg.get("gamma_prior", source.classifier.gamma)), "calibration": cfg.get("calibration"),
        "backbone": {"name": cfg.get("backbone"), "licence": info.licence if info else None,
                     "embed_dim": int(backbone.embed_dim)},
        "projection": source.projection.describe() if hasattr(source.projection, "describe") else cfg.get("projection"), "pace": cfg.get("pace"), "adapted": cfg.get("adapted", True),
        "adaptation": cfg.get("adaptation"), "branches": cfg.get("branches"),
        "parity": parity, "quantization": quant, "export_seconds": round(time.perf_counter() - t0, 2),
    }
    path = B.write_bundle(out, files, manifest, single_file=single_file)
    log(f"bundle written to {path} ({sum(len(d) for d in files.values()) / 1e6:.1f} MB, parity max rel "
        f"{parity['max_rel']:.1e}, {time.perf_counter() - t0:.1f} s)")
    return path


def _short_projection(p: dict | None) -> dict | None:
    """The projection description without its per-dimension statistics (summarised)."""
    if not p or "scale" not in p:
        return p
    scale = np.asarray(p["scale"], dtype=np.float64)
    return {**{k: v for k, v in p.items() if k not in ("mean", "scale")},
            "scale": f"{scale.min():.4g}..{scale.max():.4g}", "mean": f"|max| {np.abs(p['mean']).max():.4g}"}


def _short_adaptation(m: dict) -> str:
    """Whether the bundle's backbone is adapted, and the do-no-harm reason (edge_pace/method/harm.py)."""
    a = m.get("adaptation")
    if not a:
        return f"adapted {m.get('adapted')}"
    return f"adapted {m.get('adapted')}: {a.get('reason')}"


def state_summary(path: Path) -> str:
    """What a classifier state file holds (from its safetensors header only): R, W, stored features."""
    try:
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    except (OSError, ValueError) as exc:
        return f"unreadable ({exc})"
    header.pop("__metadata__", None)
    size = {"F64": 8, "F32": 4, "F16": 2, "I64": 8, "U8": 1}

    def mb(info: dict) -> float:
        return float(np.prod(info["shape"])) * size.get(info["dtype"], 4) / 2**20

    parts = [f"{k} {info['shape']} {info['dtype']} {mb(info):.2f} MB" for k, info in header.items()
             if k in ("R", "W")]
    if "R" not in header:
        parts.insert(0, "R = I / gamma (not stored)")
    feats = [v for k, v in header.items() if k.startswith("features.")]
    if feats:
        parts.append(f"features {sum(v['shape'][0] for v in feats)} rows {feats[0]['dtype']} "
                     f"{sum(mb(v) for v in feats):.2f} MB")
    return f"{path.stat().st_size / 1e6:.2f} MB: " + ", ".join(parts)


def describe(bundle_path: str | Path) -> str:
    """Readable summary of a bundle's manifest, with checksum verification (for ``edge-pace info``)."""
    bundle = B.open_bundle(bundle_path, verify=False)
    m = bundle.manifest
    problems = B.verify_bundle(bundle)
    lines = [f"bundle       {bundle.path}  (format {m['format']} v{m['format_version']}, package {m.get('package_version')})",
             f"created      {m.get('created')}",
             f"backbone     {json.dumps(m.get('backbone'))}",
             f"audio        {m['sample_rate']} Hz, window {m['window_seconds']} s, hop {m['hop_seconds']} s, "
             f"min {m['min_samples']} samples",
             f"features     {m['feature_dim']} (projection {json.dumps(_short_projection(m.get('projection')))})",
             f"gamma        {m.get('gamma')} (device prior {m.get('gamma_prior', m.get('gamma'))}; re-chosen on the "
             f"device by leave-one-clip-out; calibration {json.dumps(m.get('calibration'))})",
             f"labels       {len(m['labels'])}: {', '.join(m['labels'][:20])}{' …' if len(m['labels']) > 20 else ''}",
             f"parity       max abs {m['parity']['max_abs']:.2e}, max rel {m['parity']['max_rel']:.2e} "
             f"(tolerance {m['parity']['tolerance']:g})" if m.get("parity") else "parity       -",
             f"int8         {json.dumps(m.get('quantization'))}",
             f"adaptation   {_short_adaptation(m)}"]
    for name, b in (m.get("branches") or {}).items():
        lines.append(f"branch       {name}: dims {b.get('dims')}, {b.get('rate')} Hz, weight {b.get('weight')}, "
                     f"{b.get('cpu_ms_per_second')} ms per 1 s ({b.get('cost_vs_first')}x), parity max rel "
                     f"{(b.get('parity') or {}).get('max_rel', float('nan')):.1e}, licence {b.get('licence')}"
                     + ("" if "trainable" not in b else
                        f", {'PACE-trained, adapted ' + str(b.get('adapted')) if b['trainable'] else 'frozen'}"))
    for name, f in m["files"].items():
        lines.append(f"file         {name:24s} {f['bytes'] / 1e6:8.2f} MB  sha256 {f['sha256'][:16]}…")
    if not bundle.is_zip:
        lines.append(f"classifier   {state_summary(bundle.path / B.CLASSIFIER)}")
    lines.append("checksums    OK" if not problems else "checksums    FAILED: " + "; ".join(problems))
    state = bundle.state_path()
    if state.is_file():
        lines.append(f"device state {state.name}  {state_summary(state)}")
    return "\n".join(lines)


__all__ = ["Embedder", "ExportSource", "ExportError", "export_bundle", "source_from_checkpoint",
           "source_from_backbone", "describe", "check_parity", "to_onnx_bytes", "quantize_int8"]
