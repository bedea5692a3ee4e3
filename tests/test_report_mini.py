"""The mini protocol (t2ikit.report.mini): its world, its config, one run end to end, and the report experiments
built on it (q1.fusion, q1.training, q8.scaling) at the tests' smoke sizes."""

import math
import tomllib

import numpy as np
import pytest

from t2ikit.bench.compbench import ground_truth_generator, make_suite, run as run_suite
from t2ikit.report import mini
from t2ikit.report.core import Finding, ReportContext
from t2ikit.train.config import from_dict, TrainConfig
from t2ikit.world.caption import parse_caption, write_caption
from t2ikit.world.categories import CATEGORIES, WORLDS, sample_spec
from t2ikit.world.dataset import make_batch
from t2ikit.world.scene import sample_scene


def test_mini_world_scenes_captions_and_oracle_agree():
    w = WORLDS["mini"]
    for i in range(200):
        scene = sample_scene(3, i, world="mini", reference=False)
        spec = scene.spec
        assert all(g.colour in w.colours and g.shape in w.shapes and g.size == "large" and g.count == 1
                   for g in spec.groups)
        assert spec.style.background is None and spec.style.fill is None  # white, filled
        assert len(spec.groups) <= 2 and len(spec.relations) <= 1
        caption = write_caption(spec, np.random.default_rng(i))
        assert parse_caption(caption) == spec
    suite = make_suite(n_prompts=6, seeds=1, world="mini")
    assert {it.category for it in suite.items} == set(w.categories)
    # the world's own renders at the protocol's 32 px pass every oracle check: the ceiling is 100%
    result = run_suite(suite, ground_truth_generator(32))
    assert result["overall"]["accuracy"] == 1.0


def test_the_full_world_is_unchanged_by_default():
    a = [sample_scene(0, i, reference=False) for i in range(30)]
    b = [sample_scene(0, i, reference=False, world="full") for i in range(30)]
    assert a == b
    assert make_suite(n_prompts=2, seeds=1).config["categories"] == list(CATEGORIES)
    batch = make_batch(0, 0, 4, resolution=32)
    assert len(batch["captions"]) == 4


def test_bad_world_input_is_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown world"):
        sample_spec(rng, world="tiny")
    with pytest.raises(ValueError, match="unknown category 'counting' in world 'mini'"):
        sample_spec(rng, category="counting", world="mini")
    with pytest.raises(ValueError, match="in world 'mini'"):
        make_suite(n_prompts=1, world="mini", categories=("style",))
    cfg = tomllib.loads(mini.CONFIG.read_text())
    assert from_dict(TrainConfig, cfg).validate().world.name == "mini"
    with pytest.raises(ValueError, match="unknown world"):
        from_dict(TrainConfig, {**cfg, "world": {"name": "huge"}}).validate()
    with pytest.raises(ValueError, match="unknown mix categories"):
        from_dict(TrainConfig, {**cfg, "curriculum": {"mix": {"counting": 1.0}}}).validate()


def test_a_mini_run_trains_evaluates_and_is_not_redone(tiny_protocol):
    run = mini.MiniRun(seed=1, samples=8)
    row = mini.train_and_evaluate(run, tiny_protocol, n_prompts=1)
    folder = mini.run_folder(run, tiny_protocol)
    assert (folder / mini.DONE).is_file() and row["steps"] == 2 and row["samples"] == 8
    assert row["params"] > 0 and row["flops"] > 0 and math.isfinite(row["final_loss"])
    assert row["n"] == 3 and len(row["items"]) == 3  # one prompt per mini category
    assert row["ci95"][0] <= row["accuracy"] <= row["ci95"][1]
    done = (folder / mini.DONE).stat().st_mtime_ns
    again = mini.train_and_evaluate(run, tiny_protocol, n_prompts=1)
    assert again == row and (folder / mini.DONE).stat().st_mtime_ns == done  # read back, not retrained
    times, = [t for t in mini.run_times(tiny_protocol) if t["key"] == run.key()]
    assert times["samples"] == 8 and times["train_s"] == row["wall_s"] and times["eval_s"] == row["eval_s"] > 0
    assert mini.MiniRun(seed=2).key() != mini.MiniRun(seed=1).key()


def test_runs_trained_ahead_in_worker_processes_equal_runs_trained_in_process(tiny_protocol, tmp_path):
    runs = [mini.MiniRun(seed=0), mini.MiniRun(seed=1)]
    with pytest.raises(ValueError, match="shared VAE"):
        mini.train_ahead(runs, tiny_protocol, 2)
    mini.shared_vae(tiny_protocol)
    mini.train_ahead(runs, tiny_protocol, 2)  # two spawned processes, one thread each
    assert all((mini.run_folder(r, tiny_protocol) / mini.DONE).is_file() for r in runs)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / mini.VAE_FOLDER).symlink_to((tiny_protocol / mini.VAE_FOLDER).resolve())  # the same shared VAE
    for r in runs:  # the same runs in this process on one thread: the same training
        assert mini.train(r, alone, threads=1)["final_loss"] == mini.train(r, tiny_protocol)["final_loss"]
    mini.train_ahead(runs, tiny_protocol, 2, evaluation={"n_prompts": 1})  # trained: only evaluated, in the workers
    for r in runs:  # cached where evaluate looks, and the same result as evaluating here on one thread
        assert list(mini.run_folder(r, tiny_protocol).glob("compbench-1x1-*.json"))  # written by a worker
        cached = mini.evaluate(r, tiny_protocol, n_prompts=1)
        assert cached["items"] == mini.evaluate(r, alone, n_prompts=1, threads=1)["items"]
    with pytest.raises(ValueError, match="workers"):
        mini.train_ahead(runs, tiny_protocol, 0)


