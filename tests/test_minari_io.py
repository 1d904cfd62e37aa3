"""Minari import/export: exact arrays, episode structure and metadata, all in a temporary Minari root."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest

from drorl.data.dataset import D4RL_KEYS, Dataset
from drorl.data.minari_io import export_minari, import_minari
from drorl.errors import DrorlError

minari = pytest.importorskip("minari")

COLLECTED_ID = "drorl-test/pendulum/collected-v0"


@pytest.fixture
def minari_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh $MINARI_DATASETS_PATH; Minari 0.5.4 reads it at call time, and tests check files land here."""
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def _policy(episode: int, env: gymnasium.Env) -> np.ndarray:
    """Even episodes hold still (they run into the 20-step limit), odd ones push hard (the pole falls)."""
    if episode % 2 == 0:
        return np.zeros(1, np.float32)
    return np.full(1, 3.0 if env.np_random.random() < 0.8 else -3.0, np.float32)


def _collect(num_episodes: int = 4) -> list[dict[str, np.ndarray]]:
    """Record episodes of InvertedPendulum with Minari's DataCollector; return what the env produced."""
    collector = minari.DataCollector(gymnasium.make("InvertedPendulum-v5", max_episode_steps=20))
    episodes = []
    for e in range(num_episodes):
        obs, _ = collector.reset(seed=e)
        record: dict[str, list] = {"obs": [obs], "act": [], "rew": [], "term": [], "trunc": []}
        terminated = truncated = False
        while not (terminated or truncated):
            action = _policy(e, collector)
            obs, reward, terminated, truncated, _ = collector.step(action)
            for key, value in zip(("obs", "act", "rew", "term", "trunc"),
                                  (obs, action, reward, terminated, truncated)):
                record[key].append(value)
        episodes.append({key: np.asarray(value) for key, value in record.items()})
    collector.create_dataset(COLLECTED_ID, eval_env="InvertedPendulum-v5", algorithm_name="scripted",
                             author="drorl tests", author_email="tests@example.invalid",
                             code_permalink="https://example.invalid/drorl", description="test episodes")
    collector.close()
    return episodes


