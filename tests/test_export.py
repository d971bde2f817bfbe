"""edge-pace export: a verified ONNX bundle with checksums (frozen aisfx backbone; D kept small for speed)."""

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edge_pace.export import exporter
from edge_pace.runtime import bundle as B
from sounds import sox_set


@pytest.fixture(scope="module")
def real_clips():
    return sox_set(["sine", "square", "noise", "pluck"], 3, seed=3)


@pytest.fixture(scope="module")
def frozen_bundle(tmp_path_factory, real_clips):
    torch.set_num_threads(2)
    source = exporter.source_from_backbone("aisfx", dim=256, seed=1,  # labelled calibration: stats + gamma prior
                                           calibration=(real_clips[0], real_clips[1], list(range(len(real_clips[1])))))
    # the classifier knows the 4 classes so int8 top-1 agreement is measurable
    with torch.no_grad():
        z = source.projection(source.backbone(torch.from_numpy(real_clips[0]))).numpy()
    source.classifier.learn(z, real_clips[1])
    out = tmp_path_factory.mktemp("export") / "bundle"
    exporter.export_bundle(source, out, int8=True, clips=real_clips[0], clip_labels=real_clips[1], log=lambda m: None)
    return out, source


def test_manifest_records_what_the_device_needs(frozen_bundle):
    out, source = frozen_bundle
    m = B.open_bundle(out).manifest  # verifies every checksum
    assert m["format"] == B.BUNDLE_FORMAT and m["format_version"] == B.BUNDLE_VERSION
    assert m["sample_rate"] == 44100 and m["feature_dim"] == 256 and m["min_samples"] == 7168
    assert m["labels"] == source.classifier.classes
    assert m["backbone"]["name"] == "aisfx" and "CC BY 4.0" in m["backbone"]["licence"]
    assert set(m["files"]) == {B.EMBEDDER, B.EMBEDDER_INT8, B.CLASSIFIER}
    assert m["parity"]["max_rel"] <= m["parity"]["tolerance"] == exporter.PARITY_TOLERANCE
    assert {(c["batch"], c["samples"]) for c in m["parity"]["cases"]} == {(1, 7168), (3, 44100), (2, 110250)}
    q = m["quantization"]
    assert q["clips"] == 6 and q["calibration_clips"] == 6 and q["mean_cosine"] > 0.98 and 0.0 <= q["top1_agreement"] <= 1.0 and "accuracy_change" in q
    props = {p.key: p.value for p in onnx.load(str(out / B.EMBEDDER)).metadata_props}
    assert props["edge_pace.sample_rate"] == "44100" and props["edge_pace.feature_dim"] == "256"


def test_onnx_embedder_has_dynamic_batch_and_length_and_matches_torch(frozen_bundle):
    out, source = frozen_bundle
    sess = ort.InferenceSession(str(out / B.EMBEDDER), providers=["CPUExecutionProvider"])
    emb = exporter.Embedder(source.backbone, source.projection).eval()
    rng = np.random.default_rng(0)
    for b, n in [(1, 7168), (4, 20000), (2, 3 * 44100 + 17)]:
        x = (0.2 * rng.standard_normal((b, n))).astype(np.float32)
        z = sess.run(None, {"wave": x})[0]
        with torch.no_grad():
            ref = emb(torch.from_numpy(x)).numpy()
        assert z.shape == (b, 256)
        assert np.abs(z - ref).max() <= 1e-4 * np.abs(ref).max()


