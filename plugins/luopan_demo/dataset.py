"""The demo benchmark: four subsets (zh_mcq, en_mcq, zh_qa, en_qa) written for luopan itself.

Multiple-choice subsets produce samples in the same shape as the ``mcq_csv`` loader (choices = letters,
target = index, meta options), so they are scored by the ``accuracy`` evaluator; short-answer subsets are
generation-only and scored by ``short_answer``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from luopan.components import Dataset
from luopan.data import files_fingerprint, read_jsonl
from luopan.types import Sample

DATA = Path(__file__).with_name("demo.jsonl")
LABELS = ["A", "B", "C", "D"]
MCQ_ZH = "以下是单项选择题，请直接给出正确答案的选项字母。\n\n{q}\n{opts}\n答案："
MCQ_EN = "The following is a multiple choice question. Answer with the letter of the correct option.\n\n{q}\n{opts}\nAnswer:"
QA_ZH = "请用一个词或一个数字简短回答下面的问题。\n问题：{q}\n答案："
QA_EN = "Answer the question with a single word or number.\nQuestion: {q}\nAnswer:"


class DemoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["mcq", "qa"] = "mcq"


class DemoDataset(Dataset):
    @classmethod
    def preflight(cls, params: Any) -> list[str]:
        if DATA.is_file():
            return []
        return [f"the demo data {DATA} is missing from this installation of luopan: reinstall it (pip install -e .)"]

    def __init__(self, kind: str = "mcq") -> None:
        self.kind = kind
        self.default_evaluator = "accuracy" if kind == "mcq" else "short_answer"
        rows = list(read_jsonl(DATA, what="demo"))
        self._rows = [r for r in rows if r["subset"].endswith(kind)]
        self.display_names = {"zh_mcq": "中文选择题", "en_mcq": "English multiple choice",
                              "zh_qa": "中文简答", "en_qa": "English short answer"}

    def subsets(self) -> list[str]:
        return list(dict.fromkeys(r["subset"] for r in self._rows))

    def load(self, subset: str, *, shots: int = 0) -> list[Sample]:
        if shots:
            raise ValueError("the demo benchmark has no few-shot examples (shots must be 0)")
        out = []
        for i, r in enumerate(x for x in self._rows if x["subset"] == subset):
            zh = subset.startswith("zh")
            if self.kind == "mcq":
                opts = "\n".join(f"{label}. {o}" for label, o in zip(LABELS, r["options"]))
                prompt = (MCQ_ZH if zh else MCQ_EN).format(q=r["question"], opts=opts)
                choices = LABELS[: len(r["options"])] if zh else [" " + x for x in LABELS[: len(r["options"])]]
                out.append(Sample(f"{subset}/{i}", subset, prompt, LABELS.index(r["answer"]), choices=choices,
                                  chat_prompt=prompt.rsplit("\n", 1)[0],
                                  meta={"answer": r["answer"], "options": r["options"]}))
            else:
                prompt = (QA_ZH if zh else QA_EN).format(q=r["question"])
                out.append(Sample(f"{subset}/{i}", subset, prompt, list(r["answer"]),
                                  chat_prompt=prompt.rsplit("\n", 1)[0]))
        return out

    def fingerprint(self) -> str:
        return files_fingerprint([DATA])

    def describe(self) -> dict[str, Any]:
        if self.kind == "mcq":
            return {"templates": {"zh": MCQ_ZH, "en": MCQ_EN}}
        return {"templates": {"zh": QA_ZH, "en": QA_EN}}
