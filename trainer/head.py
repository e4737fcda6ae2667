"""The siamese head as a Keras model (residual or the design card's), and its export
to plain numpy weights.

Keras is used to *train* the head. Serving and indexing run the same arithmetic in
numpy (`siamese_search.core.numpy_head`): one `model.predict()` on a single vector costs ~30 ms,
the numpy forward pass well under 1 ms, and the server then needs no TensorFlow.
"""

from __future__ import annotations

import keras
import numpy as np

from siamese_search.trainer.config import HeadConfig


def build_member(input_dim: int, config: HeadConfig, name: str) -> keras.Model:
    """One head of the design card: 512 -> 256 -> BN -> 64 (L2) -> 128 -> unit norm."""
    inputs = keras.Input((input_dim,), name=f"{name}_input")
    x = keras.layers.Dense(config.hidden_units, activation="relu", name=f"{name}_dense1")(inputs)
    x = keras.layers.Dropout(config.dropout, name=f"{name}_dropout1")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_batchnorm")(x)
    x = keras.layers.Dense(
        config.bottleneck_units,
        activation="relu",
        kernel_regularizer=keras.regularizers.l2(config.l2),
        name=f"{name}_dense2",
    )(x)
    x = keras.layers.Dropout(config.dropout, name=f"{name}_dropout2")(x)
    x = keras.layers.Dense(config.embedding_dim, name=f"{name}_dense3")(x)
    # UnitNormalization is the built-in twin of the original's Lambda(l2_normalize),
    # and unlike a Lambda it reloads without safe_mode=False.
    outputs = keras.layers.UnitNormalization(name=f"{name}_normalize")(x)
    return keras.Model(inputs, outputs, name=name)


def build_residual(input_dim: int, config: HeadConfig) -> keras.Model:
    """unit(x + Dense(x)), the Dense layer starting at zero: the identity at step 0."""
    inputs = keras.Input((input_dim,), name="sentence_vector")
    correction = keras.layers.Dense(
        input_dim,
        kernel_initializer="zeros",
        kernel_regularizer=keras.regularizers.l2(config.residual_l2)
        if config.residual_l2
        else None,
        name="residual",
    )(inputs)
    shifted = keras.layers.Add(name="corrected")([inputs, correction])
    outputs = keras.layers.UnitNormalization(name="embedding")(shifted)
    return keras.Model(inputs, outputs, name="residual_head")


def build_head(input_dim: int, config: HeadConfig) -> tuple[keras.Model, keras.Model]:
    """Return (head, members): `head` maps vectors to the retrieval space, `members`
    maps them to what the loss trains (the seed head: each member's output; the
    residual head: the head itself)."""
    if config.kind == "residual":
        head = build_residual(input_dim, config)
        return head, head
    inputs = keras.Input((input_dim,), name="sentence_vector")
    outputs = [
        build_member(input_dim, config, f"member{i}")(inputs) for i in range(config.ensemble)
    ]
    mean = outputs[0] if len(outputs) == 1 else keras.layers.Average(name="average")(outputs)
    head = keras.Model(
        inputs, keras.layers.UnitNormalization(name="embedding")(mean), name="siamese_head"
    )
    members = keras.Model(inputs, outputs, name="siamese_members")
    return head, members


def export_weights(head: keras.Model, config: HeadConfig) -> dict[str, np.ndarray]:
    """Flatten the head's inference-time weights into named numpy arrays
    (the names `siamese_search.core.numpy_head` reads)."""
    arrays: dict[str, np.ndarray] = {}
    if config.kind == "residual":
        kernel, bias = head.get_layer("residual").get_weights()
        arrays["residual/kernel"], arrays["residual/bias"] = kernel, bias
        return {name: np.asarray(value, dtype=np.float32) for name, value in arrays.items()}
    for i in range(config.ensemble):
        member = head.get_layer(f"member{i}")
        prefix = f"member{i}/"
        for layer_name in ("dense1", "dense2", "dense3"):
            kernel, bias = member.get_layer(f"member{i}_{layer_name}").get_weights()
            arrays[prefix + layer_name + "/kernel"] = kernel
            arrays[prefix + layer_name + "/bias"] = bias
        norm = member.get_layer(f"member{i}_batchnorm")
        gamma, beta, moving_mean, moving_var = norm.get_weights()
        # fold inference-time batch norm into one scale and shift
        scale = gamma / np.sqrt(moving_var + norm.epsilon)
        arrays[prefix + "batchnorm/scale"] = scale
        arrays[prefix + "batchnorm/shift"] = beta - moving_mean * scale
    return {name: np.asarray(value, dtype=np.float32) for name, value in arrays.items()}
