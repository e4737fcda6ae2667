"""siamese-search: few-shot text retrieval and labelling over gRPC.

The installed import namespace. Its parts, by the artifact each one owns:

- `siamese_search.core` (this folder): the kernel every application imports and that
  imports none of them: errors, atomic IO, input tables, provenance, the encoders,
  the model artifact's loader and its numpy forward pass, the neighbour vote.
- `siamese_search.trainer` (folder `trainer/`): learns the head, writes model
  directories, evaluates them.
- `siamese_search.indexer` (folder `indexer/`): writes and reads index versions.
- `siamese_search.server` (folder `server/`): the gRPC service.

Data flows one way: trainer -> model artifact -> indexer -> index artifact -> server;
`make lint` checks the direction (import-linter contracts in pyproject.toml).
"""
