"""The GPU check: luopan's engines on one GPU, in one table, in a few minutes.

On a random-weight model of Llama-3.2-1B's shape in bfloat16 (random weights: nothing to download; EOS ignored, so
every row decodes exactly ``--new-tokens`` tokens):

* decode throughput at batch 1 and batch 32: plain ``model.generate``, the hf backend (its decode loop, and with
  ``compile: true``: static KV cache, compiled step, CUDA graphs), vLLM and LMDeploy where they are installed;
* the hf backend's batch-1 share of the memory-bandwidth roofline (bandwidth / bytes of weights read per token),
  and its batch-32 speed-up over plain ``model.generate`` (targets: at least 50% and at least 3x);
* agreement on ``--questions`` likelihood items (4 options each): each engine against the hf backend, same arg-max
  option and the median |delta log-prob|.

Each engine runs in a process of its own (its GPU memory is given back between engines); one that is missing or
fails is a row saying why, never the end of the check. ``benchmarks/gpu_check.sh`` runs this from a fresh
checkout (installing luopan without its dependencies' downloads, for a machine with no network).

    python benchmarks/gpu_check.py                 # CUDA, bfloat16
    python benchmarks/gpu_check.py --tiny          # CPU smoke test: a tiny model (vLLM's CPU build if installed)
    python benchmarks/gpu_check.py --json OUT.json # the figures, also as JSON
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "plugins"))

from gpu_hf_throughput import BANDWIDTH_GBS, make_model, make_tokenizer  # noqa: E402

ENGINE_TIMEOUT_S = 240  # one engine's start, decode and likelihood; a hung engine is a row, not a hung check


def workload(vocab: int, prompt_tokens: int, questions: int) -> dict:
    """Random prompts (batch 32 of them) and likelihood items, as word-level text of token numbers."""
    rng = random.Random(0)
    hi = min(vocab, 4096)

    def text(n: int) -> str:
        return " ".join(str(rng.randrange(2, hi)) for _ in range(n))

    return {"prompts": [text(prompt_tokens) for _ in range(32)],
            "questions": [text(prompt_tokens) for _ in range(questions)], "options": [" 5", " 6", " 7", " 8"]}


def save_model(folder: Path, tiny: bool) -> tuple[int, int]:
    """The random model and its tokenizer, saved as a transformers folder every engine loads."""
    import torch

    model = make_model(tiny, torch.device("cpu"), torch.float32 if tiny else torch.bfloat16)
    tok = make_tokenizer(min(model.config.vocab_size, 4096))
    model.config.eos_token_id = 1
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return model.config.vocab_size, weight_bytes


def timed(fn, sync) -> float:
    fn()  # warm-up (and compilation)
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


# ------------------------------------------------------------------ engines, each in its own process


def run_hf(folder: Path, work: dict, new: int, tiny: bool) -> dict:
    import torch

    from luopan.types import GenerationConfig, GenerationRequest, LoglikelihoodRequest
    from luopan_hf.backend import HFBackend

    device = "cpu" if tiny else "cuda"
    dtype = "float32" if tiny else "bfloat16"

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    rows, lik = {}, None
    for compile in (False,) if tiny else (False, True):  # compiling on CPU would take the whole smoke test
        b = HFBackend(path=str(folder), device=device, dtype=dtype, batch_size=32, compile=compile)
        b.load()
        b.ignore_eos = True
        model = b.lm.model
        for bs in (1, 32):
            prompts = work["prompts"][:bs]
            if not compile:
                ids = torch.tensor([[int(w) for w in p.split()] for p in prompts], device=model.device)

                def plain(ids=ids, model=model):
                    model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new,
                                   min_new_tokens=new)

                rows[f"model.generate|{bs}"] = bs * new / timed(plain, sync)
            reqs = [GenerationRequest(prompt=p, config=GenerationConfig(max_new_tokens=new)) for p in prompts]
            out = b.generate(reqs)
            assert all(o.completion_tokens == new for o in out), [o.completion_tokens for o in out]
            rows[f"luopan hf{' compile' if compile else ''}|{bs}"] = bs * new / timed(
                lambda r=reqs, b=b: b.generate(r), sync)
        if not compile:
            lreqs = [LoglikelihoodRequest(q, o) for q in work["questions"] for o in work["options"]]
            lik = [r.logprob for r in b.loglikelihood(lreqs)]
        b.close()
        if device == "cuda":
            torch.cuda.empty_cache()
    return {"decode": rows, "likelihood": lik}


def run_vllm(folder: Path, work: dict, new: int, tiny: bool) -> dict:
    from luopan.types import LoglikelihoodRequest
    from luopan_vllm.backend import VLLMBackend

    b = VLLMBackend(path=str(folder), dtype="float32" if tiny else "bfloat16", enforce_eager=tiny,
                    max_model_len=4096)
    b.load()
    from vllm import SamplingParams

    sp = SamplingParams(temperature=0.0, max_tokens=new, min_tokens=new, ignore_eos=True)
    rows = {}
    for bs in (1, 32):
        prompts = [{"prompt_token_ids": b.tok_encode(p)} for p in work["prompts"][:bs]]
        rows[f"vLLM|{bs}"] = bs * new / timed(lambda p=prompts: b.llm.generate(p, sp, use_tqdm=False), lambda: None)
    lreqs = [LoglikelihoodRequest(q, o) for q in work["questions"] for o in work["options"]]
    lik = [r.logprob for r in b.loglikelihood(lreqs)]
    return {"decode": rows, "likelihood": lik, "version": b.identity()["engine"]}


def run_lmdeploy(folder: Path, work: dict, new: int, tiny: bool) -> dict:
    from luopan.types import LoglikelihoodRequest
    from luopan_lmdeploy.backend import LMDeployBackend

    b = LMDeployBackend(path=str(folder))
    b.load()
    from lmdeploy import GenerationConfig

    gc = GenerationConfig(max_new_tokens=new, min_new_tokens=new, ignore_eos=True, do_sample=False)
    rows = {}
    for bs in (1, 32):
        prompts = [b.tok_encode(p) for p in work["prompts"][:bs]]
        rows[f"LMDeploy|{bs}"] = bs * new / timed(lambda p=prompts: b.pipe(p, gen_config=gc, do_preprocess=False),
                                                  lambda: None)
    lreqs = [LoglikelihoodRequest(q, o) for q in work["questions"] for o in work["options"]]
    lik = [r.logprob for r in b.loglikelihood(lreqs)]
    return {"decode": rows, "likelihood": lik, "version": b.identity().get("engine", "")}


ENGINES = {"hf": run_hf, "vllm": run_vllm, "lmdeploy": run_lmdeploy}


def worker(engine: str, folder: Path, work_file: Path, new: int, tiny: bool, out: Path) -> None:
    work = json.loads(work_file.read_text(encoding="utf-8"))
    out.write_text(json.dumps(ENGINES[engine](folder, work, new, tiny)), encoding="utf-8")


def spawn(engine: str, folder: Path, work_file: Path, new: int, tiny: bool, tmp: Path) -> dict:
    out = tmp / f"{engine}.json"
    cmd = [sys.executable, __file__, "--worker", engine, "--folder", str(folder), "--work-file", str(work_file),
           "--new-tokens", str(new), "--worker-out", str(out)] + (["--tiny"] if tiny else [])
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=ENGINE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {ENGINE_TIMEOUT_S} s"}
    if r.returncode != 0 or not out.is_file():
        tail = [line for line in (r.stderr or r.stdout).splitlines() if line.strip()]
        return {"error": (tail[-1] if tail else f"exit {r.returncode}")[:300]}
    res = json.loads(out.read_text(encoding="utf-8"))
    res["wall_s"] = time.perf_counter() - t0
    return res


def agreement(ref: list[float], other: list[float]) -> tuple[float, float]:
    same = sum(max(range(4), key=lambda k: ref[i + k]) == max(range(4), key=lambda k: other[i + k])
               for i in range(0, len(ref), 4)) / (len(ref) // 4)
    return same, statistics.median(abs(a - b) for a, b in zip(ref, other, strict=True))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny model on CPU (smoke test)")
    ap.add_argument("--new-tokens", type=int, default=None, help="new tokens per row (default 128; tiny 16)")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--questions", type=int, default=None, help="likelihood questions (default 300; tiny 20)")
    ap.add_argument("--bandwidth", type=float, default=None, help="GPU memory bandwidth in GB/s (roofline)")
    ap.add_argument("--engines", default="hf,vllm,lmdeploy")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--worker", choices=list(ENGINES), help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--work-file", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    new = args.new_tokens or (16 if args.tiny else 128)
    if args.worker:
        worker(args.worker, args.folder, args.work_file, new, args.tiny, args.worker_out)
        return 0

    import torch

    if not args.tiny and not torch.cuda.is_available():
        print("no CUDA device: use --tiny for a CPU smoke test", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    gpu = torch.cuda.get_device_name(0) if not args.tiny else "cpu"
    tmp = Path(tempfile.mkdtemp(prefix="luopan-gpu-check-"))
    folder = tmp / "model"
    vocab, weight_bytes = save_model(folder, args.tiny)
    work = workload(vocab, args.prompt_tokens, args.questions or (20 if args.tiny else 300))
    work_file = tmp / "work.json"
    work_file.write_text(json.dumps(work), encoding="utf-8")
    results = {}
    for engine in [e for e in args.engines.split(",") if e]:
        results[engine] = spawn(engine, folder, work_file, new, args.tiny, tmp)
        res = results[engine]
        print(f"{engine}: " + (res["error"] if "error" in res else f"done in {res['wall_s']:.0f} s"), flush=True)

    hf = results.get("hf", {})
    plain = hf.get("decode", {})
    bw = args.bandwidth or next((v for k, v in BANDWIDTH_GBS.items() if k in gpu), None)
    roof = bw * 1e9 / weight_bytes if bw else None
    print(f"\ndevice: {gpu}; model: {weight_bytes / 1e9:.2f} GB of weights "
          f"({'tiny, float32' if args.tiny else 'Llama-3.2-1B shape, bfloat16'}); prompts {args.prompt_tokens} "
          f"tokens, {new} new tokens; {len(work['questions'])} likelihood questions x 4 options")
    print("\n| engine | decode batch 1 (tok/s) | vs roofline | decode batch 32 (tok/s) | vs model.generate "
          "| same arg-max as hf | median abs delta log-prob |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    table = []
    for engine, res in results.items():
        if "error" in res:
            table.append([engine, "-", "-", "-", "-", "-", f"not run: {res['error']}"])
            continue
        for name in sorted({k.split("|")[0] for k in res["decode"]}, key=lambda n: (n != "model.generate", n)):
            b1, b32 = res["decode"].get(f"{name}|1"), res["decode"].get(f"{name}|32")
            base = plain.get("model.generate|32")
            same = median = "-"
            if name == "luopan hf":
                same = median = "(reference)"
            elif name in ("vLLM", "LMDeploy") and hf.get("likelihood") and res.get("likelihood"):
                s, m = agreement(hf["likelihood"], res["likelihood"])
                same, median = f"{s:.1%}", f"{m:.2g}"
            table.append([name, f"{b1:,.0f}" if b1 else "-", f"{b1 / roof:.0%}" if b1 and roof else "-",
                          f"{b32:,.0f}" if b32 else "-", f"{b32 / base:.2f}x" if b32 and base else "-", same, median])
    for row in table:
        print("| " + " | ".join(row) + " |")
    if roof:
        print(f"\nroofline at batch 1: {bw:,.0f} GB/s / {weight_bytes / 1e9:.2f} GB = {roof:,.0f} tokens/s")
    print(f"whole check: {time.perf_counter() - t_start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"device": gpu, "weight_bytes": weight_bytes, "roofline": roof,
                                         "results": results, "table": table}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
