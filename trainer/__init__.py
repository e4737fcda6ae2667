"""Trainer: learns the siamese head and owns the *model artifact*.

Data flows one way: trainer -> model artifact -> indexer -> index artifact -> server.
This package alone writes model directories, and `trainer.model_artifact.load_model`
is the one loader every other package uses.
"""

import os as _os

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing on a CPU-only machine) is
# noise in a CLI's output; real errors still surface as Python exceptions.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
