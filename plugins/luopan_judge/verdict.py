"""Reading a judge's verdict out of its free-text reply: pairwise (A / B / tie), a 1-10 rating, correct / incorrect.

Judges are asked for a fixed format (``[[A]]``, ``[[B]]``, ``[[C]]`` for a tie; ``Rating: [[7]]``), but real judges
also write ``7/10``, ``**Final verdict:** A``, Arena-Hard's ``[[A>>B]]``, full-width brackets, or Chinese
(``评分：8分``, ``A更好``, ``平局``). The parsers look for the explicit form first and take its *last* occurrence
(a judge that changes its mind states the final verdict last); an echo of the instructions (``"[[A]]" if assistant
A is better``) is not a verdict. Anything else returns ``None``: the caller retries and then records a failure,
never a guess.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

Pairwise = Literal["A", "B", "tie"]

_FOLD = str.maketrans({
    "【": "[", "】": "]", "〔": "[", "〕": "]", "［": "[", "］": "]", "“": '"', "”": '"', "：": ":", "＝": "=",
    "＞": ">", "＜": "<", "／": "/",
})


def _fold(text: str) -> str:
    """NFKC (full-width letters, digits and brackets become ASCII), the remaining CJK punctuation folded, markdown
    emphasis removed."""
    text = unicodedata.normalize("NFKC", text).translate(_FOLD)
    return text.replace("**", "").replace("__", "")


# ---------------------------------------------------------------- pairwise

_TIE_WORDS = ("C", "TIE", "DRAW", "EQUAL", "SAME")
# [[A]] [[ B ]] [[C]] [[tie]] and Arena-Hard's [[A>>B]] [[A>B]] [[A=B]] [[B>A]] [[B>>A]]
_BRACKET = re.compile(r"\[\[\s*(A\s*>>?\s*B|B\s*>>?\s*A|A\s*<<?\s*B|B\s*<<?\s*A|A\s*=\s*B|B\s*=\s*A|[ABC]|tie|draw)\s*\]\]",
                      re.IGNORECASE)
# the instruction echoed back: '"[[A]]" if assistant A is better', '[[C]] for a tie', '[[B]] 表示'
_ECHO = re.compile(r'"?\[\[[^\]]{1,6}\]\]"?\s*(?:if|for|when|means|表示|代表|如果)[^,;.，；。"\n]*', re.IGNORECASE)
_SINGLE_BRACKET = re.compile(r"(?<!\[)\[\s*([ABC])\s*\](?!\])")

_EN_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b(?:final\s+)?(?:verdict|decision|answer|choice|winner)\s*(?:is|:|-)\s*"
                r"(?:assistant\s+|response\s+|answer\s+|model\s+|output\s+)?[\"'(]?([AB])\b[\"')]?", re.I), "{}"),
    (re.compile(r"\b(?:assistant|response|answer|model|output)\s+([AB])(?:'s\s+(?:answer|response))?\s+"
                r"(?:is|was|provides?\s+a|gives?\s+a)\s+(?:clearly\s+|slightly\s+|significantly\s+|much\s+)?"
                r"(?:better|superior|stronger|preferred|more\s+helpful|the\s+winner|the\s+better)", re.I), "{}"),
    (re.compile(r"(?:^|[\s(\"'])([AB])\s+is\s+(?:(?:clearly|slightly|much|far|indeed|definitely|certainly|obviously|"
                r"significantly)\s+)*(?:better|superior|the\s+better(?:\s+(?:one|answer|choice|response|option))?)\b",
                re.I | re.M), "{}"),
    (re.compile(r"\b(?:I\s+)?(?:prefer|choose|pick|select)\s+(?:assistant\s+|response\s+|answer\s+|model\s+)?"
                r"([AB])\b", re.I), "{}"),
    (re.compile(r"\b(?:it'?s\s+a\s+|a\s+|is\s+a\s+|verdict\s*:?\s*|result\s*:?\s*)(tie|draw)\b", re.I), "tie"),
    (re.compile(r"\bboth\s+(?:assistants|responses|answers)\s+(?:are|were)\s+(?:equally\s+(?:good|bad|helpful)|"
                r"of\s+(?:equal|similar|the\s+same)\s+quality|tied)", re.I), "tie"),
    (re.compile(r"\b(?:equally\s+good|neither\s+(?:is|assistant\s+is)\s+better|no\s+clear\s+winner)\b", re.I), "tie"),
]
_ZH_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?:平局|平手|打平|不相上下|难分高下|难分伯仲|两者相当|两者一样|二者相当|质量相当|一样好|同样好|无明显差异)"), "tie"),
    (re.compile(r"(?:助手|回答|回复|答案|模型|选项)?\s*([AB])\s*(?:的)?\s*(?:回答|回复|答案)?\s*(?:更好|较好|更优|更佳|胜出|获胜|胜|赢|更胜一筹|表现更好|质量更高)"), "{}"),
    (re.compile(r"(?:选择|我选|选|判定|判断|裁决|结论|最终结果|最终判决|胜者|获胜者|更好的是)\s*[:是为]?\s*(?:助手|回答|回复|答案|模型)?\s*([AB])"), "{}"),
]


def _normalise_bracket(token: str) -> Pairwise:
    t = re.sub(r"\s+", "", token).upper()
    if t in ("A", "B"):
        return t  # type: ignore[return-value]
    if t in _TIE_WORDS or t in ("A=B", "B=A"):
        return "tie"
    if t in ("A>B", "A>>B", "B<A", "B<<A"):
        return "A"
    return "B"  # B>A, B>>A, A<B, A<<B


def parse_pairwise(text: str | None) -> Pairwise | None:
    """The verdict of a pairwise judgment: ``"A"``, ``"B"``, ``"tie"``, or ``None`` when the reply states none."""
    if not text:
        return None
    t = _fold(text)
    masked = _ECHO.sub(lambda m: " " * len(m.group()), t)
    found = list(_BRACKET.finditer(masked))
    if found:
        return _normalise_bracket(found[-1].group(1))
    last: tuple[int, Pairwise] | None = None
    for pattern, label in _EN_PATTERNS + _ZH_PATTERNS:
        for m in pattern.finditer(masked):
            verdict: Pairwise = label.format(m.group(1).upper()) if "{}" in label else label  # type: ignore[assignment]
            if last is None or m.start() >= last[0]:
                last = (m.start(), verdict)
    if last is not None:
        return last[1]
    singles = _SINGLE_BRACKET.findall(masked)
    if singles:
        return _normalise_bracket(singles[-1])
    stripped = masked.strip().strip(".。!！\"'` ").upper()
    if stripped in ("A", "B"):
        return stripped  # type: ignore[return-value]
    if stripped in ("C", "TIE", "DRAW", "平局"):
        return "tie"
    return None


# ---------------------------------------------------------------- ratings

_NUM = r"(\d+(?:\.\d+)?)"
_RATING_PATTERNS = [
    re.compile(rf"\[\[\s*{_NUM}\s*(?:/\s*10)?\s*\]\]"),                     # [[7]] [[7.5]] [[7/10]]
    re.compile(rf"(?:rating|score|grade|评分|得分|分数|打分|评级)\s*(?:is|of|:|=|为|是)?\s*\[?\s*{_NUM}\s*\]?"
               rf"\s*(?:/\s*10|out\s+of\s+10|分)?", re.I),                  # Rating: 7, 评分：8分, score of 6
    re.compile(rf"(?<![\d.]){_NUM}\s*(?:/\s*10|out\s+of\s+10|分(?:\s*[(（]?\s*满分\s*10)?)(?![\d])", re.I),  # 7/10, 8分
    re.compile(rf"(?:rate|give|award)\s+(?:it|this|the\s+(?:response|answer))?\s*(?:a|an)?\s*{_NUM}\b", re.I),
    re.compile(rf"(?<!\[)\[\s*{_NUM}\s*\](?!\])"),                          # [7] (FastChat's fallback)
]


def parse_rating(text: str | None, *, low: float = 1.0, high: float = 10.0) -> float | None:
    """The rating a single-answer judgment gives, in ``[low, high]``; ``None`` when none is stated (or out of
    range: a 0 or a 42 is not a rating on a 1-10 scale)."""
    if not text:
        return None
    t = _fold(text)
    masked = _ECHO.sub(lambda m: " " * len(m.group()), t)
    masked = re.sub(r"scale\s+of\s+1\s+to\s+10|1\s*(?:-|to|~|到|至)\s*10\s*(?:分|scale)?", " ", masked, flags=re.I)
    masked = re.sub(r"例如\s*[:：]?\s*\"?[^\"\n]{0,20}\"?|for\s+example\s*[:,]?\s*\"[^\"]*\"", " ", masked, flags=re.I)
    for pattern in _RATING_PATTERNS:
        found = pattern.findall(masked)
        if found:
            value = float(found[-1])
            return value if low <= value <= high else None
    stripped = masked.strip().strip(".。 ")
    if re.fullmatch(_NUM, stripped):
        value = float(stripped)
        return value if low <= value <= high else None
    return None


# ---------------------------------------------------------------- correctness (cascade)

_CORRECT = re.compile(r"\[\[\s*(CORRECT|INCORRECT|WRONG|RIGHT|YES|NO|正确|错误|对|错)\s*\]\]", re.I)
_CORRECT_WORDS = re.compile(
    r"\b(?:the\s+(?:answer|response)\s+is\s+|verdict\s*:?\s*|judgment\s*:?\s*)(correct|incorrect|wrong|right)\b"
    r"|(?:答案|回答|结论|判断)\s*(?:是|为|:)?\s*(正确|错误|不正确)", re.I)


def parse_correct(text: str | None) -> bool | None:
    """A correctness verdict (the cascade's judge): ``[[CORRECT]]`` / ``[[INCORRECT]]``, "the answer is correct",
    ``答案正确``; ``None`` when none is stated."""
    if not text:
        return None
    t = _fold(text)
    found = _CORRECT.findall(t)
    if found:
        return found[-1].upper() in ("CORRECT", "RIGHT", "YES", "正确", "对")
    words = _CORRECT_WORDS.findall(t)
    if words:
        last = next(w for w in reversed(words[-1]) if w)
        return last.lower() in ("correct", "right", "正确")
    stripped = t.strip().strip(".。!！ ").upper()
    if stripped in ("CORRECT", "YES", "正确", "对"):
        return True
    if stripped in ("INCORRECT", "WRONG", "NO", "错误", "错", "不正确"):
        return False
    return None
