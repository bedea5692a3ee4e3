"""The English prompt parser on prompts written by others: accuracy per construct, and its speed.

    python benchmarks/parser.py [--json] [--show-errors N]

Suites (files and sources: benchmarks/data/SOURCES.md):
  geneval      GenEval's 553 prompts with their metadata as ground truth: object classes and counts, the
               colour of each object (binding), the position relation, and the "a photo of" style prefix
  compbench    T2I-CompBench's spatial_val and 3d_spatial_val (598 prompts "a N1 <relation> a N2") and the
               templated part of color_val ("a C1 N1 and a C2 N2"): the ground truth is the template's slots;
               the relation phrases are mapped to relation names by the table below, written by hand
  hand         our hand labels of 45 T2I-CompBench complex_val sentences (t2i_compbench_complex_hand_labels.jsonl)
  heldout      our hand labels of 24 more (t2i_compbench_complex_heldout_labels.jsonl), labelled after the
               parser's development and scored once, never tuned on

Each construct is scored per prompt: the parse is right when it says exactly what the ground truth says
(nouns: the multiset of object nouns; counts: each object's count; binding: each object's set of colour
words; relations: the set of (subject noun, relation, object noun); style: the style phrases' texts).
Speed: the median of 5 passes over every prompt of the suites, one process. Last, the English parser on 1,000
Shapes World captions against the Shapes World caption grammar (the same objects, groups and relations).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from collections import Counter
from pathlib import Path

from t2ikit.text.english import EnglishParser
from t2ikit.text.parser import RELATION_NAMES, PromptParseError

DATA = Path(__file__).parent / "data"
# T2I-CompBench's template relation phrases -> relation names (by hand, from the files' phrases)
COMPBENCH_RELATIONS = {"on the left of": "left_of", "on the right of": "right_of", "on the top of": "above",
                       "on the bottom of": "below", "near": "near", "next to": "near", "on side of": "near",
                       "in front of": "in_front_of", "behind": "behind", "hidden by": "behind"}
GENEVAL_RELATIONS = {"left of": "left_of", "right of": "right_of", "above": "above", "below": "below"}
# the colour words of the ground truths (GenEval's colours, T2I-CompBench color_val's template colours)
COLOURS = frozenset("red orange yellow green blue purple pink brown black white gray grey silver gold".split())


def _colours(attributes) -> frozenset[str]:
    return frozenset(a for a in attributes if a in COLOURS)


def _predicted(parser, prompt: str) -> dict | None:
    try:
        return parser.parse(prompt).to_json()
    except PromptParseError:
        return None


def _truth_of_parse(d: dict | None) -> dict:
    """The parse in the ground truth's terms: nouns, counts, colours, relations by noun, style texts."""
    if d is None:
        return {"nouns": None, "counts": None, "colours": None, "relations": None, "style": None}
    first = {}
    for o in d["objects"]:
        first.setdefault(o["group"], o)
    groups = list(first.values())
    return {
        "nouns": Counter(o["noun"] for o in groups),
        "counts": sorted((o["noun"], o["count"]) for o in groups),
        "colours": sorted((o["noun"], sorted(_colours(o["attributes"]))) for o in groups),
        "relations": sorted((first[r["subject"]]["noun"], r["relation"], first[r["object"]]["noun"])
                            for r in d["relations"]),
        "style": [s["text"].lower() for s in d["style"]],
    }


def geneval_cases() -> list[tuple[str, dict]]:
    cases = []
    for line in (DATA / "geneval_evaluation_metadata.jsonl").read_text().splitlines():
        meta = json.loads(line)
        include = meta["include"]
        truth = {"nouns": Counter(o["class"] for o in include),
                 "counts": sorted((o["class"], o["count"]) for o in include),
                 "style": ["a photo of"]}
        if meta["tag"] in ("colors", "color_attr"):
            truth["colours"] = sorted((o["class"], [o["color"]]) for o in include)
        if meta["tag"] == "position":
            rel, other = include[1]["position"]
            truth["relations"] = [(include[1]["class"], GENEVAL_RELATIONS[rel], include[other]["class"])]
        cases.append((meta["prompt"], truth))
    return cases


def compbench_cases() -> list[tuple[str, dict]]:
    cases = []
    template = re.compile(r"^an? ([a-z]+) (" + "|".join(COMPBENCH_RELATIONS) + r") an? ([a-z]+)$")
    for name in ("spatial_val", "3d_spatial_val"):
        for prompt in (DATA / f"t2i_compbench_{name}.txt").read_text().splitlines():
            m = template.match(prompt.strip())
            if m is None:
                continue
            a, rel, b = m.groups()
            cases.append((prompt, {"nouns": Counter([a, b]), "counts": sorted([(a, 1), (b, 1)]),
                                   "relations": [(a, COMPBENCH_RELATIONS[rel], b)], "style": []}))
    colour = "|".join(sorted(COLOURS))
    template = re.compile(rf"^an? ({colour}) ([a-z]+(?: [a-z]+)?) and an? ({colour}) ([a-z]+(?: [a-z]+)?)$")
    for prompt in (DATA / "t2i_compbench_color_val.txt").read_text().splitlines():
        m = template.match(prompt.strip())
        if m is None:
            continue
        c1, n1, c2, n2 = m.groups()
        cases.append((prompt, {"nouns": Counter([n1, n2]), "counts": sorted([(n1, 1), (n2, 1)]),
                               "colours": sorted([(n1, [c1]), (n2, [c2])]), "relations": [], "style": []}))
    return cases


