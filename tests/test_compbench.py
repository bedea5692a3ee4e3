"""CompBench: fixed suites, reference generators at the ceiling and the floor, folders, prompt files, CLI."""

import json

import numpy as np
import pytest

from t2ikit.bench import compbench as cb
from t2ikit.cli import main
from t2ikit.world import vocab
from t2ikit.world.caption import parse_caption
from t2ikit.world.categories import CATEGORIES


def test_suites_are_fixed_and_split():
    a, b = cb.make_suite("train", 4, 2), cb.make_suite("train", 4, 2)
    assert a == b and len(a.items) == len(CATEGORIES) * 4 * 2
    assert [it.seed for it in a.items] == list(range(cb.BENCH_IMAGE_SEED, cb.BENCH_IMAGE_SEED + len(a.items)))
    held = cb.make_suite("heldout", 4, 1)
    for it in a.items:
        assert parse_caption(it.prompt) == it.spec
        assert not any((g.colour, g.shape) in vocab.HELD_OUT for g in it.spec.groups), it.prompt
    for it in held.items:
        assert any((g.colour, g.shape) in vocab.HELD_OUT for g in it.spec.groups), it.prompt
    assert {it.category for it in held.items} == set(CATEGORIES)
    with pytest.raises(ValueError, match="split"):
        cb.make_suite("test")
    with pytest.raises(ValueError, match="n_prompts"):
        cb.make_suite("train", 0)
    with pytest.raises(ValueError, match="categories"):
        cb.make_suite("train", 2, categories=("single", "poetry"))


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_ground_truth_is_the_ceiling_and_noise_the_floor(split):
    truth = cb.evaluate("ground-truth", split, n_prompts=4, seeds=2)
    noise = cb.evaluate("noise", split, n_prompts=4, seeds=1)
    assert truth["overall"]["accuracy"] == 1.0
    assert noise["overall"]["accuracy"] == 0.0
    for category in CATEGORIES:
        assert truth["per_category"][category]["n"] == 8
        assert truth["per_category"][category]["checks"]["present"] == 1.0


def test_paired_difference_of_truth_and_noise():
    truth = cb.evaluate("ground-truth", "train", n_prompts=3, seeds=2, categories=("single", "spatial"))
    noise = cb.evaluate("noise", "train", n_prompts=3, seeds=2, categories=("single", "spatial"))
    assert len(truth["items"]) == 12 and all(item[3] and item[4] == [] for item in truth["items"])
    assert all(not item[3] and any("present" in f for f in item[4]) for item in noise["items"])  # why each failed
    d = cb.paired_difference(noise, truth)
    assert d["overall"]["diff"] == 1.0 and d["overall"]["ci95"] == [1.0, 1.0]
    assert (d["overall"]["a_only"], d["overall"]["b_only"]) == (0, 12)
    assert d["overall"]["mcnemar_p"] == pytest.approx(2 / 2**12)
    assert d["single"]["n"] == 6
    same = cb.paired_difference(truth, truth)["overall"]
    assert same["diff"] == 0 and same["mcnemar_p"] == 1.0
    other = cb.evaluate("noise", "heldout", n_prompts=3, seeds=2, categories=("single", "spatial"))
    with pytest.raises(ValueError, match="not of the same suite items"):
        cb.paired_difference(truth, other)
    with pytest.raises(ValueError, match="per-item records"):
        cb.paired_difference({k: v for k, v in truth.items() if k != "items"}, truth)


def test_a_generator_that_ignores_the_prompt_fails():
    suite = cb.make_suite("train", 3, 1, categories=("colour_binding", "spatial"))
    truth = cb.ground_truth_generator()
    # every image drawn for the previous item's prompt
    shifted = lambda prompts, seeds: truth(prompts[1:] + prompts[:1], seeds)  # noqa: E731
    result = cb.run(suite, shifted, batch_size=6)
    assert result["overall"]["accuracy"] <= 0.34


def test_folder_round_trip(tmp_path):
    suite = cb.make_suite("train", 2, 2, categories=("single", "counting", "style"))
    ran = cb.run(suite, cb.ground_truth_generator(), batch_size=5, save_images=tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest["images"]) == len(suite.items)
    read = cb.evaluate_folder(tmp_path)
    assert read["per_category"] == ran["per_category"]
    manifest["images"][1]["file"] = "missing.png"
    manifest["images"][2]["prompt"] = "a red circle beside a blue square"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="2 bad entries") as err:
        cb.evaluate_folder(tmp_path)
    assert "entry 1" in str(err.value) and "entry 2" in str(err.value)


