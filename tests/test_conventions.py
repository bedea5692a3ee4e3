"""What a diffusers or AUTOMATIC1111 user expects of the command line and the API (issue 25): random seeds stored
and reproducible, numbered outputs that never overwrite, --version, public names, defaults in every --help,
samplers by their A1111 names, --from a PNG, quiet libraries, exit codes."""

import argparse
import json
import re
import subprocess
import sys
import warnings
from importlib.metadata import version

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from t2ikit.cli import HelpFormatter, build_parser, main, parsers
from t2ikit.cli.info import PNG_KEY, parse_parameters, read_parameters

TINY = ["--model", "tiny-sd", "--steps", "2", "--size", "16x16"]


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def settings(path) -> dict:
    return parse_parameters(read_parameters(path))["settings"]


# --- 1. seeds and files ---------------------------------------------------------------------------------


def test_no_seed_draws_one_prints_stores_it_and_seed_reproduces(env, tmp_path, capsys):
    out_dir = tmp_path / "outputs"
    assert main(["generate", "a red circle", *TINY, "--out-dir", str(out_dir)]) == 0
    captured = capsys.readouterr()
    first = out_dir / captured.out.strip().split("/")[-1]
    seed = settings(first)["Seed"]
    assert first.name == f"00000-{seed}.png" and f"seed {seed} (random" in captured.err
    assert main(["generate", "a red circle", *TINY, "--out-dir", str(out_dir), "--seed", str(seed), "--quiet"]) == 0
    again = out_dir / f"00001-{seed}.png"  # numbered past the first, nothing replaced
    assert capsys.readouterr().out.split() == [str(again)]
    assert np.array_equal(pixels(first), pixels(again))
    assert main(["generate", "a red circle", *TINY, "--out-dir", str(out_dir), "--quiet"]) == 0
    other = capsys.readouterr().out.strip()
    assert settings(other)["Seed"] != seed  # a fresh draw (2**-32 chance of a false failure)


def test_numbered_past_existing_files_with_a_grid(env, tmp_path, capsys):
    out_dir = tmp_path / "outputs"
    out_dir.mkdir()
    (out_dir / "00007-1.png").write_bytes(b"someone else's image")
    (out_dir / "notes.txt").write_text("not numbered")
    assert main(["generate", "a red circle", *TINY, "--out-dir", str(out_dir), "--seed", "3", "--n", "3", "--grid",
                 "--quiet"]) == 0
    written = capsys.readouterr().out.split()
    assert written == [str(out_dir / n) for n in ("00008-3.png", "00009-4.png", "00010-5.png", "00011-3-grid.png")]
    assert (out_dir / "00007-1.png").read_bytes() == b"someone else's image"
    assert Image.open(written[-1]).size == (32, 32)  # 3 images of 16x16 in rows of 2
    assert np.array_equal(pixels(written[-1])[16:, :16], pixels(written[2]))
    assert settings(written[1])["Seed"] == 4


