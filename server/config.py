"""Every server setting in one place, with working defaults; `siamese-serve` fills it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from siamese_search.core.errors import UserError


@dataclass(frozen=True)
class Limits:
    """Request limits, reported by GetInfo and enforced with INVALID_ARGUMENT."""

    max_k: int = 100
    max_text_chars: int = 10_000
    max_batch: int = 256

    @property
    def max_request_bytes(self) -> int:
        # a full batch of maximal texts (4 bytes per character in UTF-8) plus framing
        return self.max_batch * (self.max_text_chars * 4 + 64) + 64 * 1024


@dataclass(frozen=True)
class ServerConfig:
    index_dir: Path
    model_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int | None = None  # None: no metrics endpoint
    workers: int = 8
    threads: int = 1  # BLAS threads per process: 1 served 2x the calls/s of 2 on 2 cores
    limits: Limits = Limits()
    reload_interval: float = 2.0  # seconds between checks of CURRENT; 0 disables polling
    grace_seconds: float = 10.0  # how long SIGTERM waits for in-flight calls
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = None
    max_send_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UserError("TLS needs both --tls-cert and --tls-key")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise UserError(f"{path}: no such file (TLS certificate or key)")
        if self.token is not None and len(self.token) < 16:
            raise UserError("the bearer token must be at least 16 characters")
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port {self.port} is not a TCP port")
