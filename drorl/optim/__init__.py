"""Optimisation building blocks: Hessian-vector products, conjugate gradient, Stackelberg total derivatives."""

from drorl.optim.total_derivative import (CGInfo, TotalDerivative, annealed_beta, conjugate_gradient, hvp,
                                          total_derivative)

__all__ = ["CGInfo", "TotalDerivative", "annealed_beta", "conjugate_gradient", "hvp", "total_derivative"]
