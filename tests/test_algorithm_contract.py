"""Every registered algorithm through the same contract (tests/contract.py, docs/architecture.md)."""

import dataclasses
from types import SimpleNamespace

import flax.struct
import jax
import jax.numpy as jnp
import pytest

from drorl import algos
from drorl.algos import REGISTRY, Entry, bc
from drorl.algos.base import Algorithm, Scaler
from drorl.errors import DrorlError
from drorl.nn.train_state import TrainState, gradient_step

from contract import check_contract


@pytest.mark.parametrize("name", algos.names())
def test_every_registered_algorithm_keeps_the_contract(name, tmp_path):
    module = algos.get(name)
    entry = algos.entry(name)
    if entry.kind != "estimator":
        assert isinstance(module, Algorithm)
    check_contract(module, entry, tmp_path=tmp_path)


def _dummy_module(reads_scale: bool) -> SimpleNamespace:
    """BC with an extra ``scale`` field that it multiplies the loss by, or ignores."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        policy: bc.PolicyConfig = bc.PolicyConfig()
        batch_size: int = 32
        scale: float = 2.0

    @flax.struct.dataclass
    class State:
        policy: TrainState
        scaler: Scaler
        config: Config = flax.struct.field(pytree_node=False)
        act_dim: int = flax.struct.field(pytree_node=False)

    def init(config, spec, key):
        return State(bc.init_policy(config.policy, spec, key), Scaler.from_spec(spec), config, spec.act_dim)

    def update(state, batch, key):
        factor = state.config.scale if reads_scale else 1.0
        obs, target = state.scaler.observation(batch["observations"]), state.scaler.to_unit_action(batch["actions"])
        loss_fn = lambda p: factor * jnp.mean(  # noqa: E731
            bc.per_sample_imitation_loss(state.config.policy, state.act_dim, p, obs, target))
        policy, loss, _ = gradient_step(state.policy, loss_fn)
        return state.replace(policy=policy), {"loss": loss}

    return SimpleNamespace(Config=Config, init=init, update=update, act=bc.act)


@pytest.mark.parametrize("reads_scale", [True, False])
def test_the_contract_catches_a_config_field_nobody_reads(reads_scale, tmp_path, monkeypatch):
    """A registered dummy that ignores one of its fields fails the contract, naming the field."""
    import sys

    module = _dummy_module(reads_scale)
    monkeypatch.setitem(sys.modules, "drorl_dummy_algorithm", module)
    monkeypatch.setitem(REGISTRY, "dummy", Entry("drorl_dummy_algorithm", "offline", ("continuous",), "test"))
    if reads_scale:
        check_contract(algos.get("dummy"), algos.entry("dummy"), tmp_path=tmp_path)
    else:
        with pytest.raises(AssertionError, match="config fields nobody reads: scale"):
            check_contract(algos.get("dummy"), algos.entry("dummy"), tmp_path=tmp_path)


def test_a_loop_refuses_an_algorithm_of_the_wrong_kind():
    with pytest.raises(DrorlError, match="sac is an online algorithm, not offline; use drorl train-online"):
        algos.get("sac", "offline")
    with pytest.raises(DrorlError, match="bc is an offline algorithm, not online; use drorl train "):
        algos.get("bc", "online")
    assert algos.entry("dualdice").kind == "estimator"
    assert set(algos.names("offline")) >= {"bc", "drbc", "be-droil", "bcq", "bcq-ovr"}


def test_the_train_state_step_is_adam_on_the_loss():
    """gradient_step = value_and_grad then the optimiser's update: one Adam step moves each parameter by
    -lr sign(g) (Adam's first step), and the returned loss is the loss before the step."""
    import optax

    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    state = TrainState.create(params, optax.adam(0.1))
    loss_fn = lambda p, x: jnp.sum((p["w"] - x) ** 2)  # noqa: E731
    new, loss, grads = gradient_step(state, loss_fn, jnp.zeros(3))
    assert float(loss) == pytest.approx(1.0 + 4.0 + 0.25)
    assert jnp.allclose(grads["w"], 2 * params["w"])
    assert jnp.allclose(new.params["w"], params["w"] - 0.1 * jnp.sign(params["w"]), atol=1e-6)
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(state)
