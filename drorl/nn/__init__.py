"""Networks shared by every algorithm: MLPs, policies, critics."""

from drorl.nn.critics import Critic, CriticEnsemble
from drorl.nn.mlp import MLP
from drorl.nn.policies import (DeterministicPolicy, TanhGaussianPolicy, tanh_gaussian_log_prob,
                               tanh_gaussian_sample, tanh_gaussian_sample_and_log_prob)

__all__ = ["MLP", "Critic", "CriticEnsemble", "DeterministicPolicy", "TanhGaussianPolicy",
           "tanh_gaussian_log_prob", "tanh_gaussian_sample", "tanh_gaussian_sample_and_log_prob"]
