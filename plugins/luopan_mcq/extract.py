"""Which option did a model choose? Reading the answer label out of generated text.

A reply is first read from its last self-correction backwards: a correction marker ("Wait, let me
reconsider", "Correction:", "I made an error above", "不对", "更正：", "之前的分析有误") overrides what came before
it, so the text after the latest marker that names an answer decides, and there weaker statements count too ("不对，
应该是B", "no, it should be B"). A tie ("both A and C are correct", "A和C都对", "无法确定是A还是C") that no single
answer follows means no answer: None. Otherwise tiers, the first that finds something wins:

1. explicit answer statements ("答案是 B", "选C", "The answer is **B**", "\\boxed{B}"): the *last* one, since
   reasoning mentions options before the final answer;
2. "B 正确" / "B is correct": the last one;
3. a reply that is, or starts with, one label ("B", "(B)", "B. 北京", "b)");
4. the only label mentioned as a standalone token ("A" and "I" followed by a lowercase word are English
   words, not options);
5. the only option whose text the reply contains.

Labels are matched as whole tokens, never inside a word: "Let's think" holds no "L" (OpenCompass
issue #1933). Lowercase labels count only where no English word follows ("b)", "answer: b"), so the article
in "the answer is a ..." is not option A. Full-width letters and punctuation are folded by NFKC first. A
reasoning model's thinking (``<think>...</think>``) is never seen here: the kernel cuts it off every generated
answer before any evaluator reads it (a model's ``reasoning:`` rule, :mod:`luopan.reasoning`).

The patterns live in tuples, one regex per element, each with exactly one ``<L>`` placeholder (the label
group): a missing comma would silently concatenate two of them (OpenCompass PR #2600), and the tests check
the count and the placeholder of every element. In tie patterns each ``<L>`` stands for any label.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from functools import lru_cache

LABEL = "<L>"  # replaced by the label group, (?P<ans>A|B|...), bounded so it never sits inside a word
_OPEN = r"[(\[【「]?\s*"  # an optional opening bracket before a label (after NFKC: "（" is "(")

#: explicit answer statements (tier 1)
ANSWER_PATTERNS: tuple[str, ...] = (
    # 答案是 B / 正确答案：B。/ 答案应该是C / 答案为选项 B / 正确的选项是 D
    r"(?:答案|正确选项|正確選項|正确的选项|正確的選項)\s*(?:应该|應該|应当|应|應|就|也|即|一定|当然|还|還|仍然|仍|依然)?\s*"
    r"(?:是|为|為|选|選|选择|選擇)?\s*(?:选项|選項)?\s*:?\s*" + _OPEN + LABEL,
    # 选B / 应该选择C项 / 故选：B (but "选项B" is a noun: option B, not a choice)
    r"(?:选择|選擇|选|選)(?!项|項)\s*(?:选项|選項|答案)?\s*:?\s*" + _OPEN + LABEL,
    # The answer is B / Answer: (B) / the correct answer would be option C / answer to this question is D /
    # the answer is still B
    r"\banswer\s*(?:to\s+(?:this|the)\s+question\s*)?(?:is|would\s+be|should\s+be|must\s+be|will\s+be|=)?\s*:?\s*"
    r"(?:(?:actually|still|indeed|definitely|clearly)\s+)?(?:option|choice|letter)?\s*:?\s*" + _OPEN + LABEL,
    # the correct option is B / best choice: C
    r"\b(?:correct|right|best|final)\s+(?:option|choice)\s*(?:is|would\s+be|should\s+be|=)?\s*:?\s*"
    + _OPEN
    + LABEL,
    # I choose B / I'd go with C / we should select option D
    r"\b(?:choose|chose|pick|select|go\s+with|opt\s+for)\s+(?:option\s+|choice\s+|answer\s+)?"
    + _OPEN
    + LABEL,
    # \boxed{B} / \boxed{\text{B}}
    r"\\boxed\{\s*(?:\\text(?:bf)?\{)?\s*" + LABEL,
    # the answer is not A, it is D / not B but C / not A; rather, D
    r"\bnot\s+(?:option\s+)?\(?[A-Za-z0-9]\)?\s*[,;]?\s*(?:but|rather|instead|it's|it\s+is)\s*,?\s*"
    r"(?:(?:actually|rather)\s*,?\s*)?(?:option\s+)?" + _OPEN + LABEL,
    # 答案不是A，而是D
    r"不是\s*(?:选项|選項)?\s*[(\[【「]?\s*[A-Za-z0-9]\s*[)\]】」]?\s*(?:项|項)?\s*[,;]?\s*而是\s*(?:选项|選項)?\s*"
    + _OPEN
    + LABEL,
)

#: "this option is correct" statements (tier 2): weaker, explanations call statements correct too
CORRECT_PATTERNS: tuple[str, ...] = (
    # B 正确 / B项正确 / B选项是正确的 / C符合题意 / D 当选
    LABEL
    + r"\s*[)\]】」]?\s*(?:项|項|选项|選項)?\s*(?:是|为)?\s*(?:正确|正確|对的|對的|符合题意|符合題意|当选|當選)",
    # B is correct / option C is the right answer
    LABEL + r"\s*\)?\s+(?:is|would\s+be)\s+(?:the\s+)?(?:correct|right|best)\b",
)

#: a self-correction starts right after one of these, where a clause starts ("A项不对" judges an option, "经济等等"
#: is "and so on"); the reply is NFKC-folded first: "，" is ",", "：" is ":"
CORRECTION_MARKERS: tuple[str, ...] = (
    r"(?:(?:but|oh|hmm|ah)\s*,?\s*)?(?:wait|hold\s+on)\b|oops\b|no\s*[,!—–]|actually\s*,|on\s+second\s+thought\b",
    r"correction\s*:|my\s+(?:mistake|bad)\b|scratch\s+that\b|I\s+misread\b|I\s+apologi[sz]e\b|apologies\b",
    # I made an error above / I've made a mistake / I was wrong / my previous answer was incorrect
    r"I(?:'ve|\s+have)?\s+made\s+(?:a|an)\s+(?:\w+\s+)?(?:mistake|error)\b|I\s+was\s+wrong\b",
    r"my\s+(?:previous|earlier|initial|first|above)\s+(?:answer|response|reasoning|analysis|calculation)\s+"
    r"(?:was|is)\s+(?:incorrect|wrong|mistaken)\b",
    # let me reconsider / let's double-check / upon further reflection
    r"(?:let\s+me|let's|I'll|I\s+will|I\s+need\s+to|I\s+should)\s+(?:re-?consider|re-?check|re-?evaluate|"
    r"re-?examine|re-?think|double-check|check\s+again|think\s+again)\b|upon\s+(?:further\s+|closer\s+)?"
    r"(?:reflection|review|consideration|inspection|examination)\b",
    # 不对，/ 不对不对 / 等等，/ 更正：/ 抱歉
    r"不[对對](?:不[对對])?\s*[,.!。…;]|等(?:等|一下)\s*[,.!。…]|稍等|更正|纠正|糾正|订正|訂正|抱歉|不好意思",
    # 我再检查一下 / 让我重新考虑 / 我算错了
    r"(?:我|让我|讓我)?(?:再(?:检查|檢查|核对|核對|确认|確認|想想|想一想|审视|審視)|"
    r"重新(?:检查|檢查|考虑|考慮|思考|分析|计算|計算|审视|審視))(?:一下|一遍)?",
    r"我?(?:刚才|剛才|之前)?(?:说|說|搞|弄|看|算|想|选|選)[错錯]了",
    # 之前的分析有误 / 上面的计算错了
    r"我?(?:之前|前面|上面|刚才|剛才|先前)的?(?:分析|回答|答案|推理|计算|計算|判断|判斷|结论|結論|说法|說法)"
    r"[^。\n]{0,6}?(?:有误|有誤|错|錯|不对|不對|不正确|不正確)",
)

#: after a correction marker, weaker statements name the corrected answer too
REVISION_PATTERNS: tuple[str, ...] = (
    # 不对，是B。/ No, B. / Wait, it's C.  (right after the marker, and the label ends the clause)
    r"^[\s,.。:;!—–-]*(?:(?:it|that)(?:'s|\s+is)\s+|(?:应该|應該|应|應)?(?:是|选|選)\s*)?(?:option\s+|选项|選項)?"
    + _OPEN
    + LABEL
    + r"\s*[)\]】」]?\s*(?:[.。,;!\n]|$)",
    # 应该是B / 应选C / 其实是D / 实际上是A
    r"(?:应该|應該|应当|應當|应|應|其实|其實|实际上|實際上|才)\s*(?:是|选|選|为|為)\s*(?:选项|選項)?\s*"
    + _OPEN
    + LABEL,
    # B才对 / C才是正确答案
    LABEL + r"\s*(?:项|項|选项|選項)?\s*才\s*(?:是)?\s*(?:对|對|正确|正確|答案|正确答案|正確答案)",
    # it should be B / it must be option C
    r"\b(?:should|must)\s+(?:actually\s+)?be\s+(?:option\s+|choice\s+)?" + _OPEN + LABEL,
    # it's B / it is actually D
    r"\bit(?:'s|\s+is)\s+(?:actually\s+|really\s+)?(?:option\s+|choice\s+)?" + _OPEN + LABEL,
)

# two or more labels: "A and C", "B, C or D", "option A and option C", "A、C", "A还是C"
_LIST = (
    LABEL
    + r"(?:\s*(?:,|、|and|or|&|/|和|与|與|及|或者|或|还是|還是)\s*(?:(?:options?|选项|選項)\s*)?"
    + LABEL
    + ")+"
)
_TIE_VERB = (
    r"(?:are|seem|look|appear|remain|(?:could|can|might|may|would)\s+(?:both\s+|each\s+|also\s+)?be)\s+"
)
_TIE_ADVERB = r"(?:(?:both|all|equally|also|potentially|technically|arguably|possibly|considered|the)\s+)*"
_TIE_RIGHT = (
    r"(?:correct|right|valid|plausible|acceptable|true|reasonable|possible|defensible|viable|justifiable)\b"
)

#: two or more options called right at once, none chosen: no answer unless a single one is named after it
TIE_PATTERNS: tuple[str, ...] = (
    # both A and C are correct / A and C are equally valid / Both B and D could be correct
    r"(?:\bboth\s+)?(?:options?\s+)?" + _LIST + r"\s+" + _TIE_VERB + _TIE_ADVERB + _TIE_RIGHT,
    # ... both A and C. / either A or C
    r"\bboth\s+(?:options?\s+)?" + _LIST + r"\s*(?:[.!。]|$)|\beither\s+(?:options?\s+)?" + _LIST,
    # I can't decide between A and C / it is hard to choose between B and D
    r"\b(?:can't|cannot|can\s+not|unable\s+to|hard\s+to|difficult\s+to|impossible\s+to)\s+"
    r"(?:decide|choose|determine|tell|pick)\s+(?:\w+\s+){0,2}?between\s+(?:options?\s+)?" + _LIST,
    # it could be A, but it could also be C
    r"\b(?:could|might|may)\s+be\s+(?:option\s+)?" + LABEL + r"[^.\n]{0,30}?\b(?:could|might|may)\s+"
    r"(?:also|just\s+as\s+well|equally)\s+be\s+(?:option\s+)?" + LABEL,
    # there are two correct answers / more than one valid option
    r"\b(?:two|multiple|more\s+than\s+one)\s+(?:correct|right|valid)\s+(?:answers?|options?|choices?)\b",
    # A和C都对 / A、C均正确 / A和B都有可能
    _LIST + r"\s*(?:项|項|选项|選項)?\s*(?:两项|兩項|两个|兩個|两者|兩者|二者)?\s*(?:都|均|皆)\s*(?:是)?\s*"
    r"(?:对|對|正确|正確|可以|可行|合理|成立|符合|有道理|有可能|可能|说得通|說得通)",
    # 可能是A，也可能是C / 既可以选A，也可以选C
    r"(?:可能|也许|也許|或许|或許|既)\s*(?:可以|可能|能)?\s*(?:是|选|選)?\s*"
    + LABEL
    + r"[^。\n]{0,8}?(?:也|又)\s*(?:可以|可能|能|许|許)\s*(?:是|选|選)?\s*"
    + LABEL,
    # 无法确定是A还是C / 难以在A和C之间做出选择
    r"(?:无法|無法|不能|难以|難以|很难|很難|不好)\s*(?:在\s*" + _LIST + r"\s*(?:之间|之間|中间|中間)|"
    r"(?:确定|確定|判断|判斷|决定|決定|区分|區分|选择|選擇|取舍|取捨)\s*(?:是|应该选|該選|该选|选|選)?\s*"
    + _LIST
    + ")",
    # 正确答案有两个 / 答案不唯一
    r"(?:答案|正确选项|正確選項)\s*(?:有|是|为|為)?\s*(?:两个|兩個|多个|多個|不止一个|不止一個|不唯一)",
)

# the statement is a question or one of several alternatives ("答案是B吗", "answer A or B")
_NOT_FINAL = re.compile(r"\s*(?:吗|嗎|\?|或|还是|還是|or\b)", re.IGNORECASE)
# a negation right before the statement ("不选A", "I would not choose A")
_NEGATED = re.compile(
    r"(?:(?:不|没|沒|别|別|勿|非)(?:应该|應該|应|應|能|会|會|要|可以|可能)?|\bnot|\bnever|n't)\s*$",
    re.IGNORECASE,
)
# an English word follows: "a" in "the answer is a good one" is an article, not a label
_WORD_FOLLOWS = re.compile(r"\s*[A-Za-z]")
_MARKUP = re.compile(r"\*+|`+|\$+|_{2,}")
_ENGLISH_WORD_LETTERS = frozenset({"A", "I"})  # "A good answer", "I think"
_LOWERCASE_WORD = re.compile(r" [a-z]")
_CLAUSE_START = (
    r"(?<![^\s.,;:!?。、…—–()\[\]【】「」\"'“”>-])"  # start of text, or after a space or punctuation
)
_CORRECTION = re.compile(_CLAUSE_START + "(?:" + "|".join(CORRECTION_MARKERS) + ")", re.IGNORECASE)


def extract_choice(
    text: str, labels: Sequence[str] = ("A", "B", "C", "D"), options: Sequence[str] | None = None
) -> str | None:
    """The label (one of ``labels``, as given) that ``text`` chooses, or None when it cannot be told.

    ``options`` are the option texts, in label order: when no label is found, a reply that contains exactly
    one option's text chooses that option.
    """
    if not text or not labels:
        return None
    rules = _rules(tuple(labels))
    body = _normalize(text)
    for part, revised in _latest_corrections_first(body):
        tie_end = _last_tie_end(part, rules)  # only what follows a tie can still choose
        tiers = (rules.answer, rules.correct, rules.revision) if revised else (rules.answer, rules.correct)
        for tier in tiers:
            found = _last_statement(part, tier, rules, tie_end)
            if found is not None:
                return found
        if tie_end:
            return None  # two or more options called right, none chosen after that: undecided
    found = _leading_label(body, rules)
    if found is None:
        found = _only_mention(body, rules)
    if found is None and options is not None:
        found = _only_option(body, labels, options)
    return found


# ---------------------------------------------------------------- internals


class _Rules:
    """Patterns compiled for one label set."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        norm = [_normalize(lab).strip() for lab in labels]
        self.by_text = dict(zip(norm, labels))
        folded: dict[str, list[str]] = {}
        for n, lab in zip(norm, labels):
            folded.setdefault(n.casefold(), []).append(lab)
        # a case variant maps back to a label only when that is unambiguous (labels "a" and "A" both exist: no)
        self.by_folded = {k: v[0] for k, v in folded.items() if len(v) == 1}
        alternation = "|".join(re.escape(n) for n in sorted(norm, key=len, reverse=True))
        group = rf"(?<![A-Za-z0-9])(?P<ans>{alternation})(?![A-Za-z0-9])"
        self.answer = tuple(re.compile(p.replace(LABEL, group), re.IGNORECASE) for p in ANSWER_PATTERNS)
        self.correct = tuple(re.compile(p.replace(LABEL, group), re.IGNORECASE) for p in CORRECT_PATTERNS)
        self.revision = tuple(re.compile(p.replace(LABEL, group), re.IGNORECASE) for p in REVISION_PATTERNS)
        any_label = rf"(?<![A-Za-z0-9])(?:{alternation})(?![A-Za-z0-9])"
        self.tie = tuple(re.compile(p.replace(LABEL, any_label), re.IGNORECASE) for p in TIE_PATTERNS)
        self.leading = re.compile(
            rf"[(\[【「]?\s*{group}\s*[)\]】」]?\s*(?:项|項|选项|選項)?(?P<after>.?)",
            re.IGNORECASE | re.DOTALL,
        )
        self.line_start = re.compile(rf"^[(\[【「]?\s*{group}\s*[)\]】」.:、]", re.IGNORECASE | re.MULTILINE)
        self.standalone = re.compile(group)

    def label_of(self, body: str, m: re.Match[str]) -> str | None:
        """The label a match names; a case variant only when no English word follows it."""
        ans = m.group("ans")
        if ans in self.by_text:
            return self.by_text[ans]
        if _WORD_FOLLOWS.match(body, m.end("ans")):
            return None
        return self.by_folded.get(ans.casefold())


