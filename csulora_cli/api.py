"""The Python API: one function per command, each taking a frozen request (the CLI is a thin wrapper).

    from csulora_cli.api import CorrectRequest, EstimateRequest, InspectRequest, SubspaceSpec
    from csulora_cli.api import correct, estimate_subspace, inspect, verify_outputs

    estimate_subspace(EstimateRequest(base="base", aligned="aligned", adapter="adapter", out="subspace"))
    subspace = SubspaceSpec(subspace="subspace")
    (report,) = correct(CorrectRequest(adapters="adapter", out="adapter-safe", subspace=subspace))
    gate = inspect(InspectRequest(adapter="adapter", subspace=subspace, gate="reversal", fail_below=-0.05)).gate
    (verified,) = verify_outputs(("adapter-safe",))
    probed = probe(ProbeRequest(adapters=("adapter",), model="aligned", prompts="harmful.txt", fail_above=0.2))

Each function's docstring has an example: `estimate_subspace`, `correct`, `inspect`, `detect_adapter`,
`verify_outputs`, `push_output`, `probe` (`probe` needs the `probe` extra: transformers and peft). Requests
take folders as `str` or `Path`, and `adapters` one adapter or a list; they are frozen and checked as they
are built, so a request that cannot run is refused before any file is opened. Errors are
`csulora_cli.errors.CsuloraError`s naming the file, tensor or parameter at fault.
"""

from __future__ import annotations

from .checkpoints.hub.options import HubOptions
from .correction.params import CorrectionParams
from .events import Events, SilentEvents
from .pipeline.commands.correct import correct
from .pipeline.commands.estimate import estimate_subspace
from .pipeline.commands.inspect import detect_adapter, inspect
from .pipeline.commands.probe import probe
from .pipeline.commands.publish import push_output
from .pipeline.commands.verify import verify_outputs
from .pipeline.plumbing.basis_source import resolve_device
from .pipeline.types.probe import AdapterProbe, ProbeRequest, ProbeResult, SetProbe
from .pipeline.types.requests import (
    CorrectRequest,
    EstimateRequest,
    InspectRequest,
    PushRequest,
    PushSpec,
    SubspaceSpec,
)
from .pipeline.types.results import (
    EstimateResult,
    GateCheck,
    InspectResult,
    ModuleSubspace,
    ModuleSummary,
    PushedOutput,
    VerifyResult,
)
from .subspace.params import EstimationParams

__all__ = [
    "AdapterProbe",
    "CorrectRequest",
    "CorrectionParams",
    "EstimateRequest",
    "EstimateResult",
    "EstimationParams",
    "Events",
    "GateCheck",
    "HubOptions",
    "InspectRequest",
    "InspectResult",
    "ModuleSubspace",
    "ModuleSummary",
    "ProbeRequest",
    "ProbeResult",
    "PushRequest",
    "PushSpec",
    "PushedOutput",
    "SetProbe",
    "SilentEvents",
    "SubspaceSpec",
    "VerifyResult",
    "correct",
    "detect_adapter",
    "estimate_subspace",
    "inspect",
    "probe",
    "push_output",
    "resolve_device",
    "verify_outputs",
]
