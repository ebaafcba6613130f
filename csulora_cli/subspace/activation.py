"""Data-informed subspaces of one module from its activations (docs/method.md section 12): pure numerics.

Second moments and means in, a `SubspaceBasis` out. Running the model and capturing activations is
`inference/`; writing the folder, `folder.py`.
"""

from __future__ import annotations

import torch

from .estimate import SubspaceBasis, no_displacement

# Sigma_contrast + ridge * (tr(Sigma_contrast) / n) I: a ridge relative to the mean eigenvalue, so that it
# scales with the activations' magnitude. Fewer contrast tokens than the width n leave Sigma_contrast
# singular; with the ridge, a direction the contrast prompts never excite scores its harmful energy divided
# by the ridge times the mean contrast energy rather than infinity.
from .params import DEFAULT_RIDGE


def contrast_directions(
    harmful: torch.Tensor, contrast: torch.Tensor | None, rank: int, ridge: float = DEFAULT_RIDGE
) -> SubspaceBasis:
    """The `rank` input directions the harmful prompts excite and the contrast ones do not.

    harmful, contrast: (n, n) second moments E[x x^T] of the module's inputs. The directions are the top
    generalized eigenvectors of (Sigma_h, Sigma_c + ridge * tr(Sigma_c) / n * I): v maximising
    v^T Sigma_h v / v^T Sigma_c v. Without a contrast, Sigma_c = I (no ridge): the top eigenvectors of
    Sigma_h. They are orthonormalised in order (QR), so the first j columns span the top j eigenvectors
    for every j. `singular_values` holds sqrt(lambda_j), so that `select(energy)` reads the share of the
    generalized spectrum (`total_energy` = the sum of its positive eigenvalues).
    """
    n = harmful.shape[0]
    harmful = _symmetric(harmful.double())
    if contrast is None:
        values, vectors = torch.linalg.eigh(harmful)
    else:
        regularised = _symmetric(contrast.double())
        level = float(torch.trace(regularised)) / n
        regularised = regularised + ridge * (level if level > 0 else 1.0) * torch.eye(n, dtype=torch.float64)
        # Whitening by the Cholesky factor L (Sigma_c = L L^T) turns the pencil into the symmetric M =
        # L^-1 Sigma_h L^-T, whose eigenvectors w give the generalized ones as v = L^-T w.
        factor = torch.linalg.cholesky(regularised)
        whitened = torch.linalg.solve_triangular(factor, harmful, upper=False)
        whitened = torch.linalg.solve_triangular(factor, whitened.T, upper=False)
        values, whitened_vectors = torch.linalg.eigh(_symmetric(whitened))
        vectors = torch.linalg.solve_triangular(factor.T, whitened_vectors, upper=True)
    order = torch.argsort(values, descending=True)
    values, vectors = values[order].clamp(min=0.0), vectors[:, order]
    keep = min(rank, n)
    total = float(values.sum())
    if keep == 0 or total <= 0.0:
        return no_displacement(n, n, 0.0, float(torch.trace(harmful)))
    basis = ordered_orthonormal(vectors[:, :keep])
    return SubspaceBasis(
        basis=basis.float().contiguous(),
        singular_values=values[:keep].sqrt().float().contiguous(),
        total_energy=total,
        reference_energy=float(torch.trace(harmful)),
    )


def ordered_orthonormal(vectors: torch.Tensor) -> torch.Tensor:
    """Q of the QR of `vectors` (n, K), signs chosen so that diag(R) > 0: span(Q[:, :j]) = span(V[:, :j])."""
    q, r = torch.linalg.qr(vectors)
    signs = torch.sign(torch.diagonal(r))
    return q * torch.where(signs == 0, torch.ones_like(signs), signs)


def refusal_direction(mean_harmful: torch.Tensor, mean_contrast: torch.Tensor) -> SubspaceBasis:
    """r = (mu_h - mu_c) / ||mu_h - mu_c||, one column (m, 1); no column when the two means coincide.

    `singular_values` holds ||mu_h - mu_c|| and `total_energy` its square, so one column holds all of it.
    """
    difference = mean_harmful.double() - mean_contrast.double()
    m = difference.shape[0]
    norm = float(difference.norm())
    if norm == 0.0:
        return empty_basis(m)
    return SubspaceBasis(
        basis=(difference / norm)[:, None].float().contiguous(),
        singular_values=torch.tensor([norm], dtype=torch.float32),
        total_energy=norm * norm,
        reference_energy=float(mean_harmful.double().square().sum()),
    )


def empty_basis(rows: int) -> SubspaceBasis:
    """No column: a module a refusal direction does not apply to, which every correction leaves unchanged."""
    return no_displacement(rows, 0)


def _symmetric(matrix: torch.Tensor) -> torch.Tensor:
    return (matrix + matrix.T) / 2