@lru_cache(maxsize=64)
def _rules(labels: tuple[str, ...]) -> _Rules:
    return _Rules(labels)


def _normalize(text: str) -> str:
    return _MARKUP.sub("", unicodedata.normalize("NFKC", text))


def _latest_corrections_first(body: str) -> Iterator[tuple[str, bool]]:
    """The text after each correction marker, the latest first, then the whole reply; each with "revised?"."""
    for start in reversed([m.end() for m in _CORRECTION.finditer(body)]):
        yield body[start:], True
    yield body, False


def _last_tie_end(body: str, rules: _Rules) -> int:
    """Where the last tie statement that is not negated ends ("not both A and C" is no tie); 0 for none."""
    ends = [
        m.end()
        for pattern in rules.tie
        for m in pattern.finditer(body)
        if not _NEGATED.search(body, max(0, m.start() - 16), m.start())
    ]
    return max(ends, default=0)


def _last_statement(
    body: str, patterns: tuple[re.Pattern[str], ...], rules: _Rules, start: int = 0
) -> str | None:
    """The label of the last statement that ``patterns`` find from ``start`` on, skipping negated and open ones."""
    best: tuple[int, str] | None = None
    for pattern in patterns:
        for m in pattern.finditer(body, start):
            label = rules.label_of(body, m)
            negated = _NEGATED.search(body, max(0, m.start() - 16), m.start())
            if label is None or negated or _NOT_FINAL.match(body, m.end("ans")):
                continue
            if best is None or m.end() > best[0]:
                best = (m.end(), label)
    return best[1] if best else None


