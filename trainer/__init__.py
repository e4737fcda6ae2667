"""Trainer: learns the siamese head and writes the *model artifact*.

Data flows one way: trainer -> model artifact -> indexer -> index artifact -> server.
This package alone writes model directories (`trainer.model_writer`); every package
reads them with `siamese_search.core.model_artifact.load_model`. `trainer.evaluate`
sits on top of the indexer, so evaluation searches exactly as the server does.
"""
