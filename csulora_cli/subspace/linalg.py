"""Dense factorisations: small ones (QR, SVD, eigh) on one CPU thread, tall QRs at GEMM speed.

LAPACK behind torch spin-waits its OpenMP threads; when the CPU is also busy elsewhere (csulora's own
reader thread hashing a shard, another job on the runner) a small factorisation slows down by 6-50x:
measured here, ten SVDs of an 8192x16 matrix took 0.064 s on two threads beside one busy process and
0.011 s on one. Every factorisation on the correction path has one side of at most a few hundred, where
one thread loses little (0.053 s vs 0.040 s for a 266x2048 SVD on an idle machine), while the large
matrix products around them keep all threads.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# torch's thread count is one setting for the whole process, while estimators run on several Python
# threads: the count is the smallest one any open `threads` block asks for, kept under a lock, so that
# overlapping blocks never leave the process on the wrong count.
_thread_setting = threading.Lock()
_asked: Counter[int] = Counter()
_restore_to = 0


@contextmanager
def threads(count: int, device: torch.device | None = None) -> Iterator[None]:
    """torch on at most `count` threads inside the block (CPU only); blocks may nest and overlap."""
    global _restore_to
    if device is not None and device.type != "cpu":
        yield
        return
    with _thread_setting:
        if not _asked:
            _restore_to = torch.get_num_threads()
        _asked[count] += 1
        _apply()
    try:
        yield
    finally:
        with _thread_setting:
            _asked[count] -= 1
            if not _asked[count]:
                del _asked[count]
            _apply()


def _apply() -> None:
    """Under the lock: the smallest count asked for, or the process's own when no block is open."""
    count = min(min(_asked), _restore_to) if _asked else _restore_to
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


@contextmanager
def one_thread(tensor: torch.Tensor) -> Iterator[None]:
    with threads(1, tensor.device):
        yield


def qr(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduced QR."""
    with one_thread(matrix):
        return torch.linalg.qr(matrix)


# Below this many rows a Householder QR on one thread costs a few milliseconds: no need for Cholesky QR.
CHOLESKY_QR_MIN_ROWS = 1024
# After CholeskyQR's first round, Q^T Q may differ from the identity by this much (max entry) for the
# second round to make it orthonormal to round-off; more means the input was too ill-conditioned.
CHOLESKY_QR_REPAIRABLE = 0.1


def orthonormal_basis(tall: torch.Tensor, rounds: int = 2) -> torch.Tensor:
    """Orthonormal columns spanning the range of a tall (m, l) matrix, m >= l: the Q of a reduced QR.

    CholeskyQR2 (Fukaya et al. 2014, Yamamoto et al. 2015): twice, Q <- Q R^-1 with R the Cholesky
    factor of the Gram Q^T Q. Its work is a Gram product and a product with R^-1 (l x l), GEMM-shaped and fast on
    any number of threads, where a Householder QR is LAPACK's slowest kind of kernel: 8192 x 266 in float32
    took 78 ms on one thread that way, 39 ms as CholeskyQR2 with float64 Grams, 15 ms in float32
    (measured, 2 cores). CholeskyQR2 is stable while the input's condition number is below about
    1/sqrt(eps): 4e3 in float32, 7e7 in float64. So float32 first; a Gram that is not positive definite, or
    a first round that leaves Q too far from orthonormal, moves on to float64, then to Householder, which
    copes with any input, rank-deficient ones included.

    `rounds=1` (CholeskyQR) is for a basis that only has to span the input and be well-conditioned, not
    orthonormal to round-off: its columns are orthonormal to about eps * cond(input)^2.
    """
    rows, columns = tall.shape
    if rows < max(CHOLESKY_QR_MIN_ROWS, columns):
        return qr(tall)[0]
    precisions = [tall.dtype] if tall.dtype == torch.float64 else [tall.dtype, torch.float64]
    for precision in precisions:
        basis = _cholesky_qr(tall.to(precision), rounds)
        if basis is not None:
            return basis.to(tall.dtype)
    return qr(tall)[0]


def _cholesky_qr(work: torch.Tensor, rounds: int) -> torch.Tensor | None:
    """CholeskyQR repeated `rounds` times in `work`'s dtype, or None where it is not reliable for this input."""
    identity = torch.eye(work.shape[1], dtype=work.dtype, device=work.device)
    for round_ in range(rounds):
        gram = work.T @ work
        if round_ == 1:
            if not float((gram - identity).abs().max()) <= CHOLESKY_QR_REPAIRABLE:  # NaN too
                return None
        lower, info = torch.linalg.cholesky_ex(gram)
        if int(info) != 0:
            return None
        # Q = work R^-1 as a product with the (l, l) inverse: MKL's right-sided triangular solve runs far
        # below GEMM speed, and the product is as accurate here (docs/performance.md).
        work = work @ torch.linalg.solve_triangular(lower.mH, identity, upper=True)
    return work


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
    wide = wide.double()
    gram = wide @ wide.T
    with one_thread(gram):
        eigenvalues, eigenvectors = torch.linalg.eigh(gram)
    order = torch.argsort(eigenvalues, descending=True)
    return eigenvectors[:, order], eigenvalues[order].clamp(min=0.0).sqrt()