def hand_cases(name: str = "hand") -> list[tuple[str, dict]]:
    path = DATA / f"t2i_compbench_complex_{name}_labels.jsonl"
    cases = []
    for line in path.read_text().splitlines():
        label = json.loads(line)
        truth = {"nouns": Counter(label["nouns"]),
                 "relations": sorted(tuple(r) for r in label["relations"])}
        if "colours" in label:
            truth["colours"] = sorted((n, sorted(c)) for n, c in label["colours"].items())
        cases.append((label["prompt"], truth))
    return cases


def _colours_agree(pred: list | None, truth: list) -> bool:
    """Every object of the truth has exactly its colours (objects the truth leaves out are not judged)."""
    if pred is None:
        return False
    want = dict((n, c) for n, c in truth)
    got = {}
    for n, c in pred:
        got.setdefault(n, []).append(c)
    return all(n in got and sorted(c) in got[n] for n, c in want.items())


def score(parser, cases: list[tuple[str, dict]], errors: list) -> dict:
    right, total = Counter(), Counter()
    for prompt, truth in cases:
        pred = _truth_of_parse(_predicted(parser, prompt))
        for construct, want in truth.items():
            total[construct] += 1
            if construct == "colours":
                ok = _colours_agree(pred["colours"], want)
            elif construct == "style":
                ok = pred["style"] == want
            else:
                ok = pred[construct] == want
            right[construct] += ok
            if not ok:
                errors.append({"prompt": prompt, "construct": construct, "want": _plain(want),
                               "got": _plain(pred[construct])})
    return {c: {"right": right[c], "of": total[c], "accuracy": round(right[c] / total[c], 4)} for c in total}


def _plain(x):
    return dict(x) if isinstance(x, Counter) else x


def speed(parser, prompts: list[str], passes: int = 5) -> dict:
    times = []
    for _ in range(passes):
        t0 = time.perf_counter()
        for p in prompts:
            try:
                parser.parse(p)
            except PromptParseError:
                pass
        times.append(time.perf_counter() - t0)
    per_1000 = statistics.median(times) / len(prompts) * 1000
    return {"prompts": len(prompts), "seconds_per_1000_prompts": round(per_1000, 4)}


def shapes_world_agreement(parser, n: int = 1000) -> dict:
    """Captions of Shapes World scenes (its caption writer, scene seeds 0..n-1): how many the English parser
    reads into the same object spans, groups and relations as the Shapes World caption grammar."""
    import numpy as np

    from t2ikit.text.parser import get_parser
    from t2ikit.world.caption import write_caption
    from t2ikit.world.scene import sample_scene

    world = get_parser("shapes-world")
    same = 0
    for seed in range(n):
        caption = write_caption(sample_scene(0, seed).spec, np.random.default_rng(seed))
        w, e = world.parse(caption), _predicted(parser, caption)
        if e is not None:
            want = ([[o.start, o.end, o.group] for o in w.objects],
                    [(r.subject, RELATION_NAMES[r.relation], r.object) for r in w.relations])
            got = ([o["span"] + [o["group"]] for o in e["objects"]],
                   [(r["subject"], r["relation"], r["object"]) for r in e["relations"]])
            same += want == got
    return {"captions": n, "same": same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--show-errors", type=int, default=0, metavar="N", help="print the first N wrong parses")
    args = ap.parse_args()
    parser = EnglishParser()
    suites = {"geneval": geneval_cases(), "compbench": compbench_cases(), "hand": hand_cases(),
              "heldout": hand_cases("heldout")}
    errors: list = []
    result = {"suites": {name: {"prompts": len(cases), "constructs": score(parser, cases, errors)}
                         for name, cases in suites.items() if cases}}
    all_prompts = [p for cases in suites.values() for p, _ in cases]
    for name in ("spatial_val", "3d_spatial_val", "color_val", "complex_val"):
        all_prompts += (DATA / f"t2i_compbench_{name}.txt").read_text().splitlines()
    refused = [p for p in all_prompts if _predicted(parser, p) is None]
    result["refused"] = {"prompts": len(all_prompts), "refused": len(refused), "examples": refused[:5]}
    result["speed"] = speed(parser, all_prompts)
    result["speed"]["load_average_1min"] = round(os.getloadavg()[0], 2)
    result["shapes_world_agreement"] = shapes_world_agreement(parser)
    result["relation_names"] = sorted(RELATION_NAMES.values())
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for name, suite in result["suites"].items():
            print(f"{name} ({suite['prompts']} prompts)")
            for construct, s in suite["constructs"].items():
                print(f"  {construct:10s} {s['right']:4d} / {s['of']:4d}  {100 * s['accuracy']:5.1f}%")
        r = result["refused"]
        print(f"refused (PromptParseError): {r['refused']} of {r['prompts']} prompts")
        s = result["speed"]
        print(f"speed: {s['seconds_per_1000_prompts']:.3f} s per 1,000 prompts "
              f"(median of 5 passes over {s['prompts']}; load average {s['load_average_1min']})")
        a = result["shapes_world_agreement"]
        print(f"Shapes World captions read as the caption grammar reads them: {a['same']} of {a['captions']}")
    for e in errors[:args.show_errors]:
        print(json.dumps(e))


if __name__ == "__main__":
    main()
