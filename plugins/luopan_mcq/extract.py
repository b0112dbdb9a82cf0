"""Which option did a model choose? Reading the answer label out of generated text.

Tiers, the first that finds something wins:

1. explicit answer statements ("答案是 B", "选C", "The answer is **B**", "\\boxed{B}"): the *last* one, since
   reasoning mentions options before the final answer;
2. "B 正确" / "B is correct": the last one;
3. a reply that is, or starts with, one label ("B", "(B)", "B. 北京", "b)");
4. the only label mentioned as a standalone token ("A" and "I" followed by a lowercase word are English
   words, not options);
5. the only option whose text the reply contains.

Labels are matched as whole tokens, never inside a word: "Let's think" holds no "L" (OpenCompass
issue #1933). Lowercase labels count only where no English word follows ("b)", "answer: b"), so the article
in "the answer is a ..." is not option A. Full-width letters and punctuation are folded by NFKC first.

The patterns live in tuples, one regex per element, each with exactly one ``<L>`` placeholder (the label
group): a missing comma would silently concatenate two of them (OpenCompass PR #2600), and the tests check
the count and the placeholder of every element.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

LABEL = "<L>"  # replaced by the label group, (?P<ans>A|B|...), bounded so it never sits inside a word
_OPEN = r"[(\[【「]?\s*"  # an optional opening bracket before a label (after NFKC: "（" is "(")

#: explicit answer statements (tier 1)
ANSWER_PATTERNS: tuple[str, ...] = (
    # 答案是 B / 正确答案：B。/ 答案应该是C / 答案为选项 B / 正确的选项是 D
    r"(?:答案|正确选项|正確選項|正确的选项|正確的選項)\s*(?:应该|應該|应当|应|應|就|也|即|一定|当然)?\s*"
    r"(?:是|为|為|选|選|选择|選擇)?\s*(?:选项|選項)?\s*:?\s*" + _OPEN + LABEL,
    # 选B / 应该选择C项 / 故选：B (but "选项B" is a noun: option B, not a choice)
    r"(?:选择|選擇|选|選)(?!项|項)\s*(?:选项|選項|答案)?\s*:?\s*" + _OPEN + LABEL,
    # The answer is B / Answer: (B) / the correct answer would be option C / answer to this question is D
    r"\banswer\s*(?:to\s+(?:this|the)\s+question\s*)?(?:is|would\s+be|should\s+be|must\s+be|will\s+be|=)?\s*:?\s*"
    r"(?:option|choice|letter)?\s*:?\s*" + _OPEN + LABEL,
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
)

#: "this option is correct" statements (tier 2): weaker, explanations call statements correct too
CORRECT_PATTERNS: tuple[str, ...] = (
    # B 正确 / B项正确 / B选项是正确的 / C符合题意 / D 当选
    LABEL
    + r"\s*[)\]】」]?\s*(?:项|項|选项|選項)?\s*(?:是|为)?\s*(?:正确|正確|对的|對的|符合题意|符合題意|当选|當選)",
    # B is correct / option C is the right answer
    LABEL + r"\s*\)?\s+(?:is|would\s+be)\s+(?:the\s+)?(?:correct|right|best)\b",
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
    for tier in (rules.answer, rules.correct):
        found = _last_statement(body, tier, rules)
        if found is not None:
            return found
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
    if "</think>" in text:  # a reasoning model's hidden thoughts are not its answer
        text = text.rsplit("</think>", 1)[1]
    return _MARKUP.sub("", unicodedata.normalize("NFKC", text))


def _last_statement(body: str, patterns: tuple[re.Pattern[str], ...], rules: _Rules) -> str | None:
    best: tuple[int, str] | None = None
    for pattern in patterns:
        for m in pattern.finditer(body):
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