def _leading_label(body: str, rules: _Rules) -> str | None:
    """A reply that is one label, or starts with one followed by punctuation or non-English text."""
    stripped = body.strip()
    m = rules.leading.match(stripped)
    if m is None:
        return None
    after = m.group("after")
    if (after.isascii() and after.isalnum()) or _NOT_FINAL.match(stripped, m.end("ans")):
        return None  # an English word follows ("A good answer"), or alternatives ("A或B", "B?")
    label = rules.label_of(stripped, m)
    listed = {rules.label_of(stripped, x) for x in rules.line_start.finditer(stripped)}
    if listed - {label, None}:
        return None  # lines start with different labels: the options listed, not one chosen
    return label


def _only_mention(body: str, rules: _Rules) -> str | None:
    seen = set()
    for m in rules.standalone.finditer(body):
        ans = m.group("ans")
        if ans in _ENGLISH_WORD_LETTERS and _LOWERCASE_WORD.match(body, m.end()):
            continue
        seen.add(rules.by_text[ans])
    return seen.pop() if len(seen) == 1 else None


def _only_option(body: str, labels: Sequence[str], options: Sequence[str]) -> str | None:
    reply = _option_key(body)
    if not reply:
        return None
    hits = []
    for label, option in zip(labels, options):
        key = _option_key(option)
        # a one-character option ("是", "3") is found everywhere: it counts only as the whole reply
        if key and (key == reply or (len(key) > 1 and key in reply)):
            hits.append((label, key))
    # "北京市" contains "北京": keep the longer option when both are found
    hits = [(lab, k) for lab, k in hits if not any(k != other and k in other for _, other in hits)]
    return hits[0][0] if len(hits) == 1 else None


def _option_key(text: str) -> str:
    return _normalize(text).strip().rstrip("。.!！").strip().casefold()
