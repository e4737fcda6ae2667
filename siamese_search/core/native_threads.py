"""One setting for every native thread pool of a process: BLAS and FAISS's OpenMP.

The encoder limits BLAS only inside its own calls; the head's numpy matmuls and
FAISS's searches run outside that limit, on pools sized to the core count. Their
idle workers spin after each small matmul or search and take the core the encoder
needs: under 8 clients two such threads burned a core between them (bench/serving.py,
per-thread CPU). OpenMP's count is a per-thread setting, so a thread that searches
(a server's batch thread, a Ray actor) calls this itself.
"""

from __future__ import annotations


def limit_native_threads(threads: int) -> None:
    """BLAS (process-wide) and OpenMP (this thread) to `threads`, for good."""
    import faiss
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(max(1, threads))
    threadpool_limits(limits=max(1, threads))
