"""The kernel: what `trainer`, `indexer` and `server` share, and nothing that uses them.

errors (bad input vs bugs), atomic writes, input tables, provenance, the sentence
encoders, the model artifact's reader and numpy forward pass, and the neighbour vote.
Importing it has no side effects and does not import TensorFlow.
"""
