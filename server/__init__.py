"""Server: the gRPC front door. Embeds queries with the model, searches the current
index version, votes labels. Reads artifacts only through
`siamese_search.core.model_artifact` and `siamese_search.indexer.store`; writes nothing.
Never imports the trainer (no TensorFlow in the serving process).
"""
