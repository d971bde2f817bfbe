"""The on-device learner: ONNX Runtime embedder + the analytic classifier, numpy only (never torch).

    from edge_pace.runtime.learner import Learner
    lrn = Learner.load("bundle/")                      # verifies checksums, loads learned state if any
    lrn.learn(wave, "doorbell", sample_rate=16000)     # closed-form recursive update, new label = new class
    lrn.learn("knock.wav", "knock")                    # files are decoded with soundfile
    label, score = lrn.predict(wave, sample_rate=16000)  # label may be "unknown"
    probs = lrn.predict_proba(wave, sample_rate=16000)   # dict label -> probability, .unknown, .ridge, ...
    lrn.forget("knock"); lrn.save()                    # exact forgetting; atomic, checksummed state
    events = lrn.stream(sample_rate=16000).feed(chunk)   # see runtime/stream.py

Audio input (as Silero VAD, explicit rather than surprising; runtime/audio.py): arrays need ``sample_rate``
(1 kHz to 1 MHz, resampled to the bundle's with soxr HQ); int16/int32 PCM and float64/float16 become float32;
2-D input is averaged over channels; NaN/Inf, empty, 3-D+, non-numeric input, clips shorter than the embedder's
minimum (0.16 s for aisfx) and clips longer than ``max_clip_seconds`` (default 600 s, checked before any
conversion or decoding; ``stream`` takes recordings of any length) raise ``AudioError`` naming what was
expected. Audio -> windows -> level gate -> features is runtime/features.py, the path streams take too: long
clips are embedded in batches of 16 windows (bounded memory); windows below the level gate (``gate_dbfs``,
default -50 dBFS RMS) are not learned from and not classified. Learning audio that is entirely below the gate
is an error; predicting it gives "unknown" with ``quiet=True``. Scores and the unknown rule: runtime/unknown.py.

State: learned state goes to ``state.safetensors`` in the bundle folder (beside a zip bundle), written
atomically, versioned and checksummed (runtime/state.py), and tied to the embedder that produced its
features (embedder file sha256 and feature dimension): a state from another embedder (e.g. learned with
int8 and loaded with fp32) or a corrupt one is refused as a whole, never half-loaded.

Groups: the windows of one clip (``learn``) or of each clip of ``learn_many`` (clips may share a group) are one
group, held out together by the calibrations (gamma, unknown rule). ``learn(audio, BACKGROUND)`` enrols sounds
to ignore (runtime/openset.py). Every error leaves the learned state unchanged (validate and embed first, then
swap in new arrays). Drift: every DRIFT_CHECK_ROWS windows the rounding drift is estimated and, above
DRIFT_TOLERANCE, the classifier is refitted exactly (runtime/analytic.py).

Regularisation: gamma is re-chosen on the device by leave-one-clip-out (``AutoGamma``, runtime/gamma.py) and
refactorised exactly; ``Learner.load(..., gamma=1e3)`` or ``pin_gamma`` fixes it, ``choose_gamma()`` re-chooses
now; the rule is saved with the state (older states load with it on).

Threads: one ``RLock`` serialises state changes (learn, forget, save, refit). Predictions read an
immutable snapshot (W, R, classes, stored features, version) published after each change, so they never
block on a learn and always see one consistent state; ONNX Runtime's ``run`` is thread-safe.
Numerical work of the classifier uses numpy's BLAS, whose threads are set by the environment
(e.g. OPENBLAS_NUM_THREADS=1 before start-up on a single-core device).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from edge_pace.runtime import bundle as B
from edge_pace.runtime.analytic import DRIFT_TOLERANCE, AnalyticClassifier
from edge_pace.runtime.gamma import AutoGamma, GammaSearch
from edge_pace.runtime.audio import AudioError, level_dbfs
from edge_pace.runtime.embedder import DEFAULT_THREADS, EmbedderError, OnnxEmbedder, release_free_memory
from edge_pace.runtime.features import FeaturePath, Gate
from edge_pace.runtime.state import StateError, atomic_write_bytes, read_state, state_to_bytes
from edge_pace.runtime.analytic import BACKGROUND
from edge_pace.runtime.openset import edge_padded
from edge_pace.runtime.unknown import DEFAULT_QUANTILE, DEFAULT_TEMPERATURE, OPENSET_MIN_CLIPS, UNKNOWN, Scores, Snapshot, UnknownRule  # noqa: E501

log = logging.getLogger("edge_pace.runtime")
DEFAULT_GATE_DBFS = -50.0
DEFAULT_MAX_CLIP_SECONDS = 600.0
DRIFT_CHECK_ROWS = 4096  # learned rows between two drift() checks (each O(n D + D^2))
STATE_RUNTIME = "edge-pace-runtime"


class NotFittedError(RuntimeError):
    """Prediction was asked for before any class was learned."""


def check_label(label) -> str:
    """A class label as given, or TypeError/ValueError: a non-empty str that is not "unknown" (any case)."""
    if not isinstance(label, str):
        raise TypeError(f"label must be a str, got {type(label).__name__}")
    if not label.strip():
        raise ValueError("label must be a non-empty string")
    if label.strip().lower() == UNKNOWN:
        raise ValueError(f"{label!r} is reserved for the unknown decision; choose another label")
    return label


class Learner:
    """A bundle's embedder and analytic classifier on the device. Build it with ``Learner.load``."""

    def __init__(self, embedder: OnnxEmbedder, classifier: AnalyticClassifier, manifest: dict, state_path: Path, *,
                 bundle_path: Path | None = None, state_origin: str = "", unknown: bool = True,
                 unknown_quantile: float | None = DEFAULT_QUANTILE, unknown_threshold: float | None = None,
                 temperature: float = DEFAULT_TEMPERATURE, gate_dbfs: float | None = DEFAULT_GATE_DBFS,
                 max_clip_seconds: float | None = DEFAULT_MAX_CLIP_SECONDS, gamma: float | str = "auto",
                 gamma_rule: AutoGamma | None = None, openset_min_clips: float = OPENSET_MIN_CLIPS) -> None:
        self.embedder, self.manifest, self.bundle_path = embedder, manifest, bundle_path
        self.state_path = Path(state_path)
        self.state_origin = state_origin
        self.sample_rate = int(manifest["sample_rate"])
        self.window = int(round(float(manifest["window_seconds"]) * self.sample_rate))
        self.hop = int(round(float(manifest["hop_seconds"]) * self.sample_rate))
        self.min_samples = int(manifest["min_samples"])
        self.feature_dim = int(manifest["feature_dim"])
        if not (0 < self.hop and self.min_samples <= self.window):
            raise B.BundleError(f"bad audio settings in manifest: window {self.window}, hop {self.hop}, "
                                f"min_samples {self.min_samples} samples")
        if unknown_quantile is not None and not 0.0 <= unknown_quantile <= 1.0:
            raise ValueError(f"unknown_quantile must be in [0, 1] or None, got {unknown_quantile}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.unknown, self.unknown_threshold, self.openset_min_clips = bool(unknown), unknown_threshold, openset_min_clips
        self.unknown_quantile = None if unknown_quantile is None else float(unknown_quantile)
        if max_clip_seconds is not None and not max_clip_seconds > 0:
            raise ValueError(f"max_clip_seconds must be > 0 seconds or None, got {max_clip_seconds!r}")
        self.temperature, self.gate_dbfs, self.max_clip_seconds = float(temperature), gate_dbfs, max_clip_seconds
        self.feature_path = FeaturePath(embedder, self.sample_rate, self.window, self.hop, self.min_samples)
        self._clf = classifier
        prior = float(manifest.get("gamma_prior", manifest.get("gamma", classifier.gamma)))
        self.gamma_rule = gamma_rule if gamma_rule is not None else AutoGamma(prior=prior)
        if gamma != "auto":
            if isinstance(gamma, str) or not (isinstance(gamma, (int, float)) and np.isfinite(gamma) and gamma > 0):
                raise ValueError(f"gamma must be 'auto' or a positive number (pinned), got {gamma!r}")
            self.gamma_rule.pinned = float(gamma)
            classifier.set_gamma(float(gamma))
        self.gamma_search: GammaSearch | None = None  # the last automatic choice made by this learner
        self._lock = threading.RLock()
        self._unchecked_rows = 0
        self.refits = 0  # automatic refits made by the drift guard
        self._version = 0
        self._publish()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, bundle_path: str | Path, int8: bool = False, threads: int = DEFAULT_THREADS,
             providers: list[str] | None = None, state: str | Path | bool | None = None, **settings) -> "Learner":
        """Open and verify a bundle, start an ONNX Runtime session and load the classifier.

        ``int8`` picks ``embedder.int8.onnx``; ``threads`` = ONNX Runtime intra-op threads (1 suits a small
        device); ``providers`` default to CUDA+CPU when onnxruntime offers CUDA, else CPU. ``state``: None =
        the bundle's learned state if present, else its exported classifier; a path = that state file
        (must exist); False = ignore learned state. ``settings``: unknown, unknown_quantile,
        unknown_threshold, temperature, gate_dbfs, max_clip_seconds (see the module docstrings), gamma ("auto",
        the default, or a number to pin it; see "Regularisation" in the module docstring).
        """
        bundle = B.open_bundle(bundle_path, verify=True)
        m = bundle.manifest
        name = B.EMBEDDER_INT8 if int8 else B.EMBEDDER
        if name not in m["files"]:
            raise B.BundleError(f"{bundle.path}: the bundle has no {name}"
                                + (" (export it with --int8)" if int8 else ""))
        # folder bundles: ONNX Runtime reads the just-verified file itself (less memory than from bytes)
        model = bundle.read(name) if bundle.is_zip else bundle.path / name
        try:
            embedder = OnnxEmbedder(model, threads=threads, providers=providers, name=name,
                                    sha256=m["files"][name]["sha256"])
        except EmbedderError as exc:
            raise B.BundleError(f"{bundle.path}: {exc}") from exc
        del model
        dim = int(m["feature_dim"])
        if embedder.dim is not None and embedder.dim != dim:
            raise B.BundleError(f"{bundle.path}: {name} outputs {embedder.dim} features but the manifest says {dim}")
        default_state = bundle.state_path()
        if state is None:
            state = default_state if default_state.is_file() else False
        if state is False:
            clf, meta = read_state(bundle.read(B.CLASSIFIER), f"{bundle.path}/{B.CLASSIFIER}")
            meta = {}  # the exported classifier carries no device rule: the bundle's prior, automatic
            origin = B.CLASSIFIER
        else:
            spath = Path(state)
            if not spath.is_file():
                raise StateError(f"{spath}: classifier state file not found")
            clf, meta = read_state(spath.read_bytes(), str(spath))
            if meta.get("embedder_sha256") != embedder.sha256:
                raise StateError(
                    f"{spath}: this state was learned with features of {meta.get('embedder', 'an unrecorded embedder')} "
                    f"(sha256 {str(meta.get('embedder_sha256'))[:12]}…) but the learner runs {name} "
                    f"(sha256 {embedder.sha256[:12]}…); its classes would not match these features. Load with the "
                    f"embedder it was learned with (int8={not int8}?), or move the state away to start again")
            origin = str(spath)
        if clf.dim != dim:
            raise StateError(f"{origin}: classifier feature dimension {clf.dim} != the bundle's {dim}")
        prior = float(m.get("gamma_prior", m.get("gamma", clf.gamma)))
        settings.setdefault("gamma_rule", AutoGamma.from_metadata(meta, prior, clf.gamma))
        learner = cls(embedder, clf, m, default_state, bundle_path=bundle.path, state_origin=origin, **settings)
        del bundle  # a zip bundle holds every file in memory
        release_free_memory()
        return learner

    # ------------------------------------------------------------------ snapshot
    def _publish(self) -> None:
        clf = self._clf
        self._version += 1
        R, P = clf.factors()  # no folding here: publishing stays O(classes)
        self._view = Snapshot(self._version, tuple(clf.classes), clf.W, R, P,
                           {c: tuple(v) for c, v in clf.features.items()},
                           {c: tuple(v) for c, v in clf.groups.items()})

    @property
    def classes(self) -> list[str]:
        return list(self._view.classes)

    @property
    def counts(self) -> dict[str, int]:
        """Examples (windows) learned per class."""
        with self._lock:
            return dict(zip(self._clf.classes, self._clf.counts))

    @property
    def version(self) -> int:
        """State version: increases with every learn/forget/refit of this learner."""
        return self._view.version

    @property
    def classifier(self) -> AnalyticClassifier:
        """The live classifier (mutate it only through the learner, which holds the lock)."""
        return self._clf

    def __repr__(self) -> str:
        return (f"Learner({self.bundle_path}, {self.embedder.name}, D={self.feature_dim}, {self.sample_rate} Hz, "
                f"classes={self.classes}, providers={self.embedder.providers}, threads={self.embedder.threads})")

    # ------------------------------------------------------------------ audio -> features (runtime/features.py)
    def gate(self) -> Gate:
        """The level gate of clips (``gate_dbfs``; streams add an activity check, runtime/stream.py)."""
        return Gate(self.gate_dbfs, self.sample_rate)

    def _audio(self, audio, sample_rate, name: str) -> np.ndarray:
        return self.feature_path.audio(audio, sample_rate, name, self.max_clip_seconds)

    def windows(self, audio, sample_rate: int | None = None, name: str = "audio") -> tuple[np.ndarray, np.ndarray]:
        """The windows [n, window] the learner uses for a clip, and their levels in dBFS [n]."""
        w = self.feature_path.windows(self._audio(audio, sample_rate, name))
        return w, level_dbfs(w)

    def embed(self, audio, sample_rate: int | None = None) -> np.ndarray:
        """Features z [n_windows, D] (float32) of every window of a clip (no level gate)."""
        return self.feature_path.embed(self._audio(audio, sample_rate, "audio"))

    def _learn_features(self, audio, sample_rate, name: str, background: bool = False) -> np.ndarray:
        mono = self._audio(audio, sample_rate, name)  # background: edges padded (runtime/openset.py edge_padded)
        f = self.feature_path.clip(edge_padded(mono, self.window) if background else mono, self.gate())
        if f.z is None:
            raise AudioError(f"{name}: every window is below the level gate ({f.top_dbfs:.1f} dBFS < gate_dbfs "
                             f"{self.gate_dbfs} dBFS); nothing was learned. Use louder audio or a lower gate_dbfs "
                             "(None disables the gate)")
        return f.z

    # ------------------------------------------------------------------ learning
    def learn(self, audio, label: str, sample_rate: int | None = None) -> "Learner":
        """Learn one clip (array with ``sample_rate``, or a file path) under ``label`` (new labels = new classes).
        Each active window of the clip is one example; together they are one group (clip)."""
        label = check_label(label)
        z = self._learn_features(audio, sample_rate, "audio", label == BACKGROUND)
        with self._lock:
            self._clf.learn(z, label, groups=np.zeros(len(z), np.int64))
            self._guard_drift(len(z))
            self._update_gamma()
            self._publish()
        return self

    def learn_many(self, audios: Sequence | np.ndarray, labels: Sequence[str] | str, sample_rate: int | None = None,
                   progress: Callable[[int], None] | None = None,
                   groups: Sequence[int] | None = None) -> "Learner":
        """Learn several clips in one recursive update (all or nothing). ``audios``: a sequence of arrays or
        paths, or a 2-D array whose rows are clips; ``labels``: one per clip, or one label for all;
        ``progress(i)`` is called after clip i is embedded; ``groups``: one integer per clip, clips with the
        same value are parts of one recording (default: every clip its own group), see the module docstring."""
        if isinstance(audios, (str, os.PathLike)) or (isinstance(audios, np.ndarray) and audios.ndim != 2):
            raise TypeError("audios must be a sequence of clips (arrays or paths) or a 2-D array [clips, samples]")
        items = list(audios)
        labels = [labels] * len(items) if isinstance(labels, str) else list(labels)
        if len(labels) != len(items):
            raise ValueError(f"got {len(items)} clips but {len(labels)} labels")
        if not items:
            raise ValueError("learn_many needs at least one clip")
        labels = [check_label(lb) for lb in labels]
        if groups is None:
            groups = list(range(len(items)))
        elif len(groups) != len(items) or not all(isinstance(g, (int, np.integer)) and not isinstance(g, bool)
                                                  for g in groups):
            raise ValueError(f"groups must be {len(items)} integers, one per clip, got {groups!r}")
        seen: dict[int, str] = {}
        for g, lb in zip(groups, labels):
            if seen.setdefault(int(g), lb) != lb:
                raise ValueError(f"group {int(g)} mixes labels {seen[int(g)]!r} and {lb!r}: the clips of one group "
                                 "are parts of one recording and share its label")
        Z, Y, G = [], [], []
        for i, (a, lb) in enumerate(zip(items, labels)):
            name = str(a) if isinstance(a, (str, os.PathLike)) else f"audios[{i}]"
            z = self._learn_features(a, sample_rate, name, lb == BACKGROUND)
            Z.append(z)
            Y += [lb] * len(z)
            G += [int(groups[i])] * len(z)
            if progress is not None:
                progress(i)
        with self._lock:
            self._clf.learn(np.concatenate(Z), Y, groups=np.asarray(G, np.int64))
            self._guard_drift(len(Y))
            self._update_gamma()
            self._publish()
        return self

    def _guard_drift(self, rows: int) -> None:
        """Every DRIFT_CHECK_ROWS learned rows: estimate the classifier's rounding drift (``drift()``) and refit
        from the stored features when it exceeds DRIFT_TOLERANCE (needs the features of every class)."""
        self._unchecked_rows += rows
        clf = self._clf
        if self._unchecked_rows < DRIFT_CHECK_ROWS or set(clf.features) != set(clf.classes):
            return
        self._unchecked_rows = 0
        try:
            d = clf.drift()
            if d > DRIFT_TOLERANCE:
                log.warning("classifier drift %.1e > %.0e: refitting from the stored features", d, DRIFT_TOLERANCE)
                clf.refit()  # assigns R and W only once both are computed
                self.refits += 1
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:  # the learned update stands
            log.warning("drift check failed (%s); keeping the recursive state", exc)

    def forget(self, label: str) -> "Learner":
        """Remove a class exactly: the state equals never having learned it (AnalyticClassifier.forget)."""
        with self._lock:
            if label not in self._clf.classes and not (label == BACKGROUND and BACKGROUND in self._clf.features):
                raise KeyError(f"unknown class {label!r}; known: {self._clf.classes}")
            self._clf.forget(label)
            self._update_gamma()
            self._publish()
        return self

    def _update_gamma(self, force: bool = False) -> None:
        """The automatic gamma rule (runtime/gamma.py AutoGamma) after a change; a failure keeps the state."""
        try:
            found = self.gamma_rule.update(self._clf, force)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
            log.warning("gamma selection failed (%s); keeping gamma %g", exc, self._clf.gamma)
            return
        if found is not None:
            self.gamma_search = found

    @property
    def gamma(self) -> float:
        """The ridge regularisation in use (chosen automatically unless pinned)."""
        return self._clf.gamma

    def choose_gamma(self) -> GammaSearch | None:
        """Re-choose gamma now by leave-one-clip-out (refactorises exactly when it changes). None when pinned or
        when the classifier keeps no features."""
        with self._lock:
            self._update_gamma(force=True)
            self._publish()
            return self.gamma_search

    def pin_gamma(self, gamma: float | None) -> "Learner":
        """Fix gamma (refactorises exactly), or None to return to the automatic choice."""
        if gamma is not None and not (np.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be a positive finite number or None, got {gamma!r}")
        with self._lock:
            self.gamma_rule.pinned, self.gamma_rule.clips = (None, -1) if gamma is None else (float(gamma), 0)
            self._update_gamma()  # clips = -1 < any count: due at once
            self._publish()
        return self

    def refit(self) -> "Learner":
        """Refactorise R and W from the stored features (clears accumulated rounding drift)."""
        with self._lock:
            self._clf.refit()
            self._publish()
        return self

    # ------------------------------------------------------------------ prediction
    def snapshot(self) -> Snapshot:
        """The current immutable classifier snapshot (pass it to ``decide``/``score_features`` so that one result
        reads one consistent state while others learn)."""
        return self._view

    def _rule(self) -> UnknownRule:
        return UnknownRule(self.unknown, self.unknown_quantile, self.unknown_threshold, self.openset_min_clips)

    def thresholds(self, view: Snapshot | None = None) -> dict[str, float] | None:
        """Per-class unknown thresholds (open-set scale) of the current (or given) state at the sensitivity
        ``unknown_quantile``; None when the rule is off or nothing is calibrated yet (runtime/unknown.py)."""
        return self._rule().thresholds(view or self._view)

    def threshold(self, view: Snapshot | None = None) -> float | None:
        """The pooled unknown threshold (open-set scale), the ridge-score fallback 0.5 before any class has two
        clips, or None when the rule is off."""
        return self._rule().pooled(view or self._view)

    def score_features(self, z: np.ndarray, active: np.ndarray | None = None, view: Snapshot | None = None) -> Scores:
        """Scores of one clip from its window features z [n, D]: mean ridge score over active windows, and the
        open-set score of those windows for the unknown rule."""
        view = view or self._view
        if not view.classes:
            raise NotFittedError("the learner knows no class yet: learn(...) some audio first")
        z = np.atleast_2d(z)
        active = np.ones(len(z), bool) if active is None else np.asarray(active, bool)
        quiet = not active.any()
        za = z[active if not quiet else slice(None)]
        return self.decide(view.ridge(za).mean(axis=0), view, quiet=quiet, windows=int(active.sum()), z=za)

    def decide(self, ridge: np.ndarray, view: Snapshot | None = None, quiet: bool = False, windows: int = 1,
               z: np.ndarray | None = None) -> Scores:
        """The decision on mean ridge scores [classes] of ``view``'s classes (and the windows' features z, which
        the open-set score needs; without them only the ridge fallback applies): top class, unknown rule,
        probabilities."""
        view = view or self._view
        return view.decide(z, ridge, self._rule(), self.temperature, quiet, windows)

    def predict_proba(self, audio, sample_rate: int | None = None) -> Scores:
        """dict label -> probability (softmax of ridge scores / temperature) with the decision as attributes
        (``label``, ``score``, ``unknown``, ``threshold``, ``ridge``; see runtime/unknown.py)."""
        view = self._view
        if not view.classes:
            raise NotFittedError("the learner knows no class yet: learn(...) some audio first")
        f = self.feature_path.clip(self._audio(audio, sample_rate, "audio"), self.gate())
        if f.z is None:  # quiet clip: "unknown"; its probabilities come from its loudest window
            return self.score_features(self.embedder(f.loudest[None]), np.zeros(1, bool), view)
        return self.score_features(f.z, None, view)

    def predict(self, audio, sample_rate: int | None = None) -> tuple[str, float]:
        """(label, top ridge score); the label is "unknown" when the unknown rule rejects the clip."""
        s = self.predict_proba(audio, sample_rate)
        return s.label, s.score

    # ------------------------------------------------------------------ streaming
    def stream(self, sample_rate: int, **options):
        """A ``Stream`` fed with chunks of any size at ``sample_rate``; see runtime/stream.py for options."""
        from edge_pace.runtime.stream import Stream

        return Stream(self, sample_rate, **options)

    # ------------------------------------------------------------------ state
    def state_metadata(self) -> dict[str, str]:
        return {"runtime": STATE_RUNTIME, "embedder": self.embedder.name, "embedder_sha256": self.embedder.sha256,
                "feature_dim": str(self.feature_dim), "sample_rate": str(self.sample_rate),
                **self.gamma_rule.metadata()}

    def save(self, path: str | Path | None = None) -> Path:
        """Write the state atomically (temp file, fsync, rename): safetensors, versioned, checksummed, tied to
        the embedder. Default path: the bundle's state path (inside a folder bundle, beside a zip)."""
        path = Path(path) if path is not None else self.state_path
        if not path.parent.is_dir():
            raise FileNotFoundError(f"{path.parent}: folder does not exist; cannot save the state there")
        with self._lock:
            atomic_write_bytes(path, state_to_bytes(self._clf, self.state_metadata()))
        return path


__all__ = ["Learner", "NotFittedError", "Scores", "UNKNOWN", "AudioError", "StateError", "DEFAULT_GATE_DBFS", "DEFAULT_MAX_CLIP_SECONDS", "check_label"]  # noqa: E501
