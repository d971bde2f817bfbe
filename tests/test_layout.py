"""The house rules (README "Layout and imports"), checked on the source: layers import downward only, no import
circle, the runtime and the device verbs import nothing from the training side, no module over 450 lines; and
the registries: adding a method or a backbone is one registration, an unknown name is an error."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"edge_pace": ROOT / "edge_pace", "edge_pace.runtime": ROOT / "runtime", "edge_pace.export": ROOT / "export"}
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """edge_pace modules a module imports, at any depth of its code (function-level imports included)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]  # for relative imports
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:  # "from pkg import name": the module is the longest known prefix
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):  # a package's own parents are not imports
                found.add(t)
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def test_no_import_circle() -> None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_layers_import_downward() -> None:
    runtime = [m for m in GRAPH if m.startswith("edge_pace.runtime")]
    assert len(runtime) > 10
    for m in runtime:
        outside = sorted(n for n in GRAPH[m] if not n.startswith("edge_pace.runtime"))
        assert not outside, f"{m} imports the training side: {outside}"
    device_verbs = ["edge_pace.cli.device", "edge_pace.cli.listen", "edge_pace.cli.listen_view", "edge_pace.cli.common"]
    for m in device_verbs:
        outside = sorted(n for n in GRAPH[m] if not n.startswith(("edge_pace.runtime", "edge_pace.cli.")))
        assert not outside, f"{m} (a device verb) imports more than the runtime: {outside}"
    for m in GRAPH:  # nothing below the CLI imports it; nothing below export imports export
        if not m.startswith("edge_pace.cli"):
            assert not any(n.startswith("edge_pace.cli") for n in GRAPH[m]), m
        if m.startswith(("edge_pace.method", "edge_pace.backbones", "edge_pace.data", "edge_pace.evaluation")):
            assert not any(n.startswith("edge_pace.export") for n in GRAPH[m]), m


def test_stream_and_live_input_use_only_the_learners_public_api() -> None:
    import re

    for path in (ROOT / "runtime" / "stream.py", ROOT / "runtime" / "enrol.py", ROOT / "runtime" / "live.py"):
        private = sorted(set(re.findall(r"learner\._\w+", path.read_text())))
        assert not private, f"{path.name} reads the learner's privates: {private}"


def test_no_module_over_450_lines() -> None:
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_only_the_backbones_package_builds_backbones() -> None:
    """Backbone classes are built and their weights found only by edge_pace.backbones (one registration each)."""
    for m, path in MODULES.items():
        if m.startswith("edge_pace.backbones"):
            continue
        text = path.read_text()
        for needle in ("AisfxCNN", "EATViT", "aisfx_path", "require_aisfx", "eat_vit", "aisfx_cnn"):
            assert needle not in text, f"{m} names {needle}: backbone knowledge belongs to edge_pace.backbones"


# ---------------------------------------------------------------------------------------------- registries

def test_unknown_method_and_backbone_names_are_errors(tmp_path) -> None:
    from edge_pace import backbones
    from edge_pace.evaluation.baselines import check_methods, make_method
    from edge_pace.evaluation.bench import BenchSpec
    from edge_pace.method.config import PaceConfig
    from edge_pace.method.pace import PaceLearner

    with pytest.raises(ValueError, match="unknown method 'magic'"):
        make_method("magic")
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['magic'\]"):
        check_methods(["pace", "magic"])
    with pytest.raises(ValueError, match="unknown method"):
        BenchSpec(["magic"], [("x", "folder", str(tmp_path))], PaceConfig(), tmp_path).check()
    for call in (lambda: backbones.load("nope"), lambda: backbones.get_backbone("nope"),
                 lambda: backbones.get_spec("nope"), lambda: backbones.weights_present("nope"),
                 lambda: PaceLearner("nope", PaceConfig(device="cpu")),
                 lambda: make_method("pace", PaceConfig(device="cpu"), "nope")):
        with pytest.raises(ValueError, match="unknown backbone 'nope'"):
            call()


def test_adding_a_method_is_one_registration() -> None:
    from edge_pace.evaluation.baselines import (METHODS, MethodSpec, SimpleCIL, check_methods, frozen_methods,
                                                make_method, register_method)

    register_method(MethodSpec("nearest-mean-copy", "a second nearest class mean", lambda c: SimpleCIL(
        c.frozen_embedder(), name="nearest-mean-copy"), frozen=True))
    try:
        assert check_methods(["nearest-mean-copy"]) == ["nearest-mean-copy"]
        assert "nearest-mean-copy" in frozen_methods()  # the bench fills its embedding cache like simplecil's
        sentinel = type("Embedder", (), {"device": "cpu (test)"})()
        m = make_method("nearest-mean-copy", embedder=sentinel)
        assert isinstance(m, SimpleCIL) and m.embedder is sentinel and m.name == "nearest-mean-copy"
        with pytest.raises(ValueError, match="already registered"):
            register_method(MethodSpec("pace", "again", lambda c: None))
    finally:
        METHODS.pop("nearest-mean-copy")


def test_adding_a_backbone_is_one_registration() -> None:
    from edge_pace import backbones
    from edge_pace.backbones.aisfx_cnn import AisfxCNN
    from edge_pace.method.config import PaceConfig
    from edge_pace.method.pace import PaceLearner

    spec = backbones.register(backbones.BackboneSpec(
        "tiny-cnn", "a narrow aisfx-shaped CNN", "none", 44100, 32, "0.02 M", "none",
        build=lambda spec, weights, pretrained: AisfxCNN(width=4).eval(), window_seconds=0.5, hop_seconds=0.25,
        random_init=True))
    try:
        model, loaded = backbones.load("tiny-cnn")
        assert loaded.name == "tiny-cnn" and loaded.min_samples == model.min_samples == 7168
        assert loaded.lora_targets == ("conv1", "conv2") and loaded.weights_file is None
        assert backbones.weights_present("tiny-cnn") and spec.window_seconds == 0.5
        learner = PaceLearner("tiny-cnn", PaceConfig(device="cpu", d_proj=16, quiet=True))
        assert learner.spec.hop_seconds == 0.25 and learner.lora_targets == ("conv1", "conv2")
        assert learner.backbone_spec["store_base"] and learner.backbone_spec["kwargs"] == {"width": 4}
        rebuilt = backbones.rebuild(learner.backbone_spec["class"], learner.backbone_spec["kwargs"])
        assert type(rebuilt) is AisfxCNN and rebuilt.architecture() == {"width": 4}
        with pytest.raises(ValueError, match="not an edge_pace backbone"):
            backbones.rebuild("collections.OrderedDict", {})
    finally:
        backbones.BACKBONES.pop("tiny-cnn")