def test_tampered_missing_and_unknown_version_are_refused(frozen_bundle, tmp_path):
    out, _ = frozen_bundle
    bad = tmp_path / "b"
    shutil.copytree(out, bad)
    data = bytearray((bad / B.CLASSIFIER).read_bytes())
    data[-1] ^= 0xFF
    (bad / B.CLASSIFIER).write_bytes(bytes(data))
    with pytest.raises(B.BundleError, match="classifier.safetensors fails its checksum"):
        B.open_bundle(bad)
    (bad / B.EMBEDDER_INT8).unlink()
    with pytest.raises(B.BundleError, match="embedder.int8.onnx is missing"):
        B.open_bundle(bad)
    m = json.loads((bad / B.MANIFEST).read_text())
    m["format_version"] = 99
    (bad / B.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(B.BundleError, match="format version 99 is not supported"):
        B.open_bundle(bad)
    (bad / B.MANIFEST).write_text("{not json")
    with pytest.raises(B.BundleError, match="not valid JSON"):
        B.open_bundle(bad)


def test_failed_parity_writes_nothing_and_keeps_the_old_bundle(frozen_bundle, tmp_path):
    out, _ = frozen_bundle
    target = tmp_path / "bundle"
    shutil.copytree(out, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    torch.manual_seed(0)  # the tiny ViT exports in seconds; tolerance 0 forces the refusal
    source = exporter.source_from_backbone("eat-tiny", dim=64, pretrained=False, gamma=1.0, standardize="none")
    with pytest.raises(exporter.ExportError, match=r"parity check failed .* batch 1 x 2800 samples"):
        exporter.export_bundle(source, target, tolerance=0.0, log=lambda m: None)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temporary leftovers


def test_export_refuses_to_replace_a_folder_that_is_not_a_bundle(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(B.BundleError, match="not a bundle; refusing"):
        B.write_bundle(tmp_path / "photos", {"a": b"1"}, {"x": 1})
    assert (tmp_path / "photos" / "cat.jpg").read_bytes() == b"x"


def test_single_file_bundle_opens_like_the_folder(frozen_bundle, tmp_path):
    out, _ = frozen_bundle
    folder = B.open_bundle(out)
    files = {n: folder.read(n) for n in folder.manifest["files"]}
    manifest = {k: v for k, v in folder.manifest.items() if k not in ("files",)}
    zpath = B.write_bundle(tmp_path / "b.zip", files, manifest, single_file=True)
    z = B.open_bundle(zpath)
    assert z.is_zip and z.manifest["files"] == folder.manifest["files"]
    assert z.read(B.EMBEDDER) == folder.read(B.EMBEDDER)
    assert z.state_path().name == "b.zip.state.safetensors"


def test_embedder_stores_no_dft_kernel_and_a_half_precision_projection(frozen_bundle):
    """Issue 14: the STFT's constants are the two-step FFT's small matrices (no [n_fft + 2, 1, n_fft] kernel), the
    random projection is a float16 initializer cast once in the graph (tests/test_reliability.py: a classifier that
    has learned nothing omits R)."""
    import onnx
    from onnx import numpy_helper

    out, source = frozen_bundle
    model = onnx.load(str(out / B.EMBEDDER))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    n_fft = source.backbone.frontend.n_fft
    assert not any(a.ndim and a.shape[-1] == n_fft and a.size >= n_fft * n_fft for a in inits.values())
    proj = [a for a in inits.values() if a.shape == (source.backbone.embed_dim, source.projection.out_dim)]
    assert len(proj) == 1 and proj[0].dtype == np.float16
    assert np.array_equal(proj[0], source.projection.weight.numpy())
    assert source.projection.describe()["precision"] == "float16"
    text = exporter.describe(out)  # `edge-pace info`: what the classifier state holds, from its header
    assert "classifier   " in text and "R [256, 256] F64 0.50 MB" in text and "features 12 rows F32" in text


def test_projection_precision_round_trips_and_old_descriptions_stay_float32():
    from edge_pace.method.projection import RandomProjection

    p = RandomProjection(16, 32, 3, np.zeros(16, np.float32), np.ones(16, np.float32))
    d = p.describe()
    assert p.weight.dtype == torch.float16 and RandomProjection.from_description(d).weight.dtype == torch.float16
    old = {k: v for k, v in d.items() if k != "precision"}
    full = RandomProjection.from_description(old)
    assert full.weight.dtype == torch.float32
    assert torch.equal(full.weight.half(), p.weight)  # the same draw, rounded
    f = torch.randn(5, 16)
    assert np.allclose(p(f).numpy(), p.numpy(f.numpy()), atol=1e-5)
    with pytest.raises(ValueError, match="precision"):
        RandomProjection(16, 32, precision="int4")
