"""k-means in PyTorch: pure chunked kernels, seeded init, and a distributed Lloyd estimator."""

from curate.kmeans.estimator import KMeans
from curate.kmeans.init import TooFewDistinctPoints, kmeans_plusplus, random_init
from curate.kmeans.kernels import accumulate_, assign_chunk, chunk_rows_for, sq_dists
from curate.kmeans.source import RowSource

__all__ = [
    "KMeans",
    "RowSource",
    "TooFewDistinctPoints",
    "accumulate_",
    "assign_chunk",
    "chunk_rows_for",
    "kmeans_plusplus",
    "random_init",
    "sq_dists",
]
