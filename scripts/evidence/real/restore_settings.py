"""The restore part's correction families (docs/results/real_model_restore.md): each a list of settings swept
on the validation split, and how its held-out rows follow from the sweep.

A family runs on held-out either at every setting (`none`, the paper's `csulora`, and the `scale` baseline,
whose line every other family is compared against), at the one setting chosen on validation, or, for a
random control, at the setting chosen for the family it controls (the same K on a random subspace).
"""

from __future__ import annotations

from dataclasses import dataclass

from .corrections import Setting

EVERY = "every"  # every setting runs on held-out
CHOSEN = "chosen"  # the setting chosen on validation runs on held-out
CONTROL = "control"  # the control of the setting chosen for `control_of`


@dataclass(frozen=True)
class Family:
    name: str
    settings: tuple[Setting, ...]
    heldout: str = CHOSEN
    control_of: str | None = None  # for a CONTROL family: the family whose chosen setting it mirrors
    # The adapter shapes it runs on (None: every one); a family that differs from another only on some shapes.
    shapes: tuple[str, ...] | None = None
    # Whether it is swept on validation (a control read only against the held-out choice need not be).
    validate: bool = True
    # The held-out seeds it runs on (None: every held-out seed); the goal compares a control with its family
    # on the seeds they share.
    heldout_seeds: tuple[int, ...] | None = None

    def runs_on(self, shape: str) -> bool:
        return self.shapes is None or shape in self.shapes

    def control_for(self, chosen: Setting) -> Setting:
        """This control's setting at the same knobs as `chosen` (only the subspace differs)."""
        return next(s for s in self.settings if s.method == chosen.method and s.params == chosen.params)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "settings": [s.label for s in self.settings],
            "heldout": self.heldout,
            "control_of": self.control_of,
            "shapes": None if self.shapes is None else list(self.shapes),
            "validate": self.validate,
            "heldout_seeds": None if self.heldout_seeds is None else list(self.heldout_seeds),
        }


# Safe LoRA's layer count as a share of the adapter's modules: decimals whose ceil(F x modules) is the exact
# sixth and third of both shapes' 210 and 60 modules (1/6 as a float rounds 35 up to 36).
SIXTH, THIRD = 0.166, 0.333
# Its threshold selection at two cosines: about a third and a half of the rank-16 adapter's modules sit at or
# below them on the seed-0 poisoned and harmful adapters (similarities 0.12-0.64; the reference's 0.5 would
# rewrite nearly all of them).
SAFELORA_THRESHOLDS = (0.2, 0.3)
REMOVE_TOP_RANKS = (1, 2, 4, 8, 16)
READD_ALPHAS = (0.25, 0.5, 1, 2)
# Re-adding every stored direction: --energy 1 lifts the energy cut, --rank 256 the rank cap.
READD_FULL = {"energy": 1, "rank": 256}


def remove_top(rank: int, subspace: str = "safety") -> Setting:
    return Setting("remove-top", {"rank": rank}, subspace=subspace)


