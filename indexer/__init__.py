"""Indexer: owns the *index artifact* (versioned indexes of reference texts: vectors,
ids, labels and texts, in FAISS files or a Milvus collection).

Writing, one module per job: `indexer.build` decides what each write (build, add,
delete, a server's changes: `indexer.changes`) makes of the current version;
`indexer.transaction` runs every write the same way (writer lock, staging, atomic
publish; `indexer.layout` names the files and holds the locks), filling a
`indexer.version_writer` with the base version's segments (`indexer.segments`:
linked, or merged) and a new segment of `indexer.ingest`'s new rows, and mirrors it
through `indexer.mirror` (nowhere, or Milvus);
`indexer.versions` lists and rolls back. `indexer.store`
is the one reader, which the server and `siamese-evaluate` search through;
`indexer.backends` holds the vector engines behind one interface (FAISS; Milvus);
`indexer.ray_engine` embeds large corpora on Ray. Imports only `siamese_search.core`.
"""
