"""Single-task learning: one independent network per task, all trained in one run.

With nothing shared, the summed loss gives every network exactly its own task's gradient, so one run equals
T separate trainings on the same batches (and Adam's per-parameter state keeps them separate too).
"""

from mtlbench.architectures import IndependentNetworks
from mtlbench.method import MethodSpec, register_method
from mtlbench.registry import ARCHITECTURES

ARCHITECTURES.add("stl", IndependentNetworks, "One independent encoder and head per task")

STL = register_method(MethodSpec("stl", "Single-task learning: one independent network per task", "stl"))
