"""The probabilistic dynamics ensemble of model-based offline RL (MBPO, MOPO, COMBO, DROMO).

E Gaussian members, each an MLP from standardised (s, a) to the mean and log-variance of the
standardised target (s' - s, r) (spec/model-based.md, "Dynamics ensemble"; the model of MOPO, Yu et
al. 2020, and COMBO, which is MBPO's bootstrap ensemble, Janner et al. 2019). The members' parameters are stacked
on a leading axis and every computation is ``vmap`` over that axis: one compiled program trains and
evaluates all members, and member m's initialisation and minibatches depend on its own key alone.

Training (as the MBPO/MOPO reference code does it): Gaussian negative log-likelihood on per-member
bootstrapped, per-epoch shuffled minibatches, plus a small penalty that keeps the learned soft
log-variance bounds tight and L2 weight decay growing with depth; a held-out split (20 %, at most
1000 transitions); early stopping when no member's held-out loss improved by more than a relative
threshold for ``patience`` epochs, each member keeping its best parameters; the elites are the
``num_elites`` members with the lowest held-out loss (MSE by default, like MBPO and MOPO;
``selection_metric="nll"`` picks by likelihood instead).

``predict`` samples each transition from a random elite (the uniform mixture of the elites) and
returns every member's mean and standard deviation, from which MOPO's max-std penalty and
MOPO-auto's entropy are computed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import optax

from drorl.data.dataset import Dataset
from drorl.errors import DrorlError
from drorl.io_utils import write_bytes_atomic, write_json_atomic
from drorl.nn.mlp import ACTIVATIONS
from drorl.nn.train_state import TrainState, gradient_step
from drorl.progress import progress_bar

_ACTIVATIONS = {**ACTIVATIONS, "swish": jax.nn.swish}
_FORMAT = "drorl.dynamics"
_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Config:
    """Dynamics-ensemble hyper-parameters (defaults: spec/model-based.md and the MBPO/MOPO code).

    Attributes:
        num_members: E, Gaussian networks trained together.
        num_elites: members kept for sampling, by held-out loss.
        hidden_dims: widths of each member's hidden layers.
        activation: hidden-layer activation ("swish" or one of ``drorl.nn.mlp.ACTIVATIONS``).
        weight_decays: L2 coefficient of each layer's kernel (hidden layers then the output layer),
            growing with depth; the loss adds coefficient * ||W||^2 / 2 per layer, as MBPO's
            ``tf.nn.l2_loss`` does.
        logvar_bound_weight: weight of (sum max_logvar - sum min_logvar) in the loss: keeps the learned
            bounds from drifting apart.
        init_max_logvar: initial soft upper bound of the log-variance (standardised units).
        init_min_logvar: initial soft lower bound.
        lr: Adam learning rate.
        batch_size: rows per member and step; at most the training split's size.
        bootstrap: each member trains on its own bootstrap resample (else on every row).
        holdout_ratio: fraction held out for early stopping and elite selection ...
        max_holdout: ... capped at this many transitions.
        patience: stop after this many epochs in which no member improved.
        improvement_threshold: an improvement is a held-out loss that fell by more than this fraction.
        max_epochs: a cap in case the held-out loss keeps creeping down.
        selection_metric: held-out loss of early stopping and elite choice ("mse" or "nll").
    """

    num_members: int = 7
    num_elites: int = 5
    hidden_dims: tuple[int, ...] = (200, 200, 200, 200)
    activation: str = "swish"
    weight_decays: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    logvar_bound_weight: float = 0.01
    init_max_logvar: float = 0.5
    init_min_logvar: float = -10.0
    lr: float = 1e-3
    batch_size: int = 256
    bootstrap: bool = True
    holdout_ratio: float = 0.2
    max_holdout: int = 1000
    patience: int = 5
    improvement_threshold: float = 0.01
    max_epochs: int = 1000
    selection_metric: Literal["mse", "nll"] = "mse"


@flax.struct.dataclass
class Model:
    """A trained (or freshly initialised) ensemble with its input and target standardisation.

    ``params``: {"layers": ({"kernel": [E, in, out], "bias": [E, out]}, ...), "max_logvar": [E, D],
    "min_logvar": [E, D]} with D = obs_dim + 1 (the targets s' - s and r); ``elites``: [num_elites]
    member indices.
    """

    params: Any
    input_mean: jnp.ndarray
    input_std: jnp.ndarray
    target_mean: jnp.ndarray
    target_std: jnp.ndarray
    elites: jnp.ndarray
    config: Config = flax.struct.field(pytree_node=False)


def _check(config: Config) -> None:
    if len(config.weight_decays) != len(config.hidden_dims) + 1:
        raise DrorlError(f"dynamics config: weight_decays has {len(config.weight_decays)} entries; expected "
                         f"{len(config.hidden_dims) + 1} (one per hidden layer plus the output layer)")
    if not 1 <= config.num_elites <= config.num_members:
        raise DrorlError(f"dynamics config: num_elites={config.num_elites}; expected 1 to num_members="
                         f"{config.num_members}")
    if config.activation not in _ACTIVATIONS:
        raise DrorlError(f"dynamics config: activation={config.activation!r}; expected one of "
                         f"{', '.join(_ACTIVATIONS)}")
    if config.selection_metric not in ("mse", "nll"):
        raise DrorlError(f"dynamics config: selection_metric={config.selection_metric!r}; expected mse or nll")
    if not 0.0 < config.holdout_ratio < 1.0 or config.max_holdout < 1:
        raise DrorlError("dynamics config: holdout_ratio must lie in (0, 1) and max_holdout be at least 1 "
                         "(early stopping and elite selection need held-out data)")
    if config.max_epochs < 1 or config.patience < 1:
        raise DrorlError(f"dynamics config: max_epochs={config.max_epochs}, patience={config.patience}; "
                         "expected both at least 1")


def _init_member(config: Config, in_dim: int, out_dim: int, key: jax.Array) -> dict:
    """One member: truncated-normal kernels with std 1 / (2 sqrt(fan_in)) (MBPO), zero biases.

    One draw cut into the kernels: each random-number call site costs seconds of XLA compilation on a CPU.
    """
    dims = (in_dim, *config.hidden_dims, 2 * out_dim)
    shapes = list(zip(dims[:-1], dims[1:]))
    draws = jax.random.truncated_normal(key, -2.0, 2.0, (sum(n_in * n_out for n_in, n_out in shapes),))
    offsets = np.cumsum([0] + [n_in * n_out for n_in, n_out in shapes])
    layers = tuple({"kernel": draws[start:start + n_in * n_out].reshape(n_in, n_out) / (2.0 * math.sqrt(n_in)),
                    "bias": jnp.zeros(n_out, jnp.float32)} for start, (n_in, n_out) in zip(offsets, shapes))
    return {"layers": layers, "max_logvar": jnp.full(out_dim, config.init_max_logvar, jnp.float32),
            "min_logvar": jnp.full(out_dim, config.init_min_logvar, jnp.float32)}


@functools.partial(jax.jit, static_argnames=("config", "obs_dim", "act_dim"))
def _init_params(config: Config, obs_dim: int, act_dim: int, member_keys: jax.Array) -> dict:
    return jax.vmap(lambda k: _init_member(config, obs_dim + act_dim, obs_dim + 1, k))(member_keys)


def init(config: Config, obs_dim: int, act_dim: int, key: jax.Array) -> Model:
    """An untrained ensemble with identity standardisation and the first ``num_elites`` members as elites."""
    _check(config)
    params = _init_params(config, obs_dim, act_dim, jax.random.split(key, config.num_members))
    return _model(config, params, *(np.zeros(obs_dim + act_dim, np.float32), np.ones(obs_dim + act_dim, np.float32)),
                  *(np.zeros(obs_dim + 1, np.float32), np.ones(obs_dim + 1, np.float32)))


def _model(config: Config, params: dict, input_mean: np.ndarray, input_std: np.ndarray, target_mean: np.ndarray,
           target_std: np.ndarray) -> Model:
    return Model(params=params, input_mean=jnp.asarray(input_mean), input_std=jnp.asarray(input_std),
                 target_mean=jnp.asarray(target_mean), target_std=jnp.asarray(target_std),
                 elites=jnp.asarray(np.arange(config.num_elites, dtype=np.int32)), config=config)


def _member_forward(config: Config, params: dict, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Mean and log-variance of one member, the log-variance softly clamped to [min_logvar, max_logvar]
    with softplus (MBPO/PETS): the bounds are learned, and gradients still flow near them."""
    act = _ACTIVATIONS[config.activation]
    *hidden, last = params["layers"]
    for layer in hidden:
        x = act(x @ layer["kernel"] + layer["bias"])
    mean, logvar = jnp.split(x @ last["kernel"] + last["bias"], 2, axis=-1)
    logvar = params["max_logvar"] - jax.nn.softplus(params["max_logvar"] - logvar)
    logvar = params["min_logvar"] + jax.nn.softplus(logvar - params["min_logvar"])
    return mean, logvar


def _member_loss(config: Config, params: dict, x: jnp.ndarray, y: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """MBPO's training loss of one member: mean over rows and dimensions of (mu - y)^2 / var + log var
    (the Gaussian NLL times 2 / D, less a constant), the log-variance-bound penalty and weight decay."""
    mean, logvar = _member_forward(config, params, x)
    nll = jnp.mean((mean - y) ** 2 * jnp.exp(-logvar) + logvar)
    bounds = config.logvar_bound_weight * (params["max_logvar"].sum() - params["min_logvar"].sum())
    decay = sum(c * 0.5 * jnp.sum(layer["kernel"] ** 2) for c, layer in zip(config.weight_decays, params["layers"]))
    return nll + bounds + decay, nll


def _gaussian_log_likelihood(mean: jnp.ndarray, logvar: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """log N(y; mean, exp(logvar)) summed over the last axis."""
    return -0.5 * jnp.sum((y - mean) ** 2 * jnp.exp(-logvar) + logvar + math.log(2.0 * math.pi), axis=-1)


@functools.partial(jax.jit, static_argnames="config")
def _metrics(config: Config, params: dict, mixed: jnp.ndarray, x: jnp.ndarray, y: jnp.ndarray) -> dict:
    """Per-member NLL (per transition) and MSE (per element), and the NLL of the uniform mixture of the
    members where ``mixed`` [E] is true, all on standardised inputs and targets. (A mask rather than
    indices: one compiled program serves every choice of members.)"""
    mean, logvar = jax.vmap(_member_forward, in_axes=(None, 0, None))(config, params, x)
    log_likelihood = _gaussian_log_likelihood(mean, logvar, y)  # [E, N]
    mixture = (jax.scipy.special.logsumexp(jnp.where(mixed[:, None], log_likelihood, -jnp.inf), axis=0)
               - jnp.log(mixed.sum()))
    return {"nll": -log_likelihood.mean(axis=1), "mse": jnp.mean((mean - y) ** 2, axis=(1, 2)),
            "mixture_nll": -mixture.mean()}


def _mask(config: Config, members: jnp.ndarray) -> jnp.ndarray:
    return jnp.zeros(config.num_members, bool).at[members].set(True)


def _inputs(model: Model, obs: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
    return (jnp.concatenate([obs, actions], axis=-1) - model.input_mean) / model.input_std


def evaluate(model: Model, obs: jnp.ndarray, actions: jnp.ndarray, next_obs: jnp.ndarray,
             rewards: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """Held-out losses in standardised target units: ``nll`` [E] (mean negative log-likelihood of a
    transition), ``mse`` [E] (mean squared error per target element) and ``mixture_nll`` (of the uniform
    mixture of the elites: the distribution ``predict`` samples from). Standardising shifts every NLL by
    the same constant, so the comparisons between members and the mixture are those of raw units."""
    x = _inputs(model, obs, actions)
    y = (jnp.concatenate([next_obs - obs, rewards[:, None]], axis=-1) - model.target_mean) / model.target_std
    return _metrics(model.config, model.params, _mask(model.config, model.elites), x, y)


def select_elites(model: Model, holdout_loss: jnp.ndarray) -> Model:
    """The model with its elites set to the ``num_elites`` members of lowest ``holdout_loss`` [E], best first."""
    return model.replace(elites=jnp.argsort(holdout_loss)[:model.config.num_elites].astype(jnp.int32))


def predict(model: Model, obs: jnp.ndarray, actions: jnp.ndarray, key: jax.Array,
            deterministic: bool = False) -> tuple[jnp.ndarray, jnp.ndarray, dict[str, jnp.ndarray]]:
    """One model step for a batch: ``(next_obs [B, obs_dim], rewards [B], info)``.

    Each row uses a random elite (MBPO/MOPO): its mean when ``deterministic``, else a sample of its
    Gaussian. ``info`` holds every member's prediction of the target (s' - s, r) as ``mean`` and ``std``
    [E, B, obs_dim + 1] in raw units, ``normalised_std`` (the same in standardised target units: what
    an entropy penalty should use, spec Corrections) and ``member`` [B] (the elite each row used).
    MOPO's penalty is the max over every member of ||std||_2: ``norm(info["std"], axis=-1).max(0)``.
    """
    config = model.config
    mean, logvar = jax.vmap(_member_forward, in_axes=(None, 0, None))(config, model.params,
                                                                       _inputs(model, obs, actions))
    std = jnp.exp(0.5 * logvar)
    k_member, k_noise = jax.random.split(key)
    rows = jnp.arange(obs.shape[0])
    member = model.elites[jax.random.randint(k_member, (obs.shape[0],), 0, config.num_elites)]
    target = mean[member, rows]
    if not deterministic:
        target = target + std[member, rows] * jax.random.normal(k_noise, target.shape)
    target = target * model.target_std + model.target_mean
    info = {"mean": mean * model.target_std + model.target_mean, "std": std * model.target_std,
            "normalised_std": std, "member": member}
    return obs + target[:, :-1], target[:, -1], info


def _split(dataset: Dataset, config: Config, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training and held-out splits (a random 20 % held out, at most ``max_holdout``)."""
    n = len(dataset)
    n_holdout = min(int(config.holdout_ratio * n), config.max_holdout)
    if n_holdout < 1 or n - n_holdout < 1:
        raise DrorlError(f"dataset has {n} transitions; the dynamics ensemble needs enough to hold out "
                         f"{config.holdout_ratio:.0%} (at least one transition) and train on the rest")
    order = np.asarray(jax.random.permutation(key, n))
    return order[n_holdout:], order[:n_holdout]


def _standardiser(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation, a (near-)constant column's deviation set to 1 (MBPO's scaler)."""
    mean, std = values.mean(axis=0, dtype=np.float64), values.std(axis=0, dtype=np.float64)
    return mean.astype(np.float32), np.where(std < 1e-6, 1.0, std).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("config", "batch_size"), donate_argnames=("states", "best"))
def _epoch(config: Config, batch_size: int, states: TrainState, best: dict, epoch: jnp.ndarray, data: dict
           ) -> tuple[TrainState, dict, dict]:
    """One epoch for every member in one program: each member's rows (``data["rows"][m]``, its bootstrap
    resample) shuffled by its own key, ``len // batch_size`` Adam steps in a ``lax.scan``, then the
    held-out losses; a member whose held-out loss fell by more than the threshold keeps these parameters
    as its best."""
    rows = data["rows"]
    num_steps = rows.shape[1] // batch_size
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(data["epoch_keys"], epoch)
    order = jax.vmap(jax.random.permutation)(keys, rows)  # the remainder rows wait for a later epoch
    batches = order[:, :num_steps * batch_size].reshape(rows.shape[0], num_steps, batch_size).swapaxes(0, 1)
    loss_fn = functools.partial(_member_loss, config)

    def step(states, idx):
        def member_step(state, x, y):
            state, (_, nll), _ = gradient_step(state, loss_fn, x, y, has_aux=True)
            return state, nll

        return jax.vmap(member_step)(states, data["x"][idx], data["y"][idx])

    states, train_nll = jax.lax.scan(step, states, batches)
    metrics = _metrics(config, states.params, jnp.ones(config.num_members, bool), data["x_holdout"],
                       data["y_holdout"])
    current = metrics[config.selection_metric]
    improved = best["loss"] - current > config.improvement_threshold * jnp.abs(best["loss"])
    keep_new = lambda new, old: jnp.where(improved.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)  # noqa: E731
    best = {"params": jax.tree_util.tree_map(keep_new, states.params, best["params"]),
            "loss": jnp.where(improved, current, best["loss"])}
    return states, best, {"improved": improved, "train_loss": train_nll.mean(axis=0), **metrics}


@functools.lru_cache(maxsize=None)
def _optimizer(lr: float) -> optax.GradientTransformation:
    """Adam, one object per learning rate: the optimiser is static in the train state, so a fresh one
    per ``train`` call would make every call compile its epoch program again."""
    return optax.adam(lr)


@functools.partial(jax.jit, static_argnames=("config", "obs_dim", "act_dim", "n_train"))
def _start(config: Config, obs_dim: int, act_dim: int, n_train: int, member_keys: jax.Array, x_holdout: jnp.ndarray,
           y_holdout: jnp.ndarray) -> tuple[TrainState, dict, jnp.ndarray, jnp.ndarray]:
    """Initial train states, the initial parameters as each member's best so far, each member's training
    rows (a bootstrap resample, or every row) and its key for the per-epoch shuffles."""
    boot_keys, epoch_keys = jnp.swapaxes(jax.vmap(jax.random.split)(member_keys), 0, 1)
    if config.bootstrap:
        rows = jax.vmap(lambda k: jax.random.randint(k, (n_train,), 0, n_train))(boot_keys)
    else:
        rows = jnp.broadcast_to(jnp.arange(n_train), (config.num_members, n_train))
    params = _init_params(config, obs_dim, act_dim, member_keys)
    states = jax.vmap(lambda p: TrainState.create(p, _optimizer(config.lr)))(params)
    loss = _metrics(config, params, jnp.ones(config.num_members, bool), x_holdout, y_holdout)[config.selection_metric]
    return states, {"params": params, "loss": loss}, rows, epoch_keys


def train(config: Config, dataset: Dataset, key: jax.Array, progress: bool = True,
          member_keys: jax.Array | None = None) -> tuple[Model, dict[str, Any]]:
    """Fit the ensemble to ``dataset``'s transitions; returns ``(model, report)``.

    ``key`` draws the held-out split and, unless ``member_keys`` [E, 2] is given, the members' keys;
    member m's initialisation, bootstrap resample and minibatch order depend on ``member_keys[m]``
    alone, so a member trains to the same parameters alone or in the ensemble. Inputs and targets
    are standardised with the training split's statistics. Runs until ``patience`` epochs pass with
    no member improving (or ``max_epochs``); each member ends with its best held-out parameters.
    ``report``: ``holdout_nll`` and ``holdout_mse`` per member (standardised units, at those
    parameters), ``elites`` (lowest ``selection_metric`` first), ``mixture_nll`` (of the elites'
    mixture), ``train_loss`` (the last epoch's mean likelihood term of the training loss, per member),
    ``epochs``, ``stopped_early``, ``train_transitions``, ``holdout_transitions``.
    """
    _check(config)
    k_split, k_members = jax.random.split(key)
    if member_keys is None:
        member_keys = jax.random.split(k_members, config.num_members)
    if member_keys.shape[0] != config.num_members:
        raise DrorlError(f"train: {member_keys.shape[0]} member keys for num_members={config.num_members}")
    train_rows, holdout_rows = _split(dataset, config, k_split)
    inputs = np.concatenate([dataset.observations, dataset.actions], axis=1)
    targets = np.concatenate([dataset.next_observations - dataset.observations, dataset.rewards[:, None]], axis=1)
    input_mean, input_std = _standardiser(inputs[train_rows])
    target_mean, target_std = _standardiser(targets[train_rows])
    inputs, targets = (inputs - input_mean) / input_std, (targets - target_mean) / target_std
    data = {"x": jnp.asarray(inputs[train_rows]), "y": jnp.asarray(targets[train_rows]),
            "x_holdout": jnp.asarray(inputs[holdout_rows]), "y_holdout": jnp.asarray(targets[holdout_rows])}
    states, best, data["rows"], data["epoch_keys"] = _start(config, dataset.obs_dim, dataset.act_dim, len(train_rows),
                                                            member_keys, data["x_holdout"], data["y_holdout"])
    batch_size = min(config.batch_size, len(train_rows))
    epochs, since_improvement = 0, 0
    with progress_bar("dynamics ensemble", total=config.max_epochs, enabled=progress, unit="epochs") as advance:
        while epochs < config.max_epochs and since_improvement < config.patience:
            states, best, metrics = _epoch(config, batch_size, states, best, jnp.asarray(epochs, jnp.int32), data)
            epochs += 1
            since_improvement = 0 if bool(metrics["improved"].any()) else since_improvement + 1
            advance(1)

    model = _model(config, best["params"], input_mean, input_std, target_mean, target_std)
    final = _metrics(config, model.params, jnp.ones(config.num_members, bool), data["x_holdout"], data["y_holdout"])
    model = select_elites(model, final[config.selection_metric])
    mixture = _metrics(config, model.params, _mask(config, model.elites), data["x_holdout"], data["y_holdout"])
    report = {"holdout_nll": np.asarray(final["nll"]).tolist(), "holdout_mse": np.asarray(final["mse"]).tolist(),
              "elites": np.asarray(model.elites).tolist(), "selection_metric": config.selection_metric,
              "mixture_nll": float(mixture["mixture_nll"]), "train_loss": np.asarray(metrics["train_loss"]).tolist(),
              "epochs": epochs, "stopped_early": since_improvement >= config.patience,
              "train_transitions": len(train_rows), "holdout_transitions": len(holdout_rows)}
    return model, report


def save(path: str | Path, model: Model) -> Path:
    """Write ``model`` and its config as msgpack (flax.serialization; never pickle), atomically."""
    path = Path(path)
    obs_dim = int(model.target_mean.shape[0]) - 1
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(model.config).items()}
    payload = {"format": _FORMAT, "version": _VERSION, "config": config,
               "obs_dim": obs_dim, "act_dim": int(model.input_mean.shape[0]) - obs_dim,
               "model": flax.serialization.to_state_dict(jax.device_get(model))}
    write_bytes_atomic(path, flax.serialization.msgpack_serialize(payload))
    return path


def _config_from_dict(values: dict) -> Config:
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(Config)})
    if unknown:
        raise ValueError(f"unknown config field {unknown[0]!r}")
    return Config(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()})


def load(path: str | Path) -> Model:
    """Read a model written by ``save``; a missing, truncated or mismatched file raises a one-line DrorlError."""
    path = Path(path)
    try:
        raw = flax.serialization.msgpack_restore(path.read_bytes())
        if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
            raise ValueError("not a dynamics-ensemble file")
        if raw.get("version") != _VERSION:
            raise ValueError(f"format version {raw.get('version')!r}, expected {_VERSION}")
        config = _config_from_dict(raw["config"])
        _check(config)
        obs_dim, act_dim = int(raw["obs_dim"]), int(raw["act_dim"])
        template = jax.eval_shape(lambda: init(config, obs_dim, act_dim, jax.random.PRNGKey(0)))
        model = flax.serialization.from_state_dict(template, raw["model"])
        for want, got in zip(jax.tree_util.tree_leaves(template), jax.tree_util.tree_leaves(model)):
            if not isinstance(got, np.ndarray) or got.shape != want.shape or got.dtype != want.dtype:
                raise ValueError(f"an array of shape {getattr(got, 'shape', None)} where {want.shape} belongs")
    except FileNotFoundError:
        raise DrorlError(f"{path}: no such dynamics-ensemble file") from None
    except (ValueError, TypeError, KeyError, AttributeError, DrorlError, msgpack.UnpackException) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DrorlError(f"{path}: not a readable drorl dynamics ensemble ({reason})") from None
    return jax.tree_util.tree_map(jnp.asarray, model)


def cache_path(directory: str | Path, config: Config, dataset: Dataset, seed: int) -> Path:
    """Where ``cached`` keeps the ensemble of ``dataset`` (by content hash), ``seed`` and ``config``."""
    key = json.dumps({"dataset": dataset.content_hash(), "seed": seed, "config": dataclasses.asdict(config)},
                     sort_keys=True)
    return Path(directory) / f"dynamics-{hashlib.sha256(key.encode()).hexdigest()[:16]}.msgpack"


def cached(config: Config, dataset: Dataset, seed: int, directory: str | Path, progress: bool = True
           ) -> tuple[Model, dict[str, Any], Path]:
    """The ensemble trained on ``dataset`` with key ``PRNGKey(seed)``: read from ``directory`` when an
    earlier call trained it, else trained and written there (msgpack, with its training report as JSON
    beside it). Returns ``(model, report, path)``: policy training restarts, and other algorithms on
    the same data, reuse the file instead of training again."""
    path = cache_path(directory, config, dataset, seed)
    report_path = path.with_suffix(".json")
    if path.exists() and report_path.exists():
        return load(path), json.loads(report_path.read_text()), path
    model, report = train(config, dataset, jax.random.PRNGKey(seed), progress=progress)
    report = {**report, "seed": seed, "dataset_hash": dataset.content_hash()}
    save(path, model)
    write_json_atomic(report_path, report)
    return model, report, path
