"""The closest new B for a fixed A, from factors (docs/method.md section 5).

Only B may change (docs/method.md section 1), so a target update X that is not of the form s B' A is met in
the least-squares sense: B' = X A^T (A A^T)^+ / s, whose update s B' A = X Pi_A is X with its rows
projected onto A's row space (Pi_A = A^T (A A^T)^+ A). Every target here is a sum of left products of
dW and of dW P_in (P_in = W_k W_k^T), so nothing larger than (m, r) or (n, r) is formed.
"""

from __future__ import annotations

import torch

# Eigenvalues of A A^T below this fraction of the largest count as zero: A's singular values below 1e-6
# of its largest (float32 resolves ~1e-7), including exact duplicates whose float64 Gram is ~1e-16 off.
GRAM_RELATIVE_TOLERANCE = 1e-12


def gram_pinv(lora_a: torch.Tensor) -> torch.Tensor:
    """(A A^T)^+: (r, r), from the float64 eigendecomposition of the Gram matrix, in A's dtype."""
    gram = lora_a.double() @ lora_a.double().T
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)
    cutoff = GRAM_RELATIVE_TOLERANCE * float(eigenvalues.max()) if eigenvalues.numel() else 0.0
    kept = eigenvalues > cutoff
    inverse = torch.where(kept, 1.0 / torch.where(kept, eigenvalues, torch.ones_like(eigenvalues)), 0.0)
    return ((eigenvectors * inverse) @ eigenvectors.T).to(lora_a.dtype)


def row_space_b(lora_b: torch.Tensor, lora_a: torch.Tensor, pinv: torch.Tensor) -> torch.Tensor:
    """B (A A^T)(A A^T)^+: the B' of the target dW itself (equal to B when A has full row rank)."""
    return lora_b @ ((lora_a @ lora_a.T) @ pinv)


def input_side_b(lora_b: torch.Tensor, lora_a: torch.Tensor, right: torch.Tensor, pinv: torch.Tensor) -> torch.Tensor:
    """The B' of the target dW P_in: B (A W)(A W)^T (A A^T)^+, so s B' A = dW P_in Pi_A."""
    projected = lora_a @ right  # (r, k)
    return lora_b @ (projected @ (projected.T @ pinv))