def _expected_rows(episodes: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {
        "observations": np.concatenate([ep["obs"][:-1] for ep in episodes]).astype(np.float32),
        "actions": np.concatenate([ep["act"] for ep in episodes]).astype(np.float32),
        "rewards": np.concatenate([ep["rew"] for ep in episodes]).astype(np.float32),
        "next_observations": np.concatenate([ep["obs"][1:] for ep in episodes]).astype(np.float32),
        "terminals": np.concatenate([ep["term"] for ep in episodes]),
        "timeouts": np.concatenate([ep["trunc"] & ~ep["term"] for ep in episodes]),
    }


def _assert_same_data(a: Dataset, b: Dataset) -> None:
    for key in D4RL_KEYS:
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
        assert getattr(a, key).dtype == getattr(b, key).dtype, key
    assert np.array_equal(a.episode_starts, b.episode_starts)


def _two_episode_dataset() -> Dataset:
    """A 5-step episode ending in a terminal, then a 7-step one ending in a time-out."""
    rng = np.random.default_rng(7)
    parts: dict[str, list] = {key: [] for key in D4RL_KEYS}
    for length, terminal in ((5, True), (7, False)):
        obs = rng.normal(size=(length + 1, 4)).astype(np.float32)
        last, none = np.zeros(length, bool), np.zeros(length, bool)
        last[-1] = True
        parts["observations"].append(obs[:-1])
        parts["next_observations"].append(obs[1:])
        parts["actions"].append(rng.uniform(-3, 3, size=(length, 1)).astype(np.float32))
        parts["rewards"].append(rng.normal(size=length).astype(np.float32))
        parts["terminals"].append(last if terminal else none)
        parts["timeouts"].append(none if terminal else last)
    metadata = {"env": "inverted-pendulum", "env_id": "InvertedPendulum-v5", "kind": "expert", "seed": 3,
                "ref_min_score": 5.5, "ref_max_score": 1000.0, "ref_source": "measured", "behavior_policy": "lqr"}
    return Dataset.from_arrays({key: np.concatenate(value) for key, value in parts.items()}, metadata)


def test_import_matches_collected_episodes(minari_root: Path) -> None:
    episodes = _collect()
    assert (minari_root / COLLECTED_ID / "data").is_dir()
    ends = [(bool(ep["term"][-1]), bool(ep["trunc"][-1])) for ep in episodes]
    assert (True, False) in ends and (False, True) in ends  # both kinds of episode end are covered

    dataset = import_minari(COLLECTED_ID)

    for key, expected in _expected_rows(episodes).items():
        assert np.array_equal(getattr(dataset, key), expected), key
    assert dataset.num_episodes == len(episodes)
    assert dataset.episode_lengths.tolist() == [len(ep["act"]) for ep in episodes]
    assert dataset.metadata["env"] == "inverted-pendulum"
    assert dataset.metadata["env_id"] == "InvertedPendulum-v5"
    assert dataset.metadata["kind"] == "minari"
    assert dataset.metadata["source"] == f"minari:{COLLECTED_ID}"
    assert dataset.metadata["minari_id"] == COLLECTED_ID


def test_minari_round_trip(minari_root: Path) -> None:
    _collect()
    first = import_minari(COLLECTED_ID)
    assert export_minari(first, "drorl-test/pendulum/again-v0") == "drorl-test/pendulum/again-v0"

    second = import_minari("drorl-test/pendulum/again-v0")

    _assert_same_data(first, second)
    assert minari.load_dataset("drorl-test/pendulum/again-v0").env_spec.max_episode_steps == 20
    assert second.metadata["kind"] == "minari"
    assert second.metadata["source"] == "minari:drorl-test/pendulum/again-v0"


def test_drorl_round_trip_keeps_metadata(minari_root: Path) -> None:
    original = _two_episode_dataset()
    dataset_id = export_minari(original)
    assert dataset_id == "drorl/inverted-pendulum/expert-v0"

    restored = import_minari(dataset_id)

    _assert_same_data(original, restored)
    assert restored.terminals.sum() == 1 and restored.timeouts.sum() == 1
    for key in ("env", "env_id", "kind", "seed", "ref_min_score", "ref_max_score", "ref_source", "behavior_policy"):
        assert restored.metadata[key] == original.metadata[key], key
    stored = minari.load_dataset(dataset_id)
    assert stored.env_spec.id == "InvertedPendulum-v5"
    assert stored.storage.metadata["ref_max_score"] == 1000.0


def test_export_refuses_existing_id_unless_overwrite(minari_root: Path) -> None:
    dataset = _two_episode_dataset()
    dataset_id = export_minari(dataset)
    with pytest.raises(DrorlError, match="already exists"):
        export_minari(dataset)
    shorter = dataset.select_episodes(np.array([1]))
    assert export_minari(shorter, overwrite=True) == dataset_id
    assert len(import_minari(dataset_id)) == len(shorter)


def test_unflagged_last_step_becomes_timeout(minari_root: Path) -> None:
    buffer = minari.data_collector.EpisodeBuffer(
        observations=np.zeros((4, 4)), actions=np.zeros((3, 1), np.float32), rewards=np.ones(3),
        terminations=np.zeros(3, bool), truncations=np.zeros(3, bool))
    minari.create_dataset_from_buffers("drorl-test/unflagged-v0", [buffer], env="InvertedPendulum-v5",
                                       algorithm_name="none", author="t", author_email="t@example.invalid",
                                       code_permalink="https://example.invalid", description="d",
                                       eval_env="InvertedPendulum-v5")
    dataset = import_minari("drorl-test/unflagged-v0")
    assert dataset.timeouts.tolist() == [False, False, True]
    assert not dataset.terminals.any()


def test_missing_dataset_is_one_line_error(minari_root: Path) -> None:
    with pytest.raises(DrorlError) as info:
        import_minari("nobody/nothing-v0")
    message = str(info.value)
    assert "'nobody/nothing-v0' not found locally" in message and "nothing is downloaded" in message
    assert str(minari_root) in message and "\n" not in message


def test_discrete_actions_are_refused(minari_root: Path) -> None:
    collector = minari.DataCollector(gymnasium.make("CartPole-v1", max_episode_steps=5))
    collector.reset(seed=0)
    for _ in range(5):
        collector.step(collector.action_space.sample())
    collector.create_dataset("drorl-test/cartpole-v0", eval_env="CartPole-v1", algorithm_name="random",
                             author="t", author_email="t@example.invalid",
                             code_permalink="https://example.invalid", description="d")
    collector.close()
    with pytest.raises(DrorlError, match="'drorl-test/cartpole-v0': action space Discrete"):
        import_minari("drorl-test/cartpole-v0")


def test_export_refuses_unchained_observations(minari_root: Path) -> None:
    arrays = _two_episode_dataset().arrays()
    arrays["next_observations"] = arrays["next_observations"].copy()
    arrays["next_observations"][2] += 1.0
    with pytest.raises(DrorlError, match="row 2: 'next_observations'"):
        export_minari(Dataset.from_arrays(arrays, {"env": "inverted-pendulum", "kind": "expert"}))
    assert not (minari_root / "drorl" / "inverted-pendulum" / "expert-v0").exists()


def test_export_without_environment(minari_root: Path) -> None:
    original = Dataset(**_two_episode_dataset().arrays(), metadata={"note": "no env"})
    export_minari(original, "drorl-test/bare-v0")
    restored = import_minari("drorl-test/bare-v0")
    _assert_same_data(original, restored)
    assert restored.metadata["note"] == "no env" and "env" not in restored.metadata
    assert minari.load_dataset("drorl-test/bare-v0").env_spec is None


def test_bad_id_and_missing_task(minari_root: Path) -> None:
    dataset = _two_episode_dataset()
    with pytest.raises(DrorlError, match="malformed"):
        export_minari(dataset, "no-version")
    with pytest.raises(DrorlError, match="give a minari dataset id"):
        export_minari(Dataset(**dataset.arrays(), metadata={}))


def test_without_minari_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "minari", None)
    with pytest.raises(DrorlError, match=r"pip install 'drorl\[minari\]'"):
        import_minari("any/thing-v0")
