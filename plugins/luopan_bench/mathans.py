"""Final answers of maths problems (MATH): reading them out of a solution, and deciding equivalence.

* :func:`extract_answer`: the Minerva form ``Final Answer: The final answer is X. I hope it is correct.``
  (the prompt's few-shot examples end that way), else the last ``\\boxed{...}``, else None;
* :func:`normalize` : the final-answer normalisation of Lewkowycz et al. (2022), appendix D (units and
  ``\\text{}`` dropped, ``\\fracab`` -> ``\\frac{a}{b}``, ...), as lm-eval's minerva_math applies it;
* :func:`equivalent`: the normalised strings are equal, or ``math-verify`` (``pip install 'luopan[math]'``)
  says the two are the same mathematical object (1/2 = 0.5 = \\frac{1}{2}, intervals, sets, matrices); without
  math-verify, sympy compares the two after a small LaTeX -> sympy translation (fractions, roots, powers,
  pi), a weaker check that never calls equal what it cannot parse.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_FINAL = re.compile(r"Final Answer: The final answer is(.*?)\. I hope it is correct\.", re.DOTALL)

_SUBSTITUTIONS = [
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), (r"\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
]
_REMOVED = [
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "\\ldots", "sue",
    "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals", "edges",
    "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2",
    "\\text{}^3", "\\text{\n}", "\\text{}", r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;", r",\!", "{,}", '"',
    "\\dots",
]


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, ``\\boxed x``), braces balanced."""
    if "\\boxed " in text:
        return text.split("\\boxed ")[-1].split("$")[0].strip()
    idx = text.rfind("\\boxed")
    if idx < 0:
        idx = text.rfind("\\fbox")
        if idx < 0:
            return None
    start = text.find("{", idx)
    if start < 0:
        return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None


def extract_answer(text: str) -> str | None:
    m = _FINAL.search(text + ("" if text.rstrip().endswith("I hope it is correct.") else " I hope it is correct."))
    if m and m.group(1).strip():
        return m.group(1).strip()
    return last_boxed(text)


def normalize(answer: str) -> str:
    a = answer.split("=")[-1]
    for expr in _REMOVED:
        if expr.isalpha():
            a = re.sub(rf"(?<!\\)\b{expr}\b", "", a)
    for before, after in _SUBSTITUTIONS:
        a = a.replace(before, after)
    for expr in _REMOVED:
        if expr.isalpha():
            segments = re.split(r"(\\[a-zA-Z]+)", a)
            for i in range(0, len(segments), 2):
                segments[i] = segments[i].replace(expr, "")
            a = "".join(segments)
        else:
            a = a.replace(expr, "")
    a = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", a)
    a = re.sub(r"(\\text\{)(.*?)(\})", "\\2", a)
    a = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", a)
    a = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", a)
    a = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", a)
    a = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", a)
    a = re.sub(r"(sqrt)(\[[^\]]*\])(\w)", "\\1\\2{\\3}", a)
    a = re.sub(r"(sqrt)(?!\[)([^{])", "sqrt{\\2}", a)
    a = a.replace("$", "")
    if a.replace(",", "").isdigit():
        a = a.replace(",", "")
    return a.strip()


def math_verify_available() -> bool:
    try:
        import math_verify  # noqa: F401
    except ImportError:
        return False
    return True


def equivalent(candidate: str | None, gold: str) -> bool:
    """Is ``candidate`` (a final answer, LaTeX) the same answer as ``gold``?"""
    if candidate is None:
        return False
    a, b = normalize(candidate), normalize(gold)
    if a == b and a:
        return True
    if math_verify_available():
        return _verify(candidate, gold)
    return _sympy_equal(a, b)


def _verify(candidate: str, gold: str) -> bool:
    from math_verify import parse, verify

    try:
        g = _parse_gold(gold)
        c = parse(f"${candidate}$")
        return bool(g) and bool(c) and bool(verify(g, c))
    except Exception:  # math-verify raises on odd LaTeX; that answer is simply not shown equal
        return False


@lru_cache(maxsize=8192)
def _parse_gold(gold: str) -> Any:
    from math_verify import parse

    return parse(f"${gold}$")


_LATEX_TO_SYMPY = [
    (re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}"), r"((\1)/(\2))"),
    (re.compile(r"\\sqrt\{([^{}]*)\}"), r"sqrt(\1)"),
    (re.compile(r"\\left|\\right|\\!|\\,"), ""),
    (re.compile(r"\\pi"), "pi"),
    (re.compile(r"\\cdot|\\times"), "*"),
    (re.compile(r"\^\{([^{}]*)\}"), r"**(\1)"),
    (re.compile(r"\^"), "**"),
    (re.compile(r"\{|\}"), ""),
]


def _sympy_equal(a: str, b: str) -> bool:
    if not a or not b or len(a) > 120 or len(b) > 120:
        return False
    try:
        import sympy
        from sympy.parsing.sympy_parser import (
            implicit_multiplication_application,
            parse_expr,
            standard_transformations,
        )
    except ImportError:
        return False
    rules = (*standard_transformations, implicit_multiplication_application)
    try:
        x, y = (parse_expr(_to_sympy(t), transformations=rules, evaluate=True) for t in (a, b))
        return bool(sympy.simplify(x - y) == 0)
    except Exception:  # unparseable or incomparable: not shown equal
        return False


def _to_sympy(text: str) -> str:
    for _ in range(3):  # nested fractions and roots, inside out
        for pattern, repl in _LATEX_TO_SYMPY[:2]:
            text = pattern.sub(repl, text)
    for pattern, repl in _LATEX_TO_SYMPY[2:]:
        text = pattern.sub(repl, text)
    if "\\" in text:
        raise ValueError("LaTeX left")
    return text
