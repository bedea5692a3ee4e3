"""Reward fine-tuning with the oracle (t2ikit.train.reward): advantages, the sampler's log-prob, train-split prompts,
and a tiny run that logs, checkpoints, resumes to the uninterrupted run's weights and exports a loadable folder."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tiny import make_tiny_sd_folder
from t2ikit.cli import main
from t2ikit.pipeline import T2IPipeline
from t2ikit.train import checkpoint as ckpt
from t2ikit.train.reward import (PolicyScheduler, RewardTrainer, ddim_step, draw_prompts, gaussian_log_prob,
                                 group_advantages, load_reward_config, mean_pairwise_distance)
from t2ikit.world import vocab
from t2ikit.world.caption import parse_caption
from t2ikit.world.oracle import Check, Score

ROOT = Path(__file__).resolve().parents[1]
TINY_RL = ROOT / "configs" / "tiny-rl.toml"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_sd_folder(tmp_path_factory.mktemp("rl") / "tiny")


def pixel_scorer(image, spec):
    """A stand-in oracle that a random tiny model passes about half the time, so that advantages are not all zero
    (the real oracle finds no object in a random model's images): two comparisons of pixels."""
    checks = (Check("a", bool(image[0, 5, 5] > image[0, 20, 20]), "", "colour"),
              Check("b", bool(image[1, 3, 12] > image[1, 25, 8]), "", "present"))
    return Score(checks, reading=None)


def config(model, out, **overrides):
    return load_reward_config(TINY_RL, {"model": str(model), "out": str(out), **overrides})


# --- pure parts -------------------------------------------------------------------------------------------------


def test_group_advantages_normalise_within_the_group_per_check_or_per_score():
    passed = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 1], [1, 0, 0]])  # 4 images x 3 checks
    score = group_advantages(passed, "score")
    r = passed.mean(axis=1)
    assert np.allclose(score, (r - r.mean()) / (r.std() + 1e-4))
    assert abs(score.mean()) < 1e-9 and abs(score.std() - 1) < 1e-3
    check = group_advantages(passed, "check")
    # check 0 passes for all: it contributes nothing; checks 1 and 2 each pass once and weigh alike
    assert np.allclose(check[[0, 2]], check[0]) and np.allclose(check[[1, 3]], check[1]) and check[0] > 0 > check[1]
    assert np.array_equal(group_advantages(np.ones((4, 3)), "check"), np.zeros(4))  # nothing to learn from
    with pytest.raises(ValueError, match="unknown advantage"):
        group_advantages(passed, "rank")


