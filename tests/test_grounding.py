"""Token grounding: caption tokens mapped to their noun phrase, silhouettes per group, the attention losses'
values on attention we know (the relation term and centroids are the core's, t2ikit.attention.grounding), the
batches that carry the targets, and the trainer that logs the terms."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from t2ikit.attention import grounding as core
from t2ikit.attention.grounding import GroundingCapture, group_centroids, relation_loss
from t2ikit.text.parser import RELATION_AXES
from t2ikit.train import grounding as train_grounding
from t2ikit.train.config import load_config
from t2ikit.train.data import ShapesBatches
from t2ikit.train.grounding import MAX_GROUPS, caption_token_groups, grounding_loss
from t2ikit.train.trainer import Trainer, build_tokenizer
from t2ikit.world.caption import parse_caption, write_caption
from t2ikit.world.render import group_silhouettes, render_rgb
from t2ikit.world.scene import RELATION_AXES as SCENE_RELATION_AXES
from t2ikit.world.scene import Group, Relation, Spec, relation_rows, sample_scene, scene_rng

sys.path.insert(0, str(Path(__file__).parent))
from test_train_dynamics import SHORT, _train_records, dyn_config  # noqa: E402


def test_tokens_of_each_noun_phrase_name_its_group():
    tok = build_tokenizer(48)
    caption = "three red circles to the left of a large blue square, drawn in outline"
    ids = tok(caption).input_ids
    words = [t.replace("</w>", "") for t in tok.convert_ids_to_tokens(ids)]
    groups = caption_token_groups(caption, 48)
    named = {g: [w for w, gi in zip(words, groups) if gi == g] for g in (0, 1)}
    assert named == {0: ["three", "red", "circles"], 1: ["a", "large", "blue", "square"]}
    assert all(g == -1 for w, g in zip(words, groups) if w in ("to", "the", "left", "of", "drawn", "outline", ","))
    assert (groups[len(ids):] == -1).all()  # padding grounds nothing
    assert (caption_token_groups("", 48) == -1).all()  # caption dropout
    assert (caption_token_groups("a photo of something", 48) == -1).all()  # not a world caption


def test_world_captions_ground_every_group_exactly_where_the_tokenizer_puts_its_words():
    tok = build_tokenizer(48)
    for index in range(40):
        scene = sample_scene(11, index, category="complex" if index % 2 else None)
        caption = write_caption(scene.spec, scene_rng(5, index))
        groups = caption_token_groups(caption, 48)
        tokens = [t.replace("</w>", "") for t in tok.convert_ids_to_tokens(tok(caption).input_ids)]
        assert set(groups[groups >= 0].tolist()) == set(range(len(scene.spec.groups))), caption
        for g, spec_group in enumerate(scene.spec.groups):
            words = [w for w, gi in zip(tokens, groups) if gi == g]
            assert spec_group.colour in words, (caption, words)


def test_group_masks_are_the_silhouettes_of_each_groups_objects():
    for index in range(10):
        scene = sample_scene(3, index, category="counting")
        masks = group_silhouettes(scene, 64, MAX_GROUPS)
        assert masks.shape == (MAX_GROUPS, 64, 64)
        rgb = render_rgb(scene, 64)
        background = rgb[0, 0].copy()
        n = len(scene.spec.groups)
        assert masks[:n].reshape(n, -1).any(axis=1).all() and not masks[n:].any()
        drawn = np.abs(rgb - background).sum(-1) > 0.05
        covered = masks.any(axis=0).astype(bool)
        assert (drawn <= covered).all()  # every drawn pixel belongs to some group's silhouette
        assert drawn[covered].mean() > 0.9  # and silhouettes are drawn (filled scenes; occlusion aside)


def _probs(attention_on: np.ndarray, t: int = 4, heads: int = 2) -> torch.Tensor:
    """(1, heads, h*w, T): every pixel puts `attention_on[y, x]` on token 1, the rest on token 0."""
    a = torch.tensor(attention_on, dtype=torch.float32).flatten()
    p = torch.zeros(1, heads, a.numel(), t)
    p[..., 1] = a
    p[..., 0] = 1.0 - a
    return p


def test_grounding_loss_reads_where_the_token_attends():
    mask = np.zeros((1, MAX_GROUPS, 8, 8), dtype=np.uint8)
    mask[0, 0, :4, :4] = 1  # group 0: the top-left quarter
    groups = torch.tensor([[-1, 0, -1, -1]])
    masks = torch.from_numpy(mask)
    inside = np.zeros((8, 8))
    inside[:4, :4] = 1.0
    cases = {"inside": (inside, 0.0), "outside": (1.0 - inside, 1.0), "uniform": (np.full((8, 8), 0.5), 0.75)}
    for name, (attention, expected) in cases.items():
        loss = grounding_loss([((8, 8), _probs(attention))], groups, masks)
        assert float(loss) == pytest.approx(expected, abs=1e-6), name
    # a coarser layer sees the mask as covered fractions: the top-left 2x2 cells of 4x4 are fully inside
    coarse = np.zeros((4, 4))
    coarse[:2, :2] = 1.0
    assert float(grounding_loss([((4, 4), _probs(coarse))], groups, masks)) == pytest.approx(0.0, abs=1e-6)
    # nothing grounded (a dropped caption): zero, and still differentiable
    p = _probs(inside).requires_grad_(True)
    empty = grounding_loss([((8, 8), p)], torch.full((1, 4), -1), masks)
    empty.backward()
    assert float(empty.detach()) == 0.0 and p.grad is not None
    with pytest.raises(ValueError, match="no"):
        grounding_loss([], groups, masks)


def test_grounding_loss_gradient_moves_attention_into_the_object():
    mask = np.zeros((1, MAX_GROUPS, 8, 8), dtype=np.uint8)
    mask[0, 1, 4:, 4:] = 1
    logits = torch.zeros(1, 1, 64, 3, requires_grad=True)
    groups = torch.tensor([[-1, -1, 1]])
    opt = torch.optim.SGD([logits], lr=50.0)
    losses = []
    for _ in range(20):
        loss = grounding_loss([((8, 8), logits.softmax(-1))], groups, torch.from_numpy(mask))
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[0] == pytest.approx(0.75, abs=1e-6) and losses[-1] < 0.5 * losses[0]


def test_batches_carry_grounding_targets_that_follow_caption_dropout():
    tok = build_tokenizer(48)
    data = ShapesBatches(seed=4, batch_size=6, length=2, resolution=32, tokenizer=tok, caption_dropout=0.5,
                         grounding=True)
    item = data[1]
    assert item["group_masks"].shape == (6, MAX_GROUPS, 32, 32) and item["group_masks"].dtype == torch.uint8
    assert item["token_groups"].shape == item["input_ids"].shape
    plain = ShapesBatches(seed=4, batch_size=6, length=2, resolution=32, tokenizer=tok, caption_dropout=0.5)[1]
    assert torch.equal(plain["pixels"], item["pixels"]) and plain["captions"] == item["captions"]
    dropped = (item["input_ids"][:, 1] == tok.eos_token_id)  # "" tokenizes to start, end
    assert dropped.any() and (~dropped).any()
    assert (item["token_groups"][dropped] == -1).all()
    assert (item["token_groups"][~dropped] >= 0).any(dim=1).all()
    with pytest.raises(ValueError, match="tokenizer"):
        ShapesBatches(seed=4, batch_size=2, length=1, grounding=True)


def test_trainer_logs_the_grounding_term(tmp_path):
    torch.set_num_threads(1)
    seen = []

    def evaluation_processors(trainer, step):  # what an evaluation during the stage generates with
        seen.append({type(p).__name__ for p in trainer.pipeline().unet.attn_processors.values()})
        return {}

    config = load_config(dyn_config(tmp_path, SHORT + "\n[eval] every = 2", losses={"grounding": 0.1}))
    trainer = Trainer(config, out=tmp_path / "run", eval_hooks=(evaluation_processors,))
    trainer.run()
    assert seen and all("HookedAttnProcessor" not in names for names in seen)
    records = _train_records(tmp_path / "run")
    assert len(records) == 3 and trainer.multiloss.names == ["reconstruction", "grounding"]
    for r in records:
        assert 0.0 < r["loss_grounding"] <= 1.0 and r["weight_grounding"] == pytest.approx(0.1)
        assert r["loss"] == pytest.approx(r["loss_reconstruction"] + 0.1 * r["loss_grounding"], rel=1e-5)
    # the hooked processors are gone after training: the UNet's attention is diffusers' own again
    assert not any(type(p).__name__ == "HookedAttnProcessor" for p in trainer.unet.attn_processors.values())


def test_negative_grounding_weight_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="grounding must be >= 0|must be >= 0"):
        load_config(dyn_config(tmp_path, SHORT, losses={"grounding": -0.5}))



def test_relation_loss_reads_where_each_groups_words_attend():
    # group 0 ("A") attends to the left half, group 1 ("B") to the right half of an 8x8 grid
    left, right = np.zeros((8, 8)), np.zeros((8, 8))
    left[:, :4], right[:, 4:] = 1.0, 1.0
    probs = torch.zeros(1, 2, 64, 4)
    probs[..., 1] = torch.tensor(left).flatten() / 2
    probs[..., 2] = torch.tensor(right).flatten() / 2
    probs[..., 0] = 1.0 - probs[..., 1] - probs[..., 2]
    groups = torch.tensor([[-1, 0, 1, -1]])

    def loss(relation: str, margin: float = 0.1) -> float:
        axis, sign = RELATION_AXES[relation]
        rows = torch.tensor([[[0, 1, axis, sign], [-1, -1, -1, -1]]])
        return float(relation_loss([((8, 8), probs)], groups, rows, margin))

    # centroids x: A 0.25, B 0.75 -> "A left of B" holds by 0.5, "A right of B" misses by 0.5 + margin
    assert loss("left of") == pytest.approx(0.0) and loss("right of") == pytest.approx(0.6)
    assert loss("left of", margin=0.6) == pytest.approx(0.1)
    assert loss("above") == pytest.approx(0.1) and loss("below") == pytest.approx(0.1)  # same row: 0 offset
    c, has = group_centroids(probs, (8, 8), groups)  # as many groups as token_groups names
    assert c[0].flatten().tolist() == pytest.approx([0.25, 0.5, 0.75, 0.5]) and has[0].tolist() == [True, True]
    c4, has4 = group_centroids(probs, (8, 8), groups, MAX_GROUPS)
    assert torch.equal(c4[:, :2], c) and has4[0].tolist() == [True, True, False, False]
    # a relation whose group has no grounded token (a dropped caption) is skipped
    none = relation_loss([((8, 8), probs)], torch.full((1, 4), -1), torch.tensor([[[0, 1, 0, 1]]]))
    assert float(none.detach()) == 0.0


def test_relation_loss_gradient_separates_the_objects_along_the_axis():
    logits = torch.zeros(1, 1, 64, 3, requires_grad=True)  # uniform attention: both centroids at the centre
    groups = torch.tensor([[-1, 0, 1]])
    rows = torch.tensor([[scene_relations_row("above")]])
    opt = torch.optim.SGD([logits], lr=20.0)
    for _ in range(30):
        loss = relation_loss([((8, 8), logits.softmax(-1))], groups, rows, 0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    c, _ = group_centroids(logits.softmax(-1).detach(), (8, 8), groups)
    assert float(c[0, 1, 1] - c[0, 0, 1]) >= 0.19  # B (object) now lies below A (subject): A above B
    assert abs(float(c[0, 1, 0] - c[0, 0, 0])) < 1e-4  # and nothing moved across the axis


def scene_relations_row(relation: str) -> list[int]:
    spec = Spec((Group("red", "circle"), Group("blue", "square")), (Relation(0, relation, 1),))
    return relation_rows(spec)[0].tolist()


def test_batches_carry_the_scenes_relations():
    tok = build_tokenizer(48)
    data = ShapesBatches(seed=2, batch_size=8, length=1, resolution=32, tokenizer=tok, grounding=True,
                         make_batch=functools.partial(_spatial_batch))
    item = data[0]
    rel = item["relations"]
    assert rel.shape == (8, 3, 4) and (rel[:, 0, 0] >= 0).all() and (rel[:, 1:] == -1).all()
    for k in range(8):
        spec = parse_caption(item["captions"][k])
        s, o, axis, sign = rel[k, 0].tolist()
        assert (s, o) == (spec.relations[0].subject, spec.relations[0].object)
        assert (axis, sign) == RELATION_AXES[spec.relations[0].relation]


def _spatial_batch(seed, index, batch_size, resolution, split, **kwargs):
    from t2ikit.world.dataset import make_batch

    return make_batch(seed, index, batch_size, resolution=resolution, split=split, category="spatial", **kwargs)


def test_trainer_logs_the_relation_term(tmp_path):
    torch.set_num_threads(1)
    losses = {"relation": 0.5, "relation_margin": 0.2}
    trainer = Trainer(load_config(dyn_config(tmp_path, SHORT, losses=losses)), out=tmp_path / "run")
    trainer.run()
    records = _train_records(tmp_path / "run")
    assert trainer.multiloss.names == ["reconstruction", "relation"]
    assert all(r["loss_relation"] >= 0.0 and r["weight_relation"] == pytest.approx(0.5) for r in records)
    assert any(r["loss_relation"] > 0.0 for r in records)  # uniform-ish attention misses a 0.2 margin
    with pytest.raises(ValueError, match="relation_margin"):
        load_config(dyn_config(tmp_path, SHORT, losses={"relation": 0.1, "relation_margin": 1.5}))


def test_training_uses_the_cores_capture_and_relation_term():
    assert train_grounding.GroundingCapture is GroundingCapture and train_grounding.relation_loss is core.relation_loss
    assert SCENE_RELATION_AXES == RELATION_AXES  # the world's rows and the parser's agree
