"""Empirical risk minimisation: the baseline every method is compared with."""

from robustbench_lite.bench.method import METHODS, Method


@METHODS.register("erm")
class Erm(Method):
    """Empirical risk minimisation: cross-entropy on the standard augmented batch."""
