"""Numbers in model outputs and gold answers (GSM8K and other math word problems).

* :func:`gold_number`: the reference's answer, after its last ``####`` when it has one (GSM8K's format);
* :func:`extract_strict`: the answer stated in the expected form: the first ``#### N`` (lm-eval's gsm8k
  ``strict-match``), else the first ``The answer is N`` (lm-eval's gsm8k-cot form);
* :func:`extract_flexible`: the last number anywhere in the output (lm-eval's ``flexible-extract``);
* :func:`normalise_number`: ``"$1,000"`` -> ``"1000"``, ``"18."`` -> ``"18"``, ``"18.00"`` -> ``"18"``,
  ``"-0.50"`` -> ``"-0.5"``: two answers are equal when their normalised forms are.

A number is digits with optional thousands separators and decimals, an optional leading minus sign and
dollar sign. A minus counts only where it cannot be a hyphen or a subtraction ("3-5" holds 3 and 5). Digits
inside a word ("x2", "COVID19") are not numbers. Full-width digits and the Unicode minus are folded first.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

# the number itself: 1,234,567 / 1234 / 3.5 ; thousands separators only in groups of three
_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
# a signed amount: "-5", "-$5", "$-5", "$1,000"; a minus right after a letter, digit or bracket is a hyphen or
# a subtraction, and one followed by a space ("10 - 5") is an operator
_AMOUNT = rf"(?:(?<![\w)\]])-)?(?:\$\s?)?-?{_NUM}"
# not inside a word or a longer number: "x2", "COVID19", the "5" of ".5"
_NUMBER = re.compile(rf"(?<![A-Za-z0-9_.]){_AMOUNT}", re.ASCII)
_STRICT_HASH = re.compile(rf"####\s*(?P<n>{_AMOUNT})", re.ASCII)
# "The answer is 18", "the final answer is: $1,000", "The answer is **18**", "answer is \boxed{18}"
_STRICT_ANSWER = re.compile(
    rf"\banswer\s+is\s*:?[\s*]*(?:\\boxed\{{\s*)?(?P<n>{_AMOUNT})", re.ASCII | re.IGNORECASE
)
_FOLD = str.maketrans({"\u2212": "-", "\u2013": "-", "\uff04": "$", "\u00a0": " "})


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(_FOLD)


def extract_strict(text: str) -> str | None:
    """The number stated as ``#### N`` (the first), else as ``The answer is N`` (the first); None if neither."""
    text = _fold(text)
    m = _STRICT_HASH.search(text) or _STRICT_ANSWER.search(text)
    return normalise_number(m["n"]) if m else None


def extract_flexible(text: str) -> str | None:
    """The last number in ``text``, normalised; None if it holds none."""
    found = _NUMBER.findall(_fold(text))
    return normalise_number(found[-1]) if found else None


def gold_number(target: object) -> str:
    """The gold answer of a reference: after its last ``####`` if any, normalised (a number when it is one)."""
    text = _fold(str(target))
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    return normalise_number(text)


def normalise_number(text: str) -> str:
    """A canonical form: the number without ``$``, ``,``, spaces or trailing zeros; other text stripped,
    case-folded and without a final period."""
    t = _fold(text).strip().rstrip(".").strip()
    compact = t.replace(",", "").replace("$", "").replace(" ", "")
    try:
        d = Decimal(compact)
    except InvalidOperation:
        return t.casefold()
    if not d.is_finite():
        return t.casefold()
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")
