"""Indexer: owns the *index artifact* (versioned FAISS indexes of reference texts).

`indexer.store.open_index` is the one reader: the server and `siamese-evaluate`
both search through it. `indexer.backends` is the seam where a second vector engine
(a distributed one) will plug in beside FAISS. Imports only `siamese_search.core`.
"""