def test_prompt_file_with_a_bad_line_fails_before_any_compute(tmp_path, capsys):
    path = tmp_path / "prompts.txt"
    path.write_text("# my suite\na red circle\n\nthree green squeres\na blue diamond above a pink circle\n")

    def never(prompts, seeds):
        raise AssertionError("generated before the prompts were checked")

    with pytest.raises(ValueError, match=r"prompts.txt:4:"):
        cb.suite_from_file(path)
    assert main(["bench", "compbench", "--prompts", str(path)]) == 2
    assert "prompts.txt:4:" in capsys.readouterr().err
    path.write_text("a red circle\na blue diamond above a pink circle\n")
    suite = cb.suite_from_file(path, seeds=3)
    assert len(suite.items) == 6 and {it.category for it in suite.items} == {cb.CUSTOM_CATEGORY}
    assert cb.run(suite, cb.ground_truth_generator())["overall"]["accuracy"] == 1.0
    with pytest.raises(AssertionError):
        cb.run(suite, never)


def test_a_run_killed_between_batches_resumes_from_its_journal_with_the_same_result(tmp_path):
    suite = cb.make_suite("train", n_prompts=3, seeds=1, categories=["spatial", "counting"])  # 6 items
    truth = cb.ground_truth_generator()

    def half_truth(prompts, seeds):  # a generator whose quality varies by item, so the records differ
        images = truth(prompts, seeds)
        return [img if s % 2 else np.zeros_like(img) for img, s in zip(images, seeds)]

    whole = cb.run(suite, half_truth, batch_size=2)
    journal = tmp_path / "run.jsonl"
    calls = []

    def dies_on_the_third_batch(prompts, seeds):
        calls.append(list(seeds))
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a kill between two batches
        return half_truth(prompts, seeds)

    with pytest.raises(KeyboardInterrupt):
        cb.run(suite, dies_on_the_third_batch, batch_size=2, journal=journal)
    with open(journal, "a") as f:
        f.write('{"start": 4, "items": [["a red')  # a line torn mid-write
    calls.clear()
    resumed = cb.run(suite, dies_on_the_third_batch, batch_size=2, journal=journal)
    assert calls == [[it.seed for it in suite.items[4:6]]]  # only the batch that had not finished
    assert resumed["resumed"] == 4 and whole["resumed"] == 0
    assert resumed["items"] == whole["items"] and resumed["per_category"] == whole["per_category"]
    assert 0 < whole["overall"]["accuracy"] < 1
    assert len(journal.read_text().splitlines()) == 3  # the torn line was cut
    with pytest.raises(ValueError, match="another suite or batch size"):
        cb.run(suite, half_truth, batch_size=3, journal=journal)
    with pytest.raises(ValueError, match="another suite or batch size"):
        cb.run(cb.make_suite("heldout", n_prompts=3, seeds=1, categories=["spatial", "counting"]), half_truth,
               batch_size=2, journal=journal)
    with pytest.raises(ValueError, match=r"written by generator '.*dies_on_the_third_batch', not 'other'"):
        cb.run(suite, half_truth, batch_size=2, journal=journal, generator_name="other")


def test_a_result_is_read_back_only_for_its_own_suite(tmp_path):
    suite = cb.make_suite("train", n_prompts=2, seeds=1, categories=["single"])
    path = tmp_path / "r.json"
    path.write_text(json.dumps(cb.run(suite, cb.ground_truth_generator())))
    assert cb.read_result(path, suite)["overall"]["n"] == 2
    with pytest.raises(ValueError, match="another suite .*n_prompts: 2 there, 3 here"):
        cb.read_result(path, cb.make_suite("train", n_prompts=3, seeds=1, categories=["single"]))
    with pytest.raises(ValueError, match="another suite .*split: train there, heldout here"):
        cb.read_result(path, cb.make_suite("heldout", n_prompts=2, seeds=1, categories=["single"]))


def test_generator_contract():
    suite = cb.make_suite("train", 2, 1, categories=("single",))
    with pytest.raises(ValueError, match="returned 1 images for 2"):
        cb.run(suite, lambda prompts, seeds: [np.zeros((64, 64, 3))])
    with pytest.raises(TypeError, match="callable"):
        cb.run(suite, "ground-truth")


def test_pipeline_generator_groups_consecutive_seeds():
    calls = []

    class FakePipeline:  # seeds image k of a call with seed + k, as T2IPipeline.generate does
        def generate(self, prompts, seed, steps, progress):
            calls.append((len(prompts), seed, steps))
            truth = cb.ground_truth_generator()
            return truth(prompts, [seed + k for k in range(len(prompts))])

    result = cb.evaluate(FakePipeline(), "train", n_prompts=3, seeds=2, categories=("spatial",), batch_size=4,
                         steps=5)
    assert calls == [(4, cb.BENCH_IMAGE_SEED, 5), (2, cb.BENCH_IMAGE_SEED + 4, 5)]
    assert result["overall"]["accuracy"] == 1.0
    gen = cb.pipeline_generator(FakePipeline(), steps=1)
    calls.clear()
    gen(["a red circle"] * 3, [7, 8, 20])
    assert calls == [(2, 7, 1), (1, 20, 1)]


