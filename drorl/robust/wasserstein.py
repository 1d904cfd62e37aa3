"""The Wasserstein-1 ambiguity set of DSRL over transported samples, and its worst case.

DSRL (Chriat and Sun, arXiv 2310.02459; shared spec ``safe-rl.md``, "Worst-case uncertainty" and
its Corrections) parametrises the adversarial distribution by transported nominal samples
xi_i = xi0_i + delta_i. With Euclidean cost the W1 ball of radius rho_d around the empirical p0
then becomes B = { delta [N, d] : (1/N) sum_i ||delta_i|| <= rho_d }, an l1,2 ball, and the
adversary runs projected gradient ascent delta <- Proj_B(delta + eta dL/d delta).

For a loss linear in the disturbance, E[c^T xi] over B has the closed-form minimum
c^T mean(xi0) - rho_d ||c|| (:func:`worst_case_margin`), the check that the ascent is right.
"""

from __future__ import annotations

import jax.numpy as jnp

from drorl.errors import DrorlError

Array = jnp.ndarray


def _check_samples(name: str, x: Array) -> None:
    if x.ndim != 2:
        raise DrorlError(f"{name} has shape {tuple(x.shape)}; expected [samples, dim]")


def project_w1_ball(delta: Array, radius: float | Array) -> Array:
    """Euclidean projection of per-sample perturbations delta [N, d] onto mean_i ||delta_i|| <= radius.

    The projection onto sum_i ||delta_i|| <= N radius is a group soft-threshold: the vector of norms
    is projected onto the l1 ball of radius N radius (by sorting, Duchi et al. 2008) and each delta_i
    rescaled to its new norm, directions kept. It applies only outside the ball: inside, delta is
    returned unchanged (spec, Corrections; projecting onto the simplex itself would inflate small
    perturbations).
    """
    _check_samples("delta", delta)
    n = delta.shape[0]
    budget = n * radius
    norms = jnp.linalg.norm(delta, axis=1)
    ordered = jnp.sort(norms)[::-1]
    partial = jnp.cumsum(ordered) - budget
    count = jnp.arange(1, n + 1, dtype=delta.dtype)
    # norms kept above the threshold: the largest k with ordered_k > (sum of the k largest - budget) / k
    kept = jnp.maximum(jnp.sum(ordered * count > partial), 1)
    threshold = partial[kept - 1] / kept
    shrunk = jnp.maximum(norms - threshold, 0.0)
    factor = jnp.where(norms > 0, shrunk / jnp.where(norms > 0, norms, 1.0), 0.0)
    return jnp.where(jnp.sum(norms) > budget, delta * factor[:, None], delta)


def ascent_step(delta: Array, grad: Array, step_size: float | Array, radius: float | Array) -> Array:
    """One step of the adversary: Proj_B(delta + step_size * grad), grad = dL/d delta of the loss."""
    _check_samples("delta", delta)
    if grad.shape != delta.shape:
        raise DrorlError(f"grad has shape {tuple(grad.shape)}; expected that of delta {tuple(delta.shape)}")
    return project_w1_ball(delta + step_size * grad, radius)


def worst_case_margin(coeff: Array, nominal_samples: Array, radius: float | Array) -> Array:
    """min over the W1 ball of E[c^T xi] = c^T mean(xi0) - radius ||c||, per row of ``coeff``.

    ``coeff`` [..., d] is c_xi, the disturbance's coefficient in a constraint affine in xi (the
    spec's Corrections; :class:`drorl.robust.cbf_qp.CBFRows`), ``nominal_samples`` xi0 [N, d]. The
    minimum puts every sample's transport along -c with mean norm ``radius`` (Cauchy-Schwarz).
    """
    _check_samples("nominal_samples", nominal_samples)
    if coeff.ndim < 1 or coeff.shape[-1] != nominal_samples.shape[1]:
        raise DrorlError(f"coeff has shape {tuple(coeff.shape)}; expected trailing dimension "
                         f"{nominal_samples.shape[1]} (that of the samples)")
    return coeff @ jnp.mean(nominal_samples, axis=0) - radius * jnp.linalg.norm(coeff, axis=-1)