FAMILIES = (
    Family("none", (Setting("none"),), heldout=EVERY),
    Family("csulora (paper)", (Setting("csulora"),), heldout=EVERY),
    Family("scale", tuple(Setting("scale", {"alpha": a}) for a in (0.75, 0.5, 0.25, 0.1)), heldout=EVERY),
    Family("remove-top", tuple(remove_top(k) for k in REMOVE_TOP_RANKS)),
    Family(
        "remove-top random control",
        tuple(remove_top(k, "random") for k in REMOVE_TOP_RANKS),
        heldout=CONTROL,
        control_of="remove-top",
    ),
    Family(
        "readd",
        tuple(
            Setting("readd", {"alpha": a, **({"rank": k} if k != "full" else READD_FULL)})
            for a in READD_ALPHAS
            for k in (4, 16, 64, "full")
        ),
    ),
    # On every block linear weight the alignment moved, not only the adapter's targets: for all-r16 these are the
    # same modules (its rows are readd's), so it runs on the q,v adapter only.
    Family(
        "readd (every module)",
        tuple(
            Setting("readd", {"alpha": a, **({"rank": k} if k != "full" else READD_FULL), "readd-everywhere": True})
            for a in (0.5, 1)
            for k in (16, "full")
        ),
        shapes=("qv-r8",),
    ),
    Family(
        "safelora",
        tuple(Setting("safelora", {"safelora-share": share}) for share in (SIXTH, THIRD))
        + tuple(
            Setting("safelora", {"safelora-select": "threshold", "safelora-threshold": t}) for t in SAFELORA_THRESHOLDS
        ),
    ),
    Family(
        "csulora-signed", (Setting("csulora-signed", {"lambda": 100}), Setting("csulora-signed", {"lambda": "inf"}))
    ),
    Family("remove-inputs", tuple(Setting("remove-inputs", {"rank": k}, subspace="activations") for k in (4, 16, 64))),
    # B' = (I - r r^T) B is defined on the modules that write to the residual stream (o_proj, down_proj): the
    # q,v adapter has none, so the family runs on the all-module adapters only.
    Family("refusal-direction", (remove_top(1, "refusal"),), shapes=("all-r16",)),
    # Random controls of the other families at their chosen setting, on held-out seed 0 only (9 scorings, not
    # 27, to stay near the 90 minutes): the same knobs on random directions of the same sizes.
    Family(
        "readd random control",
        tuple(
            Setting("readd", {"alpha": a, **({"rank": k} if k != "full" else READD_FULL)}, subspace="random")
            for a in READD_ALPHAS
            for k in (4, 16, 64, "full")
        ),
        heldout=CONTROL,
        control_of="readd",
        validate=False,
        heldout_seeds=(0,),
    ),
    Family(
        "remove-inputs random control",
        tuple(Setting("remove-inputs", {"rank": k}, subspace="random-activations") for k in (4, 16, 64)),
        heldout=CONTROL,
        control_of="remove-inputs",
        validate=False,
        heldout_seeds=(0,),
    ),
    Family(
        "refusal-direction random control",
        (remove_top(1, "random-refusal"),),
        heldout=CONTROL,
        control_of="refusal-direction",
        validate=False,
        heldout_seeds=(0,),
        shapes=("all-r16",),
    ),
    Family(
        "merge-safety",
        tuple(Setting("merge-safety", {"safety-weight": w, "safelora-share": THIRD}) for w in (0.25, 0.5, 0.75, 1)),
    ),
)

# The smoke's families: the code path of every held-out rule (every, chosen, control) on as few settings as
# cover them (about 40 s of a quiet machine's 2 cores; the activation folders and the safety adapter are the
# unit tests' business).
SMOKE_FAMILIES = (
    FAMILIES[0],
    Family("scale", (Setting("scale", {"alpha": 0.5}),), heldout=EVERY),
    Family("remove-top", (remove_top(2),)),
    Family("remove-top random control", (remove_top(2, "random"),), heldout=CONTROL, control_of="remove-top"),
)


def uses(families: tuple[Family, ...], subspace: str | None = None, method: str | None = None) -> bool:
    """Whether any setting of `families` reads the folder `subspace` or runs `method`."""
    settings = [s for family in families for s in family.settings]
    return any(
        (subspace is None or s.subspace == subspace) and (method is None or s.method == method) for s in settings
    )


def heldout_settings(families: tuple[Family, ...], chosen: dict[str, Setting]) -> list[tuple[Family, Setting]]:
    """What runs on held-out, given the setting chosen per CHOSEN family (`chosen` by family name)."""
    planned = []
    for family in families:
        if family.heldout == EVERY:
            planned += [(family, s) for s in family.settings]
        elif family.heldout == CHOSEN and family.name in chosen:
            planned.append((family, chosen[family.name]))
        elif family.heldout == CONTROL and family.control_of in chosen:
            planned.append((family, family.control_for(chosen[family.control_of])))
    return planned
