"""From a model's answer to a program: code extraction and assembly with the benchmark's tests.

HumanEval (``code_prompt`` set): the model continues the function's signature and docstring. A plain
completion (base models) is cut at the first of lm-eval's stop sequences and appended to the prompt, as in
the original harness (``prompt + completion``). A chat answer usually holds the whole function in a
fenced code block: the block is extracted, and when it defines the entry point at the top level it is put
*after* the prompt (the prompt's imports and helper functions stay defined; the answer's definition
replaces the docstring-only one); otherwise the block is taken as the function's body.

MBPP (no ``code_prompt``): the answer is the code. ``[BEGIN]``/``[DONE]`` markers (the prompt's format) and
fenced blocks are both understood. The program is the code, then the test set-up code, then the asserts.
"""

from __future__ import annotations

import re

#: lm-eval's humaneval ``until``: a completion ends where top-level code starts
HUMANEVAL_STOPS: tuple[str, ...] = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")

_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(text: str) -> str:
    """The code in an answer: the first fenced block (a Python or unlabelled one first, preferring one that
    defines something), else what is between ``[BEGIN]`` and ``[DONE]``, else the text up to ``[DONE]``."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    if blocks:
        pythonic = [b for lang, b in blocks if lang in ("", "python", "py", "python3")] or [b for _, b in blocks]
        defining = [b for b in pythonic if re.search(r"^\s*(def|class|import|from)\s", b, re.M)]
        return (defining or pythonic)[0]
    if "[BEGIN]" in text:
        text = text.split("[BEGIN]", 1)[1]
    return text.split("[DONE]", 1)[0]


def is_fenced(text: str) -> bool:
    return "```" in text or "[BEGIN]" in text


def truncate(text: str, stops: tuple[str, ...]) -> str:
    """``text`` up to the first stop sequence."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def solution(text: str, *, code_prompt: str = "", entry_point: str | None = None,
             stops: tuple[str, ...] = ()) -> tuple[str, str]:
    """The solution code for an answer, and how it was read: ``"completion"`` (the prompt continued),
    ``"function"`` (a whole function after the prompt) or ``"code"`` (standalone code)."""
    code = extract_code(text) if is_fenced(text) else text.split("[DONE]", 1)[0]
    if not code_prompt:
        return code, "code"
    if entry_point and re.search(rf"^(async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.M):
        return code_prompt + "\n" + code, "function"
    return code_prompt + truncate(code, stops), "completion"


def program(solution_code: str, tests: str) -> str:
    """The program run in the sandbox: the solution, then the tests."""
    return solution_code.rstrip() + "\n\n\n" + tests.strip("\n") + "\n"
