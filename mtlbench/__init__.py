"""mtlbench: a benchmark and reproducibility suite for deep multi-task learning.

Data flows one way: config -> dataset -> model -> training loop -> run record -> aggregate.
"""

__version__ = "0.1.0"
