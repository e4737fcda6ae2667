"""Indexer: owns the *index artifact* (versioned indexes of reference texts: vectors,
ids, labels and texts, in FAISS files or a Milvus collection).

`indexer.build` writes versions (build, add, delete: staged, then published
atomically; `indexer.layout` names the files and holds the locks); `indexer.store`
is the one reader, which the server and `siamese-evaluate` search through;
`indexer.backends` holds the vector engines behind one interface (FAISS; Milvus);
`indexer.ray_engine` embeds large corpora on Ray. Imports only `siamese_search.core`.
"""
