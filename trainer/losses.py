"""Losses for L2-normalised embeddings: a proxy softmax (default) and triplet losses.

`proxy_softmax_loss` (the default, `--loss proxy`): every class has a learned proxy
vector; an embedding's logits are its cosine similarities to the unit proxies times a
scale s, under softmax cross-entropy (Wang et al., "NormFace", 2017; Movshovitz-Attias
et al., "No Fuss Distance Metric Learning using Proxies", 2017). Each step compares
every example with every class, so it scales to hundreds of classes with a handful of
examples each, where a batch rarely holds the hard triplets. Proxies start at the
class means of the initial embeddings.

`supervised_contrastive_loss` goes beside the proxy loss (`--contrastive-weight`): it
compares the batch's examples with each other (Khosla et al., "Supervised Contrastive
Learning", 2020). The proxy loss only pulls each example towards its class's proxy;
the server labels a query by its nearest *examples*, and this term pulls a class's
examples towards each other directly (measured in docs/benchmarks.md).

The triplet losses (`--loss triplet`, the design card's):

All three compute d(x, y) = 1 - <x, y> (the cosine distance the original notebook's
kNN used, in [0, 2]) and the hinge  max(0, d(a, p) - d(a, n) + margin)  of
Schroff et al., "FaceNet" (2015). They differ in which triplets they score:

- `batch_hard_triplet_loss`: per anchor, its farthest positive and closest negative
  in the batch (Hermans et al., "In Defense of the Triplet Loss", 2017). The default:
  on the sample set it beats the others (README.md, "Results").
- `semi_hard_triplet_loss`: per (anchor, positive), the closest negative that is
  still farther than the positive (FaceNet); the hardest negative if none is.
- `triplet_loss`: explicitly given (anchor, positive, negative) index triplets; with
  random triplets this is the original notebook's recipe.

Inputs: `embeddings` float32 (batch, dim), rows L2-normalised; `labels` int (batch,).
Example:
    >>> loss = batch_hard_triplet_loss(tf.math.l2_normalize(x, 1), y, margin=0.4)
"""

from __future__ import annotations

import tensorflow as tf

_FAR = 4.0  # larger than any cosine distance: masks entries out of a min


def cosine_distances(embeddings: tf.Tensor) -> tf.Tensor:
    return 1.0 - tf.matmul(embeddings, embeddings, transpose_b=True)


def _masks(labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    same = tf.equal(labels[:, None], labels[None, :])
    not_self = tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool))
    return tf.logical_and(same, not_self), tf.logical_not(same)


def batch_hard_triplet_loss(embeddings: tf.Tensor, labels: tf.Tensor, margin: float) -> tf.Tensor:
    distances = cosine_distances(embeddings)
    positive, negative = _masks(labels)
    hardest_positive = tf.reduce_max(tf.where(positive, distances, 0.0), axis=1)
    hardest_negative = tf.reduce_min(tf.where(negative, distances, _FAR), axis=1)
    has_pair = tf.logical_and(tf.reduce_any(positive, 1), tf.reduce_any(negative, 1))
    losses = tf.nn.relu(hardest_positive - hardest_negative + margin)
    weights = tf.cast(has_pair, losses.dtype)
    return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def semi_hard_triplet_loss(embeddings: tf.Tensor, labels: tf.Tensor, margin: float) -> tf.Tensor:
    distances = cosine_distances(embeddings)
    positive, negative = _masks(labels)
    d_ap = distances[:, :, None]  # (anchor, positive, 1)
    d_an = distances[:, None, :]  # (anchor, 1, negative)
    semi_hard = tf.logical_and(negative[:, None, :], d_an > d_ap)
    closest_semi_hard = tf.reduce_min(tf.where(semi_hard, d_an, _FAR), axis=2)
    hardest = tf.reduce_min(tf.where(negative, distances, _FAR), axis=1)[:, None]
    chosen = tf.where(tf.reduce_any(semi_hard, axis=2), closest_semi_hard, hardest)
    losses = tf.nn.relu(distances - chosen + margin)
    weights = tf.cast(positive, losses.dtype)
    return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def triplet_loss(embeddings: tf.Tensor, triplets: tf.Tensor, margin: float) -> tf.Tensor:
    """`triplets`: int (n, 3) rows of (anchor, positive, negative) batch indices."""
    anchor = tf.gather(embeddings, triplets[:, 0])
    d_ap = 1.0 - tf.reduce_sum(anchor * tf.gather(embeddings, triplets[:, 1]), axis=1)
    d_an = 1.0 - tf.reduce_sum(anchor * tf.gather(embeddings, triplets[:, 2]), axis=1)
    return tf.reduce_mean(tf.nn.relu(d_ap - d_an + margin))


def proxy_softmax_loss(
    embeddings: tf.Tensor, labels: tf.Tensor, proxies: tf.Variable, scale: float
) -> tf.Tensor:
    """Mean softmax cross-entropy of `scale * cos(embedding, proxy_c)` over classes c.

    `proxies`: float (n_classes, dim), one row per class index in `labels`.
    Example:
        >>> loss = proxy_softmax_loss(tf.math.l2_normalize(x, 1), y, proxies, scale=16.0)
    """
    logits = scale * tf.matmul(embeddings, tf.math.l2_normalize(proxies, axis=1), transpose_b=True)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


def supervised_contrastive_loss(
    embeddings: tf.Tensor, labels: tf.Tensor, temperature: float
) -> tf.Tensor:
    """Mean over anchors of -mean_p log softmax_a(<x_i, x_a> / t)[p]: each anchor's
    same-label examples (p) against every other example in the batch (a != i).

    Anchors with no other example of their label in the batch are left out (a uniform
    batch over many classes has some); 0 when none has one.
    Example:
        >>> loss = supervised_contrastive_loss(tf.math.l2_normalize(x, 1), y, 0.1)
    """
    positive, _ = _masks(labels)
    itself = tf.eye(tf.shape(labels)[0], dtype=tf.bool)
    similarities = tf.matmul(embeddings, embeddings, transpose_b=True) / temperature
    logits = tf.where(itself, -1e9, similarities)  # an example is not its own candidate
    log_prob = logits - tf.reduce_logsumexp(logits, axis=1, keepdims=True)
    count = tf.reduce_sum(tf.cast(positive, tf.float32), axis=1)
    per_anchor = -tf.reduce_sum(tf.where(positive, log_prob, 0.0), axis=1) / tf.maximum(count, 1.0)
    anchors = tf.cast(count > 0, tf.float32)
    return tf.reduce_sum(per_anchor * anchors) / tf.maximum(tf.reduce_sum(anchors), 1.0)
