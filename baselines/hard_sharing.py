"""Hard parameter sharing with equal loss weights (the "EW" / unitary scalarisation baseline)."""

from mtlbench.architectures import SharedTrunk
from mtlbench.method import MethodSpec, register_method
from mtlbench.registry import ARCHITECTURES

ARCHITECTURES.add("hps", SharedTrunk, "Hard parameter sharing: one shared encoder, one head per task")

HPS = register_method(MethodSpec("hps", "Hard parameter sharing, equal loss weights", "hps"))
