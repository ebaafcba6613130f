"""Small dense factorisations (QR, SVD, eigh) run on one CPU thread.

LAPACK behind torch spin-waits its OpenMP threads; when the CPU is also busy elsewhere (csulora's own
reader thread hashing a shard, another job on the runner) a small factorisation slows down by 6-50x:
measured here, ten SVDs of an 8192x16 matrix took 0.064 s on two threads beside one busy process and
0.011 s on one. Every factorisation on the correction path has one side of at most a few hundred, where
one thread loses little (0.053 s vs 0.040 s for a 266x2048 SVD on an idle machine), while the large
matrix products around them keep all threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread(tensor: torch.Tensor) -> Iterator[None]:
    if tensor.device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def qr(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduced QR."""
    with one_thread(matrix):
        return torch.linalg.qr(matrix)


def svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD (full_matrices=False)."""
    with one_thread(matrix):
        return torch.linalg.svd(matrix, full_matrices=False)


def left_singular_pairs(wide: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left singular vectors and values of a wide (l, n) matrix, l << n, from its float64 Gram matrix.

    eigh of the (l, l) Gram costs one product and a tiny factorisation instead of an SVD of the whole
    (l, n) matrix (measured 0.030 s against 0.20 s for 266x8192). Squaring limits accuracy to about
    1e-8 of the largest singular value, far below what the energy rule resolves.
    """
    gram = wide.double() @ wide.double().T
    with one_thread(gram):
        eigenvalues, eigenvectors = torch.linalg.eigh(gram)
    order = torch.argsort(eigenvalues, descending=True)
    return eigenvectors[:, order], eigenvalues[order].clamp(min=0.0).sqrt()