def test_existing_outputs_are_refused_before_any_compute(env, tmp_path, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr("t2ikit.cli.models.load_pipeline", no_model)
    existing = tmp_path / "out.png"
    existing.write_bytes(b"keep me")
    image = tmp_path / "in.png"
    Image.new("RGB", (16, 16)).save(image)
    for argv in (["generate", "a red circle", *TINY, "--out", str(existing)],
                 ["generate", "a red circle", *TINY, "--out", str(tmp_path / "new.png"), "--grid"],
                 ["edit", str(image), "--source", "a red circle", "--target", "a blue circle", "--out", str(existing)],
                 ["explain", "a red circle", "--out", str(existing)],
                 ["world", "sample", "--n", "1", "--out", str(existing)]):
        if "--grid" in argv:
            (tmp_path / "new-grid.png").write_bytes(b"keep me")
        assert main(argv) == 2, argv
        assert "exists; pass --overwrite" in capsys.readouterr().err
    inversion = tmp_path / "x.safetensors"
    inversion.write_bytes(b"keep me")
    assert main(["invert", str(image), "--prompt", "a red circle", "--out", str(inversion)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert existing.read_bytes() == inversion.read_bytes() == b"keep me"


def test_overwrite_replaces_and_json_lists_paths_and_parameters(env, tmp_path, capsys):
    out = tmp_path / "out.png"
    out.write_bytes(b"old")
    assert main(["generate", "a red circle", *TINY, "--seed", "5", "--out", str(out), "--overwrite", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == [{"path": str(out), "seed": 5, "parameters": read_parameters(out)}]
    assert result["settings"]["Seed"] == 5 and result["settings"]["Model"] == "tiny-sd" and not result["random_seed"]
    inv = tmp_path / "x.safetensors"
    assert main(["invert", str(out), "--prompt", "a red circle", "--model", "tiny-sd", "--steps", "2", "--out", str(inv),
                 "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["latents"] == str(inv) and inv.is_file() and result["steps"] == 2 and result["model"] == "tiny-sd"
    edited = tmp_path / "edited.png"
    assert main(["edit", str(out), "--source", "a red circle", "--target", "a blue circle", "--model", "tiny-sd",
                 "--steps", "2", "--out", str(edited), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["image"] == str(edited) and result["target_prompt"] == "a blue circle"
    assert result["parameters"] == read_parameters(edited)


# --- 2. conventions -------------------------------------------------------------------------------------


def test_version_and_exit_codes_in_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"t2ikit {version('t2ikit')}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "-v, --verbose" in text and re.search(r"1\s+a check failed", text) and re.search(r"2\s+bad input", text)


def test_public_names_import_and_import_is_light():
    import t2ikit
    from t2ikit import T2IPipeline
    from t2ikit.pipeline import T2IPipeline as defined

    assert T2IPipeline is defined and t2ikit.__version__ == version("t2ikit")
    for name in t2ikit.__all__:
        assert getattr(t2ikit, name) is not None, name
    assert {"GenerationSpec", "Conditioning", "sample", "Parser", "register_parser", "SceneSupport"} <= set(t2ikit.__all__)
    code = "import sys, t2ikit; print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_every_verbs_help_shows_its_defaults():
    shown = 0
    for parser in parsers(build_parser()):
        assert issubclass(parser.formatter_class, HelpFormatter), parser.prog
        parser.format_help()  # every help renders (a stray % would raise here)
        for action in parser._actions:
            if action.default in (None, False, [], argparse.SUPPRESS) or isinstance(action, argparse._HelpAction):
                continue
            if not action.option_strings and action.nargs not in ("?", "*"):
                continue
            text = parser.formatter_class(parser.prog)._get_help_string(action) or ""
            assert "default" in text.lower(), f"{parser.prog} {action.option_strings}: {action.help!r}"
            shown += 1
    assert shown > 50
    generate = next(p for p in parsers(build_parser()) if p.prog.endswith(" generate")).format_help()
    assert "(default: outputs)" in " ".join(generate.split())


def test_one_meaning_per_flag():
    """--size is WxH wherever images are made; a model size is --model-size; --quiet, never --no-progress."""
    for parser in parsers(build_parser()):
        flags = {s: a for a in parser._actions for s in a.option_strings}
        assert "--no-progress" not in flags and "--image-size" not in flags, parser.prog
        if "--size" in flags:
            assert "WIDTHxHEIGHT" in flags["--size"].help and flags["--size"].type is None, parser.prog
    args = build_parser().parse_args(["bench", "compbench"])
    assert args.generator == "model"  # the model is benchmarked unless the ground truth is asked for


def test_world_score_exits_1_when_an_image_fails(tmp_path, capsys):
    from t2ikit.world.caption import write_caption
    from t2ikit.world.render import render
    from t2ikit.world.scene import sample_scene, scene_rng

    scene = sample_scene(0, 0, category="single", split="train")
    caption = write_caption(scene.spec, scene_rng(0, 0))
    path = tmp_path / "scene.png"
    Image.fromarray((render(scene, 64).rgb * 255).round().astype(np.uint8)).save(path)
    assert main(["world", "score", str(path), "--prompt", caption]) == 0
    assert "PASS" in capsys.readouterr().out
    wrong = "a green square" if "square" not in caption else "a green circle"
    assert main(["world", "score", str(path), "--prompt", wrong]) == 1
    assert "FAIL" in capsys.readouterr().out


# --- 3. samplers as users name them; --from a PNG --------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    from t2ikit.models.registry import shipped_model_path
    from t2ikit.pipeline import T2IPipeline

    return T2IPipeline.from_folder(shipped_model_path())


def test_every_sampler_runs_on_the_shipped_model_by_its_a1111_name(shipped):
    from t2ikit.diffusion.samplers import SAMPLERS, check_sampler

    assert check_sampler("DPM++ 2M Karras") == check_sampler("dpm++ 2m karras") == "dpmpp_2m_karras"
    assert check_sampler(" Euler A ") == "euler_a" and check_sampler("uniPC") == "unipc"
    images = {}
    for key, (_, _, display) in SAMPLERS.items():
        if key == "heun":  # its second-order step from this schedule's sigma 20291 draws noise: refused
            with pytest.raises(ValueError, match="cannot sample this model's noise schedule"):
                shipped.generate("a red circle", steps=4, sampler=display.upper(), relation_guidance=0)
            continue
        result = shipped.generate("a red circle", steps=4, seed=7, n=2, size=(16, 16), sampler=display.upper(),
                                  relation_guidance=0)
        images[key] = np.stack([np.asarray(im) for im in result])
        assert images[key].std() > 0, key
    assert set(SAMPLERS) >= {"ddim", "dpmpp_2m", "dpmpp_2m_karras", "dpmpp_sde", "dpmpp_sde_karras", "euler_a",
                             "heun", "lms", "lms_karras", "unipc"}
    assert not np.array_equal(images["dpmpp_2m"], images["dpmpp_2m_karras"])  # the Karras sigmas act (at 2 steps
    # both schedules are the two end points; euler_a gives NaN at 3 on this model's schedule, a diffusers matter)
    assert not np.array_equal(images["lms"], images["lms_karras"])
    # stochastic samplers draw their step noise per image: image 1 of the batch is seed 8 alone, bitwise
    for key in ("euler_a", "dpmpp_sde", "dpmpp_2m_sde"):
        alone = shipped.generate("a red circle", steps=4, seed=8, size=(16, 16), sampler=key, relation_guidance=0)
        assert np.array_equal(images[key][1], np.asarray(alone[0])), key


def test_from_png_reruns_bitwise_and_flags_override(env, tmp_path, capsys):
    first = tmp_path / "a.png"
    assert main(["generate", "a (red:1.3) circle", *TINY, "--seed", "11", "--sampler", "Euler a", "--guidance", "3",
                 "--negative", "blue", "--excite", "0", "--out", str(first), "--quiet"]) == 0
    again = tmp_path / "b.png"
    assert main(["generate", "--from", str(first), "--out", str(again), "--quiet"]) == 0
    assert np.array_equal(pixels(first), pixels(again))
    assert read_parameters(first) == read_parameters(again)
    changed = tmp_path / "c.png"
    assert main(["generate", "--from", str(first), "--steps", "3", "--sampler", "DPM++ 2M Karras", "--out", str(changed),
                 "--quiet"]) == 0
    s = settings(changed)
    assert (s["Steps"], s["Sampler"], s["Seed"], s["CFG scale"]) == (3, "DPM++ 2M Karras", 11, 3.0)
    capsys.readouterr()


def test_from_an_automatic1111_png(env, tmp_path, capsys):
    a1111 = tmp_path / "a1111.png"
    info = PngInfo()
    info.add_text(PNG_KEY, "a red circle\nNegative prompt: blue\nSteps: 2, Sampler: DPM++ 2M, Schedule type: Karras, "
                           "CFG scale: 7, Seed: 1234, Size: 16x16, Model hash: 6ce0161689, Model: v1-5-pruned, "
                           "Version: v1.10.1")
    Image.new("RGB", (16, 16)).save(a1111, pnginfo=info)
    assert main(["generate", "--from", str(a1111), "--out", str(tmp_path / "x.png")]) == 2
    assert "made with model 'v1-5-pruned', which t2ikit does not know; pass --model" in capsys.readouterr().err
    out = tmp_path / "y.png"
    assert main(["generate", "--from", str(a1111), "--model", "tiny-sd", "--out", str(out), "--quiet"]) == 0
    parsed = parse_parameters(read_parameters(out))
    assert parsed["negative_prompt"] == "blue"
    assert {k: parsed["settings"][k] for k in ("Steps", "Sampler", "CFG scale", "Seed", "Size")} == {
        "Steps": 2, "Sampler": "DPM++ 2M Karras", "CFG scale": 7.0, "Seed": 1234, "Size": "16x16"}
    info = PngInfo()
    info.add_text(PNG_KEY, "a red circle\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 16x16, Clip skip: 2")
    Image.new("RGB", (16, 16)).save(a1111, pnginfo=info)
    assert main(["generate", "--from", str(a1111), "--model", "tiny-sd", "--out", str(tmp_path / "z.png")]) == 2
    assert "settings t2ikit does not have would change the image: Clip skip: 2" in capsys.readouterr().err


# --- 4. quiet libraries, -v through logging ---------------------------------------------------------------


def test_library_notes_are_silent_unless_verbose(env, tmp_path, monkeypatch, caplog):
    """diffusers' and transformers' loggers are at ERROR while a command loads its model (their "pip install
    accelerate" note is a WARNING), at INFO with -v; t2ikit's own log lines go through `logging`."""
    import logging

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from t2ikit.cli import models

    levels, load = [], models.load_pipeline

    def recording(*args, **kwargs):
        levels.append((diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()))
        return load(*args, **kwargs)

    monkeypatch.setattr(models, "load_pipeline", recording)
    before = diffusers_logging.get_verbosity()
    assert main(["generate", "a red circle", *TINY, "--seed", "1", "--out", str(tmp_path / "q.png"), "--quiet"]) == 0
    with caplog.at_level(logging.DEBUG):
        assert main(["-v", "generate", "a red circle", *TINY, "--seed", "1", "--out", str(tmp_path / "v.png"),
                     "--quiet"]) == 0
    assert levels == [(logging.ERROR, logging.ERROR), (logging.INFO, logging.INFO)]
    assert diffusers_logging.get_verbosity() == before  # the command's settings end with it
    assert any(r.name == "t2ikit.cli.generate" and r.levelno == logging.INFO for r in caplog.records)


def test_only_t2ikit_warnings_are_reported_by_default(capsys):
    from t2ikit.cli import logs
    from t2ikit.text.check import PromptWarning

    ours = warnings.WarningMessage("words not in the model's vocabulary", PromptWarning, "x.py", 1)
    theirs = warnings.WarningMessage("Should have tb<=t1", UserWarning, "/site-packages/torchsde/_brownian.py", 9)
    with logs.configured(0):
        logs.report_warnings([ours, theirs], "generate")
    assert capsys.readouterr().err.splitlines() == ["t2ikit generate: warning: words not in the model's vocabulary"]
    with logs.configured(1):
        logs.report_warnings([ours, theirs], "generate")
    assert "Should have tb<=t1" in capsys.readouterr().err


def test_from_reads_every_recorded_technique(tmp_path):
    """The settings GenerationSpec.settings writes map back to generate's arguments."""
    from t2ikit.cli.generate import arguments_from_png

    png = tmp_path / "p.png"
    info = PngInfo()
    info.add_text(PNG_KEY, 'a red circle\nNegative prompt: blue\nSteps: 20, Sampler: LMS Karras, CFG scale: 4.0, '
                           'Seed: 3, Size: 64x64, Weighting: compel, Relation guidance: 200.0, Attention: topk:8, '
                           'Sketch image: s.png, Sketch adapter: ad, Condition scales: text=1 sketch=0.5, '
                           'Regions: "0,0,32,64:a red circle; 32,0,64,64:a blue square", Region mode: noise, '
                           'Bootstrap: 0.2, Background: "1,1,1", Guidance mode: nested, Model: shapes-v6b')
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)
    a = arguments_from_png(png)
    assert (a["prompt"], a["negative"], a["sampler"], a["steps"], a["seed"], a["size"]) == (
        "a red circle", "blue", "lms_karras", 20, 3, "64x64")
    assert (a["weighting"], a["relation_guidance"], a["attention"], a["sketch"], a["adapter"], a["scale"]) == (
        "compel", 200.0, "topk:8", "s.png", ["sketch=ad"], ["text=1", "sketch=0.5"])
    assert a["region"] == ["0,0,32,64:a red circle", "32,0,64,64:a blue square"]
    assert (a["region_mode"], a["bootstrap"], a["background"], a["guidance_mode"], a["model"]) == (
        "noise", 0.2, "1,1,1", "nested", "shapes-v6b")
