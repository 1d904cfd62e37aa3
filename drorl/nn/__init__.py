"""Networks shared by every algorithm: MLPs and policies."""

from drorl.nn.mlp import MLP
from drorl.nn.policies import DeterministicPolicy, TanhGaussianPolicy, tanh_gaussian_log_prob

__all__ = ["MLP", "DeterministicPolicy", "TanhGaussianPolicy", "tanh_gaussian_log_prob"]
