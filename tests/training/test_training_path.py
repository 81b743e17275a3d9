"""Train → export → ONNX equals JAX → INT8/FP16 load → evaluation, on real held-out speakers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import Corpus  # type: ignore[import-not-found]

from features import FEATURE_VERSION, N_MELS, WINDOW_FRAMES, LogMelStream, logmel_batch
from models.bundle import ARTIFACT_FILES, read_bundle_manifest
from models.dataset import LABELS, HeldoutSet
from models.evaluation import (
    LIGHT_PROBE,
    evaluate,
    evaluate_manifest,
    predict_probs,
    save_confusion_png,
)
from models.onnx_session import file_session
from models.training import TrainedModel

CHANCE = 1 / len(LABELS)


def _heldout(corpus: Corpus, name: str) -> HeldoutSet:
    return HeldoutSet(name, corpus.heldout.windows, tuple(LABELS[i] for i in corpus.heldout.labels))


def test_bundle_follows_the_contract(bundle: Path) -> None:
    for name in ARTIFACT_FILES.values():
        assert (bundle / name).is_file()
    manifest = read_bundle_manifest(bundle)
    assert manifest["labels"] == list(LABELS)
    assert manifest["feature_version"] == FEATURE_VERSION
    assert (manifest["input_name"], manifest["output_name"]) == ("logmel", "probs")
    assert (manifest["sample_rate"], manifest["window_samples"]) == (16_000, 16_000)
    assert manifest["metrics"] == {"accuracy": 0.0}
    session = file_session(bundle / "model.onnx")
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == (
        "logmel",
        "tensor(float)",
        [WINDOW_FRAMES, N_MELS],
    )
    assert (out.name, out.type, out.shape[1:]) == ("probs", "tensor(float)", [len(LABELS)])


def test_onnx_equals_the_jax_forward_pass(
    bundle: Path, tiny_model: TrainedModel, corpus: Corpus
) -> None:
    features = corpus.heldout_logmel[:128]
    reference = tiny_model.predict_proba(features)
    onnx_probs = predict_probs(file_session(bundle / "model.onnx"), features)
    np.testing.assert_allclose(onnx_probs, reference, atol=2e-5)
    np.testing.assert_allclose(onnx_probs.sum(axis=1), 1.0, atol=1e-5)


def test_int8_and_fp16_load_and_agree_with_fp32(bundle: Path, corpus: Corpus) -> None:
    features = corpus.heldout_logmel
    fp32 = predict_probs(file_session(bundle / "model.onnx"), features)
    int8_session = file_session(bundle / "model.int8.onnx")
    fp16_session = file_session(bundle / "model.fp16.onnx")
    assert int8_session.get_providers()[0] == "CPUExecutionProvider"
    int8, fp16 = predict_probs(int8_session, features), predict_probs(fp16_session, features)
    assert int8.dtype == fp16.dtype == np.float32  # float32 in and out for every artifact
    assert np.mean(int8.argmax(1) == fp32.argmax(1)) > 0.9
    assert np.mean(fp16.argmax(1) == fp32.argmax(1)) > 0.97
    np.testing.assert_allclose(fp16, fp32, atol=2e-2)
    int8_ops = {node.op_type for node in onnx.load(str(bundle / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= int8_ops
    fp16_model = onnx.load(str(bundle / "model.fp16.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16_model.graph.initializer)


def test_held_out_speakers_score_clearly_above_chance(
    bundle: Path, corpus: Corpus, tmp_path: Path
) -> None:
    report = evaluate(
        bundle,
        _heldout(corpus, "held-out speakers"),
        "int8",
        speed=LIGHT_PROBE,
        inputs=corpus.heldout_logmel,
    )
    assert report.n_windows == len(corpus.heldout) and report.artifact == "int8"
    assert report.accuracy > 3 * CHANCE
    assert 0 < report.macro_f1 <= 1 and set(report.per_class_f1) == set(LABELS)
    assert np.asarray(report.confusion).sum() == report.n_windows
    assert np.trace(np.asarray(report.confusion)) == round(report.accuracy * report.n_windows)
    assert report.latency_us_p50 and report.latency_us_p99 and report.windows_per_s
    assert report.latency_us_p50 <= report.latency_us_p99
    data = json.loads(json.dumps(report.to_dict()))
    assert data["accuracy"] == report.accuracy and data["n_out_of_vocabulary"] == 0
    assert set(report.metrics("int8_")) >= {"int8_accuracy", "int8_macro_f1", "int8_latency_us_p99"}
    png = save_confusion_png(report, tmp_path / "confusion.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_manifest_evaluation_maps_foreign_words_to_unknown(
    bundle: Path, shared_data: Path, tmp_path: Path
) -> None:
    """FSDD digits (8 kHz) are outside the vocabulary: they are scored as ``_unknown_``."""
    rows = ["path,label,speaker"]
    fsdd = sorted((shared_data / "fsdd" / "recordings").glob("*_jackson_1*.wav"))[:4]
    rows += [f"{p},{p.name.split('_')[0]},jackson" for p in fsdd]
    yes = sorted((shared_data / "speech_commands" / "yes").glob("*.wav"))[:3]
    rows += [f"{p},yes,spk" for p in yes]
    manifest = tmp_path / "mixed.csv"
    manifest.write_text("\n".join(rows) + "\n")
    report = evaluate_manifest(bundle, manifest, "fp32")
    assert report.n_windows == 7 and report.n_out_of_vocabulary == 4
    assert set(report.per_class_f1) == {"yes", "_unknown_"}
    assert report.latency_us_p50 is None  # speed is opt-in


def test_streamed_features_give_the_batch_prediction(bundle: Path, corpus: Corpus) -> None:
    """The gateway's chunked front end feeds the model exactly what training computed."""
    window = corpus.heldout.windows[0]
    stream = LogMelStream()
    for start in range(0, window.size, 1600):  # 100 ms chunks
        stream.push(window[start : start + 1600])
    session = file_session(bundle / "model.onnx")
    streamed = predict_probs(session, stream.recent()[None])
    batch = predict_probs(session, logmel_batch(window[None]))
    np.testing.assert_allclose(streamed, batch, atol=1e-5)


@pytest.mark.parametrize("artifact", ["fp32", "fp16"])
def test_every_artifact_scores_the_same_set(bundle: Path, corpus: Corpus, artifact: str) -> None:
    report = evaluate(
        bundle, _heldout(corpus, "held-out"), artifact, speed=None, inputs=corpus.heldout_logmel
    )
    assert report.n_windows == len(corpus.heldout) and report.accuracy > 3 * CHANCE
