"""One module of one adapter: its corrected factors and its report record."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...adapters.peft import LoraModule
from ...correction.decompose import decompose_update
from ...correction.detection import detection_energies
from ...correction.measures import measure_factors
from ...correction.methods.base import CompanionUpdate, CorrectedFactors, CorrectionMethod
from ...correction.params import CorrectionParams
from ...correction.statistics import DetectionEnergies
from ...errors import CsuloraError
from ...report.records import ModuleReport
from ...subspace.estimate import SelectedSubspace, SubspaceBasis
from ...subspace.keys import Target
from ...subspace.params import INPUT_SIDE, OUTPUT_SIDE
from ...subspace.targets import resolved_kind


@dataclass(frozen=True)
class Outcome:
    report: ModuleReport
    new_b: torch.Tensor | None  # in the stored dtype; None when the module is kept
    # A' in the stored dtype where the method rewrites A (remove-inputs) or adds rank (readd, merge-safety).
    new_a: torch.Tensor | None = None
    report_if_unselected: ModuleReport | None = None  # a selecting method's report should the module not be selected


def correct_module(
    module: LoraModule,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    target: Target,
    subspace: SelectedSubspace,
    basis: SubspaceBasis,
    method: CorrectionMethod,
    params: CorrectionParams,
    companion: CompanionUpdate | None = None,
    side: str = OUTPUT_SIDE,
) -> Outcome:
    """One module of one adapter: its report and new factors (for a selecting method, a candidate).

    An input-side basis (`side`) lives in the module's input space: the update is read transposed, dW^T =
    s A^T B^T, whose output space that is, so every measure, detection sum and method applies to it unchanged
    (remove-inputs is then (I - Q Q^T) A^T, i.e. A' = A (I - Q Q^T)); the factors are turned back to be written.
    """
    device = subspace.basis.device
    if side == INPUT_SIDE:
        lora_b, lora_a = lora_a.T, lora_b.T
    stored_b, stored_a = lora_b.dtype, lora_a.dtype
    lora_b = lora_b.to(device, torch.float32)
    update = decompose_update(lora_b, lora_a.to(device, torch.float32), module.scale.value)
    detection = _detection(update, subspace, basis, params.two_sided)
    unchanged = CorrectedFactors(update.lora_b, update.lora_a)

    def module_report(effective: CorrectedFactors, status: str, note: str = "", **selection) -> ModuleReport:
        return ModuleReport(
            module=module.name,
            base_key=target.base_key,
            kind=resolved_kind(module, target.transposed).value,
            shape=(module.out_features, module.in_features),
            rank=module.scale.rank,
            alpha=module.scale.alpha,
            scale=module.scale.value,
            status=status,
            subspace_rank=subspace.rank,
            captured_energy=subspace.captured_energy,
            displacement_energy=basis.total_energy,
            figures=measure_factors(update, effective, subspace, params.eps, params.two_sided),
            note=note,
            output_rank=effective.rank if effective.rank != module.scale.rank else None,
            detection=detection,
            **selection,
        )

    if not subspace.has_signal and method.reads_subspace:
        # A weight folder: base and aligned agree here. A refusal-direction folder: the module does not write
        # to the residual stream, so it has no direction to remove.
        note = "the subspace holds no direction for this module: update left unchanged"
        selection = {"selected": False} if method.selects_modules else {}
        return Outcome(module_report(unchanged, "no_signal", note, **selection), None)
    if (params.two_sided or method.needs_right_vectors) and subspace.right is None:
        raise CsuloraError(
            f"the basis of {target.base_key} holds no right singular vectors (written by an older csulora), "
            f"which {{two_sided}} and {{method}} {method.name} need",
            parameter="subspace",
            hint="re-run estimate-subspace {out} into a new folder",
        )
    if not method.rewrites_b:
        return Outcome(module_report(unchanged, "unchanged"), None)
    if method.needs_companion and companion is None:
        note = "the safety adapter has no update of this module: nothing to merge"
        if not method.selects_modules:
            return Outcome(module_report(unchanged, "unchanged", note), None)
        # It still takes part in the selection (a share counts every module), and stays as it was either way.
        similarity = method.similarity(update, subspace)
        return Outcome(
            module_report(unchanged, "unchanged", note, selected=True, similarity=similarity),
            None,
            report_if_unselected=module_report(unchanged, "unchanged", note, selected=False, similarity=similarity),
        )
    candidate = method.corrected_factors(update, subspace, params, companion)
    # Measured on what is written: the factors rounded to the adapter's dtypes, not the float32 intermediates.
    new_b = candidate.lora_b.to(stored_b).cpu()
    a_changed = candidate.lora_a is not update.lora_a
    new_a = candidate.lora_a.to(stored_a).cpu() if a_changed else lora_a.cpu()
    written = CorrectedFactors(
        new_b.to(device, torch.float32), new_a.to(device, torch.float32) if a_changed else update.lora_a
    )
    new_a = new_a if a_changed else None
    if side == INPUT_SIDE:
        new_b, new_a = _as_stored(new_b, new_a, lora_a)
    if not method.selects_modules:
        return Outcome(module_report(written, "corrected"), new_b, new_a)
    similarity = method.similarity(update, subspace)
    note = method.note(subspace)
    return Outcome(
        module_report(written, "corrected", note, selected=True, similarity=similarity),
        new_b,
        new_a,
        report_if_unselected=module_report(unchanged, "unchanged", note, selected=False, similarity=similarity),
    )


def _as_stored(
    frame_b: torch.Tensor, frame_a: torch.Tensor | None, frame_lora_a: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B', A') to write, from the transposed frame's factors: B' = (frame A')^T, or the stored B (the frame's
    A, `frame_lora_a`, transposed back) where the frame kept its A; A' = (frame B')^T."""
    new_b = (frame_lora_a if frame_a is None else frame_a).T.contiguous().cpu()
    return new_b, frame_b.T.contiguous()


def _detection(update, subspace: SelectedSubspace, basis: SubspaceBasis, two_sided: bool) -> DetectionEnergies | None:
    """The detection sums (docs/method.md section 9): the in-subspace ones on the k columns used, the signed
    ones on every stored triplet. None where a two-sided score needs right vectors the basis lacks (the
    correction refuses that case with its own message)."""
    if two_sided and subspace.right is None and subspace.rank:
        return None
    return detection_energies(update, subspace, basis.select(1.0, None), two_sided)


def added_module(
    name: str, target: Target, subspace: SelectedSubspace, basis: SubspaceBasis, params: CorrectionParams
) -> tuple[ModuleReport, torch.Tensor, torch.Tensor]:
    """`readd --readd-everywhere` on a module the adapter does not target: its report and (B, A) at scale 1."""
    from ...correction.figures import CorrectionFigures, DirectionCounts
    from ...correction.methods.readd import added_factors

    if subspace.right is None:
        raise CsuloraError(
            f"the basis of {target.base_key} holds no right singular vectors, which readd needs",
            parameter="subspace",
            hint="re-run estimate-subspace {out} into a new folder",
        )
    factors = added_factors(subspace, params.alpha)
    added_energy = params.alpha**2 * float(subspace.singular_values.to(torch.float64).square().sum())
    report = ModuleReport(
        module=name,
        base_key=target.base_key,
        kind="linear",
        shape=(subspace.basis.shape[0], subspace.right.shape[0]),
        rank=0,
        alpha=0.0,
        scale=1.0,
        status="added",
        subspace_rank=subspace.rank,
        captured_energy=subspace.captured_energy,
        displacement_energy=basis.total_energy,
        figures=CorrectionFigures(0.0, added_energy, added_energy, 0.0, 0.0, DirectionCounts(0, 0, 0)),
        note="not targeted by the adapter: the alignment's change re-added as a new module",
        output_rank=factors.rank,
    )
    return report, factors.lora_b.cpu(), factors.lora_a.cpu()