def test_the_first_mini_experiment_trains_the_runs_of_every_one_still_to_come_in_one_pool(tmp_path, monkeypatch):
    from t2ikit.report import q1_fusion, q8_scaling

    pools = []
    monkeypatch.setattr(mini, "train_ahead",
                        lambda runs, root, workers, **kw: pools.append((runs, kw["evaluation"])) or len(runs))
    ctx = ReportContext(tmp_path / "report", budget="full", progress=False, workers=2)
    ctx.experiment_id, ctx.pending = "q1.fusion", ("q2.sparsity", "q1.training", "q8.scaling")
    q1_fusion.train_ahead(ctx)
    (runs, evaluation), = pools  # one pool: the three experiments evaluate alike at full
    fusion = {r.key() for rs in q1_fusion.fusion_runs(ctx).values() for r in rs}
    recipes = {r.key() for rs in q1_fusion.recipe_runs(ctx).values() for r in rs}
    grid = {r.key() for r in q8_scaling.grid_runs(ctx)}
    assert [r.key() for r in runs] == list(dict.fromkeys(r.key() for r in runs))  # each run once
    assert {r.key() for r in runs} == fusion | recipes | grid
    assert (len(fusion), len(recipes - fusion), len(grid - fusion)) == (15, 9, 24)  # shared runs trained once
    assert evaluation == {"n_prompts": 50, "seeds": 1, "steps": 20}
    assert ctx.trained_ahead == ("q1.training", "q8.scaling")  # the report says their time is in q1.fusion's
    pools.clear()
    ctx.experiment_id, ctx.pending, ctx.trained_ahead = "q8.scaling", (), ()  # on its own: its own runs only
    q1_fusion.train_ahead(ctx)
    assert {r.key() for r in pools[0][0]} == grid and ctx.trained_ahead == ()
    order = mini.longest_first(q8_scaling.grid_runs(ctx))
    assert [r.samples for r in order] == sorted((r.samples for r in order), reverse=True)
    assert [r.seed for r in order if r.samples == 4800] == sorted(r.seed for r in order if r.samples == 4800)


def test_paired_seed_difference():
    rng = np.random.default_rng(0)
    a = [[True, False, False, False]] * 3
    b = [[True, True, True, False]] * 3
    d = mini.paired_seed_difference(a, b, rng, resamples=200)
    assert d["diff"] == pytest.approx(0.5) and d["ci95"][0] <= 0.5 <= d["ci95"][1] and d["seeds"] == 3
    with pytest.raises(ValueError, match="same positive number of seeds"):
        mini.paired_seed_difference(a, b[:2], rng)


@pytest.mark.slow
def test_the_experiments_give_findings_and_cache_their_units(tiny_protocol, tmp_path, monkeypatch):
    from t2ikit.report import q1_fusion, q8_scaling

    monkeypatch.setattr(q1_fusion, "MI_RESAMPLES", 20)
    monkeypatch.setattr(q8_scaling, "BOOTSTRAP", 20)
    ctx = ReportContext(tmp_path / "report", budget="smoke", progress=False, workers=2)  # runs trained 2 at a time
    findings = {}
    for name, fn in (("q1.fusion", q1_fusion.fusion), ("q1.training", q1_fusion.training),
                     ("q8.scaling", q8_scaling.scaling)):
        ctx.experiment_id = name
        findings[name] = fn(ctx)
        assert isinstance(findings[name], Finding) and findings[name].tables
    fusion = findings["q1.fusion"].numbers
    assert set(fusion["accuracy"]) == set(q1_fusion.STRATEGIES)
    for d in fusion["vs_sequential"].values():
        assert d["ci95"][0] <= d["diff"] <= d["ci95"][1]
    gate = fusion["gate_information"]
    assert gate["I_text"][1] <= gate["I_text"][0] <= gate["I_text"][2] and gate["I_text"][0] >= 0
    assert len(findings["q1.training"].tables[0].rows) == len(q1_fusion.recipes(10))
    e = findings["q8.scaling"].numbers["exponent"]
    assert math.isfinite(e["value"])
    # a second run reads every unit back instead of training again
    units = sorted((ctx.out / "work").rglob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in units}
    monkeypatch.setattr(mini, "train", lambda *a, **k: pytest.fail("a cached unit was recomputed"))
    ctx.experiment_id = "q1.fusion"
    assert q1_fusion.fusion(ctx).numbers["accuracy"] == fusion["accuracy"]
    assert all(p.stat().st_mtime_ns == stamps[p] for p in units)