def test_cli_json_and_markdown(tmp_path, capsys):
    assert main(["bench", "compbench", "--generator", "ground-truth", "--n-prompts", "1", "--seeds", "1", "--json",
                 "--categories", "single,complex"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["per_category"]) == {"single", "complex"} and result["overall"]["accuracy"] == 1.0
    assert main(["bench", "compbench", "--generator", "noise", "--n-prompts", "1", "--seeds", "1",
                 "--out", str(tmp_path)]) == 0
    assert "| single | 1 | 0.0% |" in capsys.readouterr().out
    assert (tmp_path / "compbench.json").is_file() and (tmp_path / "compbench.md").is_file()
    assert main(["bench", "compbench", "--generator", "model", "--model", str(tmp_path / "nope")]) == 2
    capsys.readouterr()
    assert main(["bench", "compbench", "--generator", "noise", "--layout", "many"]) == 2
    assert "--layout applies to --generator model only" in capsys.readouterr().err
    assert main(["bench", "oracle", "--n", "2", "--categories", "single", "--conditions", "clean,random"]) == 0
    assert "| single | 100.00% (100.0%) | 0.00% (0.0%) |" in capsys.readouterr().out


def test_the_cli_resumes_a_stopped_run_from_its_journal_in_out(tmp_path, capsys, monkeypatch):
    args = ["bench", "compbench", "--generator", "ground-truth", "--n-prompts", "2", "--seeds", "1", "--categories",
            "single", "--batch-size", "1", "--out", str(tmp_path), "--json"]
    run = cb.run

    def stopped_after_one_batch(suite, generator, *a, **k):
        calls = []

        def gen(prompts, seeds):
            calls.append(seeds)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return generator(prompts, seeds)
        return run(suite, gen, *a, **k)

    monkeypatch.setattr(cb, "run", stopped_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    journal, = tmp_path.glob("compbench.*.journal.jsonl")
    assert len(journal.read_text().splitlines()) == 1
    monkeypatch.setattr(cb, "run", run)
    assert main(["bench", "compbench", "--generator", "noise", *args[4:]]) == 0  # other settings: their own run
    assert json.loads(capsys.readouterr().out)["resumed"] == 0 and journal.exists()
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["resumed"] == 1 and result["overall"]["n"] == 2 and result["overall"]["accuracy"] == 1.0
    assert not list(tmp_path.glob("*.journal.jsonl"))  # finished: nothing left to resume


def test_model_generator_on_a_tiny_folder(tmp_path, capsys):
    from tiny import make_tiny_sd_folder

    make_tiny_sd_folder(tmp_path / "tiny")
    assert main(["bench", "compbench", "--generator", "model", "--model", str(tmp_path / "tiny"), "--steps", "2",
                 "--size", "64x64", "--n-prompts", "1", "--seeds", "1", "--categories", "single", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["per_category"]["single"]["n"] == 1  # random weights: the score itself means nothing
    assert result["config"]["generator"].startswith("model:")
    assert main(["bench", "compbench", "--generator", "model", "--model", str(tmp_path / "tiny"), "--steps", "2",
                 "--size", "64x64", "--n-prompts", "1", "--seeds", "1", "--categories", "single", "--guidance", "7",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["generator"].endswith(",guidance=7")
    assert main(["bench", "compbench", "--generator", "noise", "--guidance", "7"]) == 2
    assert "--guidance applies to --generator model only" in capsys.readouterr().err
    assert main(["bench", "compbench", "--generator", "model", "--guidance", "-1"]) == 2
    assert "--guidance must be a number >= 0" in capsys.readouterr().err


def test_vae_generator_is_the_truth_through_the_autoencoder(tmp_path, capsys):
    from tiny import make_tiny_sd_folder

    shipped = cb.evaluate(cb.make_generator("vae"), n_prompts=4, seeds=1, categories=("single", "colour_binding"))
    assert shipped["overall"]["accuracy"] == 1.0  # the shipped VAE keeps one or two large-enough objects
    make_tiny_sd_folder(tmp_path / "tiny")
    truth = cb.ground_truth_generator()(["a red circle"], [3])[0]
    image = cb.make_generator("vae", model=tmp_path / "tiny")(["a red circle"], [3])[0]
    assert image.shape == truth.shape and not np.allclose(image, truth, atol=0.05)  # random weights: not the truth
    assert main(["bench", "compbench", "--generator", "vae", "--model", str(tmp_path / "nope")]) == 2
    assert "no vae folder" in capsys.readouterr().err
    assert main(["bench", "compbench", "--generator", "noise", "--model", str(tmp_path / "tiny")]) == 2
    assert "--model applies to --generator model or vae, not noise" in capsys.readouterr().err
