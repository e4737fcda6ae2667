"""Server: the gRPC front door. Embeds queries with the model, searches the current
index version, votes labels. Reads artifacts only through `trainer.model_artifact`
and `indexer.store`; writes nothing.
"""