def test_ddim_step_log_prob_is_the_gaussian_of_the_step_and_the_recorded_one():
    gen = torch.Generator().manual_seed(0)
    x, pred = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    mean, std = ddim_step(pred, x, 0.3, 0.6, 1.0, "v_prediction")
    prev = mean + std * torch.randn(x.shape, generator=gen)
    expected = torch.distributions.Normal(mean, std).log_prob(prev).mean(dim=(1, 2, 3))
    assert torch.allclose(gaussian_log_prob(prev, mean, std), expected, atol=1e-5)
    assert std > 0 and ddim_step(pred, x, 0.3, 0.6, 0.5, "v_prediction")[1] == pytest.approx(std / 2)
    # the scheduler the loop runs records the log-prob that recomputing the step gives (the PPO ratio starts at 1)
    s = PolicyScheduler({"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                         "prediction_type": "v_prediction"}, 4, 1.0)
    assert s.timesteps.tolist() == [999, 749, 499, 249]
    out = s.step(pred, s.timesteps[0], x, generator=[torch.Generator().manual_seed(k) for k in range(3)])[0]
    m, sd = ddim_step(pred, x, *s.alpha_pair(0), 1.0, "v_prediction")
    assert torch.equal(out, s.records[0]["prev"]) and torch.allclose(
        gaussian_log_prob(out, m, sd), s.records[0]["log_prob"], atol=1e-6)
    for i in range(1, 4):
        s.step(pred, s.timesteps[i], x)
    assert s.records[-1]["std"] == 0  # the last step is deterministic: never trained on


def test_training_prompts_are_train_split_and_a_pure_function_of_the_iteration():
    mix = {"counting": 1.0, "complex": 1.0, "spatial": 1.0}
    drawn = [p for k in range(60) for p in draw_prompts(0, k, 4, mix)]
    assert {c for c, _, _ in drawn} == set(mix)
    for _, caption, spec in drawn:
        assert parse_caption(caption) == spec  # the caption says the spec the oracle checks
        assert not any((g.colour, g.shape) in vocab.HELD_OUT for g in spec.groups)
    assert [c for _, c, _ in draw_prompts(0, 7, 4, mix)] == [c for _, c, _ in draw_prompts(0, 7, 4, mix)]
    assert [c for _, c, _ in draw_prompts(0, 7, 4, mix)] != [c for _, c, _ in draw_prompts(0, 8, 4, mix)]


def test_diversity_is_zero_for_a_collapsed_group():
    x = torch.rand(4, 3, 8, 8)
    assert mean_pairwise_distance(x) > 0.1
    assert mean_pairwise_distance(x[:1].expand(4, -1, -1, -1)) == 0.0


@pytest.mark.parametrize("extra, match", [
    ({"eta": 0.0}, "eta"), ({"group": 1}, "group"), ({"train_steps": 4}, "train_steps"),
    ({"mix": {"free": 1.0}}, "unknown categories"), ({"advantage": "rank"}, "advantage"),
    ({"bogus": 1}, "unknown config key 'reward.bogus'"), ({"model": "/nonexistent"}, "not a model folder"),
])
def test_bad_reward_configs_are_sentences(tmp_path, extra, match):
    with pytest.raises(ValueError, match=match):
        load_reward_config(TINY_RL, {"model": "", **extra})


def test_shipped_reward_config_loads():
    cfg = load_reward_config(ROOT / "configs" / "shapes-rl.toml")
    assert cfg.model == "" and cfg.eval.guided and set(cfg.eval.splits) == {"train", "heldout"}


def test_cli_bad_reward_config_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_RL.read_text().replace("group = 3", "group = 1"))
    assert main(["train", "--config", str(bad)]) == 2
    assert "reward.group must be >= 2" in capsys.readouterr().err


# --- a tiny run ---------------------------------------------------------------------------------------------------


def unet_tensors(run: Path) -> dict:
    return load_file(ckpt.list_checkpoints(run / "checkpoints")[-1] / ckpt.TENSORS)


def test_tiny_run_logs_resumes_exactly_and_exports(tiny_model, tmp_path):
    straight = tmp_path / "straight"
    RewardTrainer(config(tiny_model, straight, iterations=2), scorer=pixel_scorer).run()
    split = tmp_path / "split"
    RewardTrainer(config(tiny_model, split, iterations=2, stop_at=1, export_at_end=False), scorer=pixel_scorer).run()
    RewardTrainer(config(tiny_model, split, iterations=2, export_at_end=False), scorer=pixel_scorer).run(
        resume="latest")
    a, b = unet_tensors(straight), unet_tensors(split)
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    assert not [k for k in a if not torch.equal(a[k], b[k])], "resumed weights differ from the straight run's"
    init = T2IPipeline.from_folder(tiny_model).unet.state_dict()
    assert any(not torch.equal(init[k], a[f"model.unet.{k}"]) for k in init), "the policy did not move"

    records = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    its = [r for r in records if r["event"] == "iteration"]
    assert [r["iteration"] for r in its] == [1, 2]
    for r in its:
        assert set(r["reward_per_category"]) == {c for c, _ in r["prompts"]} and 0 <= r["reward"] <= 1
        assert r["diversity_pixels"] > 0 and r["approx_kl"] >= 0 and np.isfinite(r["policy_loss"])
    assert its[1]["approx_kl"] > 0  # the second minibatch is scored by a policy the first one moved

    model = straight / "model"
    assert load_file(model / "unet" / "diffusion_pytorch_model.safetensors")["conv_in.weight"].dtype == torch.float16
    pipe = T2IPipeline.from_folder(model)
    assert json.loads((model / "t2ikit.json").read_text())["parser"] == "shapes-world"
    image = pipe.generate("a red circle", steps=2, seed=0, size=(32, 32), progress=False)[0]
    assert image.size == (32, 32)


def test_evaluation_logs_compbench_on_both_splits_with_diversity(tiny_model, tmp_path):
    trainer = RewardTrainer(config(tiny_model, tmp_path / "run"), scorer=pixel_scorer)
    record = trainer.evaluate(0)
    for split in ("train", "heldout"):
        block = record[f"{split}_plain"]
        assert block["n"] == 4 and set(block["per_category"]) == {"counting", "spatial"}
        assert block["diversity_pixels"] > 0
    assert all(p.grad is None for p in trainer.unet.parameters()) and trainer.unet.conv_in.weight.requires_grad
    assert json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])["event"] == "eval"


@pytest.mark.slow
def test_kill_9_and_resume_reaches_the_straight_run(tiny_model, tmp_path):
    """`t2ikit train` (the real oracle) killed with SIGKILL after its first checkpoint, resumed, equals the straight
    run. With the real oracle a random tiny model's advantages are zero, so this holds the optimizer's and the
    run's bookkeeping; the stand-in scorer's test above holds the moving weights."""
    toml = tmp_path / "rl.toml"
    toml.write_text(TINY_RL.read_text().replace('model = ""', f'model = "{tiny_model}"')
                    .replace("iterations = 4", "iterations = 6"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "t2ikit", "train", "--config", str(toml), "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "ckpt-0-reward-000000002").exists():
        if proc.poll() is not None:
            pytest.fail(f"train exited early: {proc.stderr.read().decode()[-2000:]}")
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main(["train", "--config", str(toml), "--out", str(killed), "--resume", "--quiet"]) == 0
    straight = tmp_path / "straight"
    assert main(["train", "--config", str(toml), "--out", str(straight), "--quiet"]) == 0
    a, b = unet_tensors(straight), unet_tensors(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
