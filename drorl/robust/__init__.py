"""Robust-optimisation building blocks shared by the algorithms: f-divergence generators."""

from drorl.robust.divergences import DIVERGENCES, Divergence, get_divergence

__all__ = ["DIVERGENCES", "Divergence", "get_divergence"]
