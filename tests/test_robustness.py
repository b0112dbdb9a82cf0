"""``robustness:`` in a dataset entry: prompt variants (templates, option shuffles, typos, whitespace, case,
punctuation) run as datasets of their own on the same questions, and the report of how scores and verdicts move.
The perturbations as pure functions; runs with the ``fake`` backend (kernel plumbing: its scores mean nothing);
SmolLM2-135M and Gemma-3-270M on small CMMLU and ARC subsets (slow)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from luopan.cli import main
from luopan.config import load_run
from luopan.errors import ConfigError
from luopan.pipeline import Run
from luopan.plugins import load_registry
from luopan.robustness import (
    VariantSpec,
    add_typos,
    change_case,
    change_whitespace,
    perturb_sample,
    perturb_text,
    shuffle_order,
    swap_punctuation,
    typo_positions,
)
from luopan.types import Sample

TEXT = ("Which statement best explains why photosynthesis is the foundation of most food webs? "
        "以下关于光合作用的说法，哪一项是正确的？ Sunlight is the source of energy for nearly all ecosystems.")


#: another prompt template for CMMLU (the options in brackets on one line)
CMMLU_TEMPLATE = "question: '{{ question }} (A) {{ A }} (B) {{ B }} (C) {{ C }} (D) {{ D }} 正确答案是：'"


def _distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


# ---------------------------------------------------------------- the perturbations


def test_a_variant_is_a_deterministic_function_of_item_settings_and_seed():
    for settings in ({"typos": 0.1}, {"whitespace": 0.5}, {"case": "random"}):
        v0, v0b, v1 = VariantSpec(**settings), VariantSpec(**settings), VariantSpec(**settings, seed=1)
        a = perturb_text(TEXT, v0, "q/1")
        assert a == perturb_text(TEXT, v0b, "q/1")  # same seed, same text
        assert a != TEXT
        assert a != perturb_text(TEXT, v1, "q/1"), settings  # another seed, another text
        assert a != perturb_text(TEXT, v0, "q/2"), settings  # another item, another text
    assert shuffle_order(0, "q/1", 4) == shuffle_order(0, "q/1", 4)
    assert len({tuple(shuffle_order(s, "q/1", 4)) for s in range(20)}) > 3
    assert all(shuffle_order(s, "q/1", 4) != [0, 1, 2, 3] for s in range(50))  # never the original order


def test_typos_respect_the_rate_and_spare_labels_and_numbers():
    positions = typo_positions(TEXT)
    assert positions and all(TEXT[i].isalpha() for i in positions)
    assert typo_positions("A. 3.14 B. an ox") == []  # labels, numbers and short words are never hit
    assert add_typos(TEXT, 0.0, random.Random(0)) == TEXT
    for rate in (0.02, 0.1, 0.3):
        k = round(rate * len(positions))
        for seed in range(5):
            d = _distance(TEXT, add_typos(TEXT, rate, random.Random(seed)))
            # each chosen character is dropped, doubled, replaced (one edit) or swapped with the next (two)
            assert k // 2 <= d <= 2 * k, (rate, seed, d, k)
    low = sum(_distance(TEXT, add_typos(TEXT, 0.02, random.Random(s))) for s in range(5))
    high = sum(_distance(TEXT, add_typos(TEXT, 0.3, random.Random(s))) for s in range(5))
    assert high > 3 * low


def test_punctuation_swaps_both_ways():
    assert swap_punctuation("你好，世界。答案：（A）？！；", "ascii") == "你好,世界.答案:(A)?!;"
    assert swap_punctuation("Hello, world. Answer: (A)? yes! a; b", "fullwidth") == \
        "Hello， world。 Answer： （A）？ yes！ a； b"
    assert swap_punctuation("a，b, c", "swap") == "a,b， c"
    round_trip = "以下说法，哪一项是正确的？答案："
    assert swap_punctuation(swap_punctuation(round_trip, "ascii"), "fullwidth") == round_trip
    # decimal points, digit groups and option labels stay ASCII
    assert swap_punctuation("pi is 3.14, about 1,000.\nA. yes", "fullwidth") == "pi is 3.14， about 1,000。\nA. yes"


def test_whitespace_and_case_changes():
    text = "The answer is one of these options A B C D"
    wide = change_whitespace(text, 1.0, random.Random(0))
    assert wide != text and wide.split() == text.split()
    assert change_whitespace(text, 0.0, random.Random(0)) == text
    assert change_case(text, "upper", random.Random(0)) == "THE ANSWER IS ONE OF THESE OPTIONS A B C D"
    assert change_case(text, "lower", random.Random(0)) == "the answer is one of these options A B C D"
    assert change_case("Answer A", "swap", random.Random(0)) == "aNSWER A"  # one-letter labels kept
    assert change_case(text, "random", random.Random(0)).lower() == text.lower()


def test_only_the_question_is_perturbed_not_the_few_shot_block_nor_the_choices():
    prefix = "Example question, with an answer.\nAnswer: A\n\n"
    sample = Sample(id="q/1", subset="q", prompt=prefix + "Which option, then?\nAnswer:", target=1,
                    choices=[" A", " B"], prefix=prefix, chat_prompt="Which option, then?",
                    messages=[{"role": "user", "content": "Example question, with an answer."},
                              {"role": "assistant", "content": "A"},
                              {"role": "user", "content": "Which option, then?"}])
    out = perturb_sample(sample, VariantSpec(name="p", punctuation="fullwidth"))
    assert out.prompt == prefix + "Which option， then？\nAnswer："
    assert out.prefix == prefix and out.choices == [" A", " B"] and out.target == 1
    assert out.chat_prompt == "Which option， then？"
    assert [m["content"] for m in out.messages] == ["Example question, with an answer.", "A", "Which option， then？"]
    assert sample.messages[-1]["content"] == "Which option, then?"  # the original is left as it was
    assert out.meta["variant"] == "p"


# ---------------------------------------------------------------- configuration


def _write(tmp_path: Path, variants: str, dataset: str = "{preset: cmmlu, subsets: [anatomy, agronomy], "
           "limit_per_subset: 5", model: str = "{preset: fake}", name: str = "r") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"run: {{output_dir: {tmp_path / 'out'}, name: {name}}}\nmodels:\n  - {model}\n"
                 f"datasets:\n  - {dataset}, robustness: {variants}}}\n", encoding="utf-8")
    return p


def _run(cfg: Path) -> Run:
    reg = load_registry()
    return Run(load_run(str(cfg), reg), reg, progress=False)


@pytest.mark.parametrize(("variants", "message"), [
    ("[{typo: 0.1}]", r"robustness\[0\]\.typo: unknown key 'typo' \(did you mean 'typos'\?\)"),
    ("[{seed: 3}]", r"robustness\[0\]: .*a variant must change something"),
    ("[{typos: 0.9}]", r"robustness\[0\]\.typos: .*less than or equal to 0.5"),
    ("[{case: title}]", r"robustness\[0\]\.case: "),
    ("[{typos: 0.1, name: a}, {case: upper, name: a}]", r"robustness\[1\]: two variants are named 'a'"),
    ("[{typos: 0.1, name: original}]", r"robustness\[0\]: .*not 'original'"),
    ("[{params: {questoin: 'x'}}]", r"robustness\[0\]\.params\.questoin: dataset 'mcq_csv': unknown key"),
])
def test_a_wrong_variant_is_one_line_naming_the_key(tmp_path, variants, message):
    with pytest.raises(ConfigError, match=message) as err:
        _run(_write(tmp_path, variants))
    assert "\n" not in str(err.value)


def test_a_shuffle_needs_a_loader_that_reorders_options(tmp_path):
    cfg = _write(tmp_path, "[{shuffle: true}]", dataset="{preset: demo_mcq")
    with pytest.raises(ConfigError, match=r"dataset 'demo_mcq~shuffle': loader 'demo' cannot reorder"):
        _run(cfg).plan()


# ---------------------------------------------------------------- planning: same questions, perturbed


def test_variants_ask_the_same_questions_and_a_shuffle_keeps_the_gold_answer(tmp_path):
    cfg = _write(tmp_path, f"[{{shuffle: true}}, {{typos: 0.1}}, {{name: tpl, params: {{{CMMLU_TEMPLATE}}}}}]")
    run = _run(cfg)
    units = {u.dataset.label: u for u in run.plan()}
    assert list(units) == ["cmmlu", "cmmlu~shuffle", "cmmlu~typos0.1", "cmmlu~tpl"]
    base = units["cmmlu"].samples
    for label, u in units.items():
        assert [s.id for s in u.samples] == [s.id for s in base], label
    moved = 0
    for a, b in zip(base, units["cmmlu~shuffle"].samples):
        assert b.meta["options"][b.target] == a.meta["options"][a.target]  # the gold answer follows its text
        assert sorted(b.meta["options"]) == sorted(a.meta["options"])
        assert b.meta["answer"] == b.meta["labels"][b.target]
        moved += b.meta["options"] != a.meta["options"]
    assert moved == len(base)
    for a, b in zip(base, units["cmmlu~typos0.1"].samples):
        assert b.prompt != a.prompt and b.prompt.startswith(b.prefix) and b.prefix == a.prefix
        assert b.choices == a.choices and b.target == a.target
    assert all(" (A) " in s.prompt and s.prompt.endswith(" 正确答案是：") for s in units["cmmlu~tpl"].samples)
    keys = [set(u.keys) for u in units.values()]
    assert all(not (keys[0] & k) for k in keys[1:])  # each variant's requests are its own


def test_a_shuffle_of_arc_keeps_the_gold_choice(tmp_path):
    cfg = _write(tmp_path, "[{shuffle: true}]", dataset="{preset: arc_easy, limit: 6")
    base, shuffled = (u.samples for u in _run(cfg).plan())
    for a, b in zip(base, shuffled):
        assert b.choices[b.target] == a.choices[a.target] and sorted(b.choices) == sorted(a.choices)


# ---------------------------------------------------------------- a run with the fake backend


def _calls(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_run_reports_per_variant_scores_and_flips_and_a_rerun_reuses_the_cache(tmp_path):
    log = tmp_path / "calls.log"
    variants = ("[{name: typos, typos: 0.1, seed: 1}, {shuffle: true}, {punctuation: ascii}, "
                f"{{case: upper, whitespace: 0.5}}, {{name: tpl, params: {{{CMMLU_TEMPLATE}}}}}]")
    cfg = _write(tmp_path, variants, model=f"{{preset: fake, params: {{calls_log: {log}}}}}")
    assert main(["run", str(cfg), "--no-progress"]) == 0
    first = _calls(log)
    assert first == 6 * 10 * 4  # six datasets (the original and five variants) x 10 questions x 4 options
    out = tmp_path / "out" / "r"
    report = json.loads((out / "robustness.json").read_text())
    entry = report["datasets"]["cmmlu"]
    assert list(entry["variants"]) == ["original", "typos", "shuffle", "punct-ascii", "whitespace0.5_case-upper",
                                       "tpl"]
    m = entry["models"]["fake"]
    assert set(m["variants"]) == set(entry["variants"])
    for name, v in m["variants"].items():
        assert v["n"] == 10 and 0.0 <= v["score"] <= 1.0
        if name != "original":
            assert v["compared"] == 10 and v["flips"] == v["to_wrong"] + v["to_right"]
            assert v["delta"] == pytest.approx(v["score"] - m["variants"]["original"]["score"])
    scores = [v["score"] for v in m["variants"].values()]
    assert m["spread"] == pytest.approx(max(scores) - min(scores)) and m["std"] >= 0
    assert sum(v.get("flips", 0) for v in m["variants"].values()) > 0  # the fake model's answers move
    assert m["unstable"] >= max(v.get("flips", 0) for v in m["variants"].values())
    # the variants' own predictions; the default summary table keeps to the original dataset
    assert (out / "predictions" / "fake" / "cmmlu_typos.jsonl").is_file()
    summary = (out / "summary.md").read_text()
    assert "### robustness: score per prompt variant" in summary and "### robustness: spread per model" in summary
    assert "| cmmlu~" not in summary
    assert "| cmmlu | fake | shuffle | 10 |" in summary
    tables = [t["title"] for t in json.loads((out / "summary.json").read_text())["tables"]]
    assert tables[-2:] == ["robustness: score per prompt variant", "robustness: spread per model"]
    # a rerun asks the backend nothing and counts the same flips
    assert main(["run", str(cfg), "--no-progress"]) == 0
    assert _calls(log) == first
    assert json.loads((out / "robustness.json").read_text()) == report


def test_circular_accuracy_joins_the_report(tmp_path):
    cfg = _write(tmp_path, "[{typos: 0.1}]", dataset="{preset: cmmlu, subsets: [anatomy], limit: 4, "
                 "params: {circular: true}")
    assert main(["run", str(cfg), "--no-progress"]) == 0
    out = tmp_path / "out" / "r"
    m = json.loads((out / "robustness.json").read_text())["datasets"]["cmmlu"]["models"]["fake"]
    result = json.loads((out / "results" / "fake" / "cmmlu.json").read_text())
    assert m["circular_accuracy"] == pytest.approx(result["subsets"][0]["metrics"]["circular_accuracy"])
    assert m["variants"]["original"]["n"] == 4  # questions, not rotations
    assert "| cmmlu | fake | circular (every rotation right) | 4 |" in (out / "summary.md").read_text()


def test_a_failed_variant_is_reported_missing_and_the_others_still_compared(tmp_path):
    cfg = _write(tmp_path, f"[{{typos: 0.1}}, {{name: tpl, params: {{{CMMLU_TEMPLATE}}}}}]",
                 model="{preset: fake, params: {fail_if_prompt_contains: 正确答案是}}")
    run = _run(cfg)
    run.execute()
    report = json.loads((run.out / "robustness.json").read_text())
    m = report["datasets"]["cmmlu"]["models"]["fake"]
    assert m["missing"] == ["tpl"] and set(m["variants"]) == {"original", "typos0.1"}
    assert "| cmmlu | fake | tpl | 0 | - |" in (run.out / "summary.md").read_text()


# ---------------------------------------------------------------- real models (slow)

REAL_MODELS = "  - {preset: smollm2-135m-instruct}\n  - {preset: gemma3-270m}\n"
REAL_VARIANTS = ("[{shuffle: true}, {typos: 0.05, seed: 1}, {punctuation: swap}, {case: upper, whitespace: 0.3}, "
                 "{name: tpl, params: {%s}}]")


@pytest.mark.slow
def test_smollm2_and_gemma3_robustness_on_cmmlu_and_arc(tmp_path):
    run = tmp_path / "real.yaml"
    cmmlu = REAL_VARIANTS % CMMLU_TEMPLATE
    arc = REAL_VARIANTS % "prompt: 'Q: {{question.stem}} A:'"
    run.write_text(
        f"run: {{output_dir: {tmp_path / 'out'}, name: real}}\nmodels:\n{REAL_MODELS}datasets:\n"
        f"  - {{preset: cmmlu, subsets: [anatomy, agronomy], limit_per_subset: 5, mode: likelihood, "
        f"robustness: {cmmlu}}}\n"
        f"  - {{preset: arc_easy, limit: 10, mode: likelihood, robustness: {arc}}}\n", encoding="utf-8")
    assert main(["run", str(run), "--no-progress"]) == 0
    out = tmp_path / "out" / "real"
    report = json.loads((out / "robustness.json").read_text())
    for ds in ("cmmlu", "arc_easy"):
        for model in ("smollm2-135m-instruct", "gemma3-270m"):
            m = report["datasets"][ds]["models"][model]
            assert len(m["variants"]) == 6 and all(v["n"] == 10 for v in m["variants"].values()), (ds, model)
            assert m["spread"] >= 0 and "unstable_share" in m
    summary = (out / "summary.md").read_text()
    for model in ("smollm2-135m-instruct", "gemma3-270m"):
        assert f"| cmmlu | {model} | shuffle | 10 |" in summary and f"| arc_easy | {model} | tpl | 10 |" in summary
    # ARC scores the answer texts: a shuffle asks the same requests (same likelihoods, no flips)
    for model in ("smollm2-135m-instruct", "gemma3-270m"):
        assert report["datasets"]["arc_easy"]["models"][model]["variants"]["shuffle"]["flips"] == 0
    # a rerun answers every request from the cache and counts the same flips
    runner = _run(run)
    units = runner.plan()
    assert all(u.cached == len(u.requests) for u in units)
    runner.execute()
    assert json.loads((out / "robustness.json").read_text()) == report
