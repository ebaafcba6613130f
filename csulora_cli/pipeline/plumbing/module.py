"""One module of one adapter: its corrected B and its report record."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...adapters.peft import LoraModule
from ...correction.decompose import decompose_update
from ...correction.detection import detection_energies
from ...correction.measures import measure_correction
from ...correction.methods.base import CorrectionMethod
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
    new_b: torch.Tensor | None  # in the stored dtype; None when B is kept
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
    side: str = OUTPUT_SIDE,
) -> Outcome:
    """One module of one adapter: its report and new B (for a selecting method, a candidate).

    An input-side basis (`side`) lives in the module's input space: the update is read transposed, dW^T =
    s A^T B^T, whose output space that is, so every measure and detection sum applies unchanged to it.
    """
    device = subspace.basis.device
    stored_dtype = lora_b.dtype
    if side == INPUT_SIDE:
        lora_b, lora_a = lora_a.T, lora_b.T
    lora_b = lora_b.to(device, torch.float32)
    update = decompose_update(lora_b, lora_a.to(device, torch.float32), module.scale.value)
    detection = _detection(update, subspace, basis, params.two_sided)

    def module_report(effective_b: torch.Tensor, status: str, note: str = "", **selection) -> ModuleReport:
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
            figures=measure_correction(update, effective_b, subspace, params.eps, params.two_sided),
            note=note,
            detection=detection,
            **selection,
        )

    if not subspace.has_signal:
        note = "base and aligned weights do not differ: update left unchanged"
        selection = {"selected": False} if method.selects_modules else {}
        return Outcome(module_report(lora_b, "no_signal", note, **selection), None)
    if (params.two_sided or method.needs_right_vectors) and subspace.right is None:
        raise CsuloraError(
            f"the basis of {target.base_key} holds no right singular vectors (written by an older csulora), "
            f"which {{two_sided}} and {{method}} {method.name} need",
            parameter="subspace",
            hint="re-run estimate-subspace {out} into a new folder",
        )
    if not method.rewrites_b:
        return Outcome(module_report(lora_b, "unchanged"), None)
    if side == INPUT_SIDE:
        raise CsuloraError(
            f"{{method}} {method.name} rewrites B and cannot use an input-side basis", parameter="method"
        )
    candidate = method.corrected_b(update, subspace, params)
    # Measured on what is written: B' rounded to the adapter's dtype, not the float32 intermediate.
    new_b = candidate.to(stored_dtype).cpu()
    written = new_b.to(device, torch.float32)
    if not method.selects_modules:
        return Outcome(module_report(written, "corrected"), new_b)
    similarity = method.similarity(update, candidate)
    note = method.note(subspace)
    return Outcome(
        module_report(written, "corrected", note, selected=True, similarity=similarity),
        new_b,
        report_if_unselected=module_report(lora_b, "unchanged", note, selected=False, similarity=similarity),
    )


def _detection(update, subspace: SelectedSubspace, basis: SubspaceBasis, two_sided: bool) -> DetectionEnergies | None:
    """The detection sums (docs/method.md section 9): the in-subspace ones on the k columns used, the signed
    ones on every stored triplet. None where a two-sided score needs right vectors the basis lacks (the
    correction refuses that case with its own message)."""
    if two_sided and subspace.right is None and subspace.rank:
        return None
    return detection_energies(update, subspace, basis.select(1.0, None), two_sided)
