"""evaluate_policy bookkeeping on a fake environment with known outcomes, crashes, spec checks, video, the
command line, and one short Meta-World reach-v3 run with the expert (the best-K / last tracker: test_tracking.py)."""

import json
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError, ShapeError
from flowzoo.robotics.spec import EnvSpec
from flowzoo.robotics.evaluate import evaluate_policy, main
from flowzoo.robotics.tracking import write_video

gym = pytest.importorskip("gymnasium")
torch.set_num_threads(1)

CRASH_IN_STEP, CRASH_IN_RESET = 104, 105


def counting_spec(task="counting", obs_dim=3):
    return EnvSpec(task=task, obs_mode="state", obs_shapes={"state": (obs_dim,)}, action_dim=2,
                   action_low=(-1.0, -1.0), action_high=(1.0, 1.0), max_episode_steps=20)


class CountingEnv(gym.Env):
    """Known outcomes per reset seed s: length 6 + s % 3 (then truncated), reward 1 per step, success reported
    at step 4 only (so an episode's success must be the max over its steps) when s is even; seed 104 raises
    inside step 3, seed 105 raises inside reset."""

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"
    observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-1e3, 1e3, (3,), np.float32)})
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, task="counting"):
        self.spec_flowzoo = counting_spec(task)
        self.received = []

    def _obs(self):
        return {"state": np.array([self.t, self.seed_used, 0.0], dtype=np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed == CRASH_IN_RESET:
            raise RuntimeError("reset failed: model file missing")
        self.seed_used, self.t = seed, 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        self.received.append(np.array(action))
        if self.seed_used == CRASH_IN_STEP and self.t == 3:
            raise RuntimeError("simulator exploded")
        success = float(self.seed_used % 2 == 0 and self.t == 4)
        return self._obs(), 1.0, False, self.t >= 6 + self.seed_used % 3, {"success": success}

    def render(self):
        return np.full((8, 8, 3), 10 * self.t, dtype=np.uint8)


class ChunkPolicy:
    """Predicts the chunk [t, -t], [t + 1, -(t + 1)], ... (scaled by 0.01) from the last observed step t."""

    def __init__(self, spec=None, horizon=4, n_action_steps=2, nan=False):
        self.spec = spec or counting_spec()
        self.config = SimpleNamespace(n_obs_steps=2, n_action_steps=n_action_steps, horizon=horizon)
        self.batches, self.nan, self.nfe = [], nan, 1

    def predict_action_chunk(self, obs):
        state = obs["state"]
        assert state.shape[1:] == (2, 3)
        self.batches.append(state.shape[0])
        t = state[:, -1, 0:1] + torch.arange(self.config.horizon, dtype=torch.float32)
        chunk = 0.01 * torch.stack([t, -t], dim=-1)
        if self.nan:
            chunk[:, 0] = float("nan")
        return chunk


def expected_episode(seed, max_steps=20, stop_on_success=False):
    if seed == CRASH_IN_RESET:
        return {"success": False, "length": 0, "return": 0.0, "error": "reset failed"}
    if seed == CRASH_IN_STEP:
        return {"success": False, "length": 3, "return": 2.0, "error": "simulator exploded"}
    length = min(6 + seed % 3, max_steps)
    success = seed % 2 == 0 and length >= 4
    if stop_on_success and success:
        length = 4
    return {"success": success, "length": length, "return": float(length), "error": None}


@pytest.mark.parametrize("num_envs,max_steps,stop", [(3, None, False), (1, 5, False), (4, None, True)])
def test_bookkeeping_matches_known_outcomes(num_envs, max_steps, stop):
    policy = ChunkPolicy()
    result = evaluate_policy(policy, CountingEnv, episodes=7, seed=100, num_envs=num_envs, max_steps=max_steps,
                             stop_on_success=stop, progress=False)
    assert [r.episode for r in result.episodes] == list(range(7))
    assert [r.seed for r in result.episodes] == list(range(100, 107))
    for record in result.episodes:
        want = expected_episode(record.seed, max_steps or 20, stop)
        assert (record.success, record.length, record.episode_return) == (want["success"], want["length"],
                                                                          want["return"]), record
        assert (record.error is None) == (want["error"] is None)
        if want["error"]:
            assert want["error"] in record.error
    successes = [expected_episode(100 + k, max_steps or 20, stop)["success"] for k in range(7)]
    assert result.success_rate == pytest.approx(np.mean(successes))
    assert result.crashed_episodes == 2
    assert result.mean_length == pytest.approx(np.mean([r.length for r in result.episodes]))
    assert result.policy_ms_per_action > 0 and result.end_to_end_ms_per_action >= result.policy_ms_per_action
    if num_envs > 1:
        assert result.mean_batch_size > 1  # slots share batched policy calls
    assert result.nfe == 1


def test_actions_follow_the_chunks_and_non_finite_actions_are_replaced():
    envs = []

    def factory():
        envs.append(CountingEnv())
        return envs[-1]

    evaluate_policy(ChunkPolicy(horizon=4, n_action_steps=2), factory, episodes=1, seed=100, num_envs=1,
                    progress=False)
    # Chunks are predicted at steps 0, 2, 4, ... from the observation t of that step; 2 of 4 actions executed.
    np.testing.assert_allclose([a[0] for a in envs[0].received], 0.01 * np.arange(7), atol=1e-6)
    result = evaluate_policy(ChunkPolicy(nan=True), CountingEnv, episodes=2, seed=100, num_envs=2,
                             progress=False)
    assert [r.non_finite_actions for r in result.episodes] == [4, 4]  # one NaN row per executed chunk


def test_evaluation_goes_on_when_every_episode_crashes():
    result = evaluate_policy(ChunkPolicy(), CountingEnv, episodes=2, seed=CRASH_IN_STEP, num_envs=2,
                             progress=False)
    assert result.success_rate == 0.0 and result.crashed_episodes == 2
    assert [r.length for r in result.episodes] == [3, 0]
    assert "RuntimeError: simulator exploded" in result.episodes[0].error
    assert "reset raised RuntimeError" in result.episodes[1].error
    result = evaluate_policy(ChunkPolicy(), CountingEnv, episodes=1, seed=CRASH_IN_RESET, num_envs=3,
                             progress=False)
    assert result.crashed_episodes == 1 and np.isnan(result.policy_ms_per_call)


def test_spec_mismatch_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"observation 'state' of shape \(4,\)"):
        evaluate_policy(ChunkPolicy(counting_spec(obs_dim=4)), CountingEnv, episodes=1, progress=False)
    with pytest.raises(ConfigError, match="trained on 'push-v3'.*task 'push-v3'"):
        evaluate_policy(ChunkPolicy(counting_spec(task="push-v3")), CountingEnv, episodes=1, progress=False)
    with pytest.raises(ConfigError, match="obs_mode 'state'"):
        evaluate_policy(ChunkPolicy(), CountingEnv, episodes=1, obs_mode="pointcloud", progress=False)
    with pytest.raises(ConfigError, match="episodes"):
        evaluate_policy(ChunkPolicy(), CountingEnv, episodes=0, progress=False)


def test_rollouts_run_directly_on_a_guarded_vector_env_and_refuse_a_plain_one():
    from flowzoo.robotics.rollout import guarded_vector_env, run_episodes

    vector = guarded_vector_env([CountingEnv(), CountingEnv()])
    try:
        result, frames = run_episodes(ChunkPolicy(), vector, "counting", 3, 100, 20, 0, False, False)
    finally:
        vector.close()
    assert [r.length for r in result.episodes] == [expected_episode(100 + k)["length"] for k in range(3)]
    assert frames == []
    plain = gym.vector.SyncVectorEnv([CountingEnv], autoreset_mode=gym.vector.AutoresetMode.DISABLED,
                                     observation_mode="different")
    try:
        with pytest.raises(ConfigError, match="guarded_vector_env"):
            run_episodes(ChunkPolicy(), plain, "counting", 3, 100, 20, 0, False, False)
        with pytest.raises(ConfigError, match="max_steps"):
            run_episodes(ChunkPolicy(), plain, "counting", 3, 100, 0, 0, False, False)
    finally:
        plain.close()


def test_wrong_policy_output_is_refused():
    policy = ChunkPolicy()
    policy.predict_action_chunk = lambda obs: torch.zeros(obs["state"].shape[0], 4, 3)
    with pytest.raises(ShapeError, match="horizon, 2"):
        evaluate_policy(policy, CountingEnv, episodes=2, progress=False)


@pytest.mark.filterwarnings("ignore:imageio-ffmpeg is not installed")
def test_video_of_the_first_episodes_is_written(tmp_path):
    iio = pytest.importorskip("imageio.v3")
    result = evaluate_policy(ChunkPolicy(), CountingEnv, episodes=3, seed=100, num_envs=2, progress=False,
                             video=tmp_path / "rollout.mp4", video_episodes=2)
    path = tmp_path / result.video.split("/")[-1]
    assert path.exists() and path.suffix in (".mp4", ".gif")
    frames = iio.imread(path, index=None)
    assert len(frames) == (7 + 1) + (8 + 1)  # reset frame + one per step, episodes 0 and 1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    with pytest.raises(ShapeError):
        write_video([np.zeros((4, 4), dtype=np.uint8)], tmp_path / "bad.gif")


def test_an_mp4_is_written_where_an_mp4_is_asked(tmp_path):
    pytest.importorskip("imageio_ffmpeg")  # part of the robotics extra
    result = evaluate_policy(ChunkPolicy(), CountingEnv, episodes=1, num_envs=1, progress=False,
                             video=tmp_path / "rollout.mp4")
    assert result.video == str(tmp_path / "rollout.mp4")
    assert (tmp_path / "rollout.mp4").read_bytes()[4:8] == b"ftyp"  # an MP4 container, not a GIF renamed


def test_a_bad_video_name_is_refused_before_any_episode_runs(tmp_path):
    with pytest.raises(ConfigError, match=".mp4 or .gif"):
        evaluate_policy(ChunkPolicy(), CountingEnv, episodes=1, progress=False, video=tmp_path / "rollout.avi")
    assert not any(tmp_path.iterdir())


def register_counting_task(name):
    from flowzoo.robotics.envs import register_task

    register_task(name, lambda **kwargs: CountingEnv(task=name))


def fake_policy_module(monkeypatch, policy):
    module = types.ModuleType("flowzoo.robotics.policy")
    module.load_policy = lambda path: policy
    monkeypatch.setitem(sys.modules, "flowzoo.robotics.policy", module)


def test_main_prints_a_table_and_writes_results_next_to_the_checkpoint(tmp_path, monkeypatch, capsys):
    register_counting_task("fz-test-counting")
    fake_policy_module(monkeypatch, ChunkPolicy(counting_spec("fz-test-counting")))
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    assert main(["--checkpoint", str(checkpoint), "--episodes", "4", "--seed", "100", "--progress", "false"]) == 0
    out = capsys.readouterr().out
    assert "| fz-test-counting | 4 |" in out
    saved = json.loads((checkpoint / "eval_fz-test-counting_seed100.json").read_text())
    assert saved["success_rate"] == pytest.approx(0.5) and len(saved["episodes"]) == 4


def test_main_refuses_another_task_and_writes_nothing(tmp_path, monkeypatch):
    register_counting_task("fz-test-other")
    fake_policy_module(monkeypatch, ChunkPolicy(counting_spec("fz-test-counting")))
    out = tmp_path / "results.json"
    with pytest.raises(ConfigError, match="task 'fz-test-counting'"):
        main(["--checkpoint", str(tmp_path), "--task", "fz-test-other", "--out", str(out), "--progress", "false"])
    assert not out.exists()
    with pytest.raises(ConfigError, match="episodes"):
        main(["--checkpoint", str(tmp_path), "--episodes", "many"])


@pytest.fixture(scope="module")
def reach_spec():
    pytest.importorskip("metaworld")
    from flowzoo.robotics.spec import env_spec
    from flowzoo.robotics.envs import make_env

    env = make_env("reach-v3", "state")  # building a Meta-World env takes ~1-2 s: once per module
    spec = env_spec(env)
    env.close()
    return spec


class ExpertAdapter:
    """Meta-World's scripted expert behind the policy interface (chunks of one action, closed loop)."""

    def __init__(self, spec):
        from flowzoo.robotics.envs import expert_policy

        self.spec = spec
        self.expert = expert_policy(spec.task)
        self.config = SimpleNamespace(n_obs_steps=2, n_action_steps=1, horizon=1)

    def predict_action_chunk(self, obs):
        return torch.as_tensor(np.stack([[self.expert(s)] for s in obs["state"][:, -1].numpy()]))


def test_metaworld_reach_with_the_scripted_expert(tmp_path, reach_spec):
    result = evaluate_policy(ExpertAdapter(reach_spec), "reach-v3", episodes=2, seed=0, num_envs=1,
                             max_steps=120, stop_on_success=True, progress=False, video=tmp_path / "reach.gif",
                             env_kwargs={"frame_size": 48})
    assert result.success_rate == 1.0 and result.crashed_episodes == 0
    assert all(0 < r.length < 120 for r in result.episodes)
    assert (tmp_path / "reach.gif").stat().st_size > 1000
    do_nothing = ExpertAdapter(reach_spec)
    do_nothing.predict_action_chunk = lambda obs: torch.zeros(obs["state"].shape[0], 1, 4)
    result = evaluate_policy(do_nothing, "reach-v3", episodes=1, seed=0, num_envs=1, max_steps=30,
                             progress=False)
    assert result.success_rate == 0.0 and result.episodes[0].length == 30


def test_main_with_a_saved_flow_policy_on_metaworld(tmp_path, capsys, reach_spec):
    from flowzoo.robotics.normalizer import Normalizer
    from flowzoo.robotics.policy import FlowPolicy, save_policy
    from flowzoo.robotics.policy_config import PolicyConfig

    spec = reach_spec
    rng = np.random.default_rng(0)
    normalizer = Normalizer.fit({"state": rng.normal(size=(64, 39)).astype(np.float32),
                                 "action": rng.uniform(-1, 1, (64, 4)).astype(np.float32)})
    torch.manual_seed(0)
    policy = FlowPolicy(spec, normalizer, PolicyConfig(method="mp1", down_dims=(16, 32), state_hidden=(32,)))
    checkpoint = tmp_path / "policy"
    save_policy(policy, checkpoint)
    before = sorted(p.name for p in checkpoint.iterdir())
    out = tmp_path / "eval.json"
    with pytest.raises(ConfigError, match="task 'reach-v3'"):  # a checkpoint from another task
        main(["--checkpoint", str(checkpoint), "--task", "push-v3", "--out", str(out), "--progress", "false"])
    assert not out.exists() and sorted(p.name for p in checkpoint.iterdir()) == before
    assert main(["--checkpoint", str(checkpoint), "--episodes", "2", "--num_envs", "1", "--max_steps", "4",
                 "--out", str(out), "--progress", "false"]) == 0
    saved = json.loads(out.read_text())
    assert saved["task"] == "reach-v3" and saved["nfe"] == 1 and [e["length"] for e in saved["episodes"]] == [4, 4]
    # the record names the weights it evaluated
    assert saved["weights_sha256"] == json.loads((checkpoint / "policy.json").read_text())["weights_sha256"]
    assert "| reach-v3 | 2 |" in capsys.readouterr().out
