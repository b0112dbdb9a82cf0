"""Throughput of the hf backend against plain transformers, on a random-weight Llama-3.2-1B-shaped model.

    python benchmarks/gpu_hf_throughput.py            # CUDA, bfloat16, a few minutes of GPU time
    python benchmarks/gpu_hf_throughput.py --tiny     # CPU smoke test: a tiny model, seconds

Rows (tokens per second; generation counts new tokens, likelihood counts input tokens):

* generate, batch 1 and 32: ``model.generate(do_sample=False)`` (dynamic cache), ``model.generate`` with a static
  cache and ``torch.compile`` (transformers' own fast path), the backend's decode loop (``compile: false``), and
  the backend with ``compile: true`` (static KV cache + compiled decode step with CUDA graphs).
* likelihood: 4-option questions with single-token answers, a plain forward pass (full logits, log-softmax,
  gather) against the backend (one pass per question, vocabulary projection only at the scored position).

Random weights: EOS is ignored so every row generates exactly ``--new-tokens`` tokens. The batch-1 decode
roofline is the GPU's memory bandwidth divided by the bytes of weights read per token (``--bandwidth`` in GB/s;
by default looked up from the GPU's name).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

BANDWIDTH_GBS = {"H200": 4800, "H100": 3350, "A100": 2039, "L40S": 864, "A10": 600, "L4": 300}


def make_tokenizer(vocab: int):
    """A word-level tokenizer over the numbers 0..vocab-1: prompts are strings of numbers."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({str(i): i for i in range(vocab)}, unk_token="0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="0", pad_token="0", eos_token="1")


def make_model(tiny: bool, device, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if tiny:
        cfg = LlamaConfig(
            hidden_size=128,
            intermediate_size=384,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            vocab_size=2048,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
        )
    else:  # Llama-3.2-1B's shape
        cfg = LlamaConfig(
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=64,
            vocab_size=128256,
            max_position_embeddings=131072,
            rope_theta=500000.0,
            tie_word_embeddings=True,
            rms_norm_eps=1e-5,
        )
    cfg.eos_token_id = None
    cfg.pad_token_id = 0
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat: int = 1) -> float:
    fn()  # warm-up (and compilation)
    sync(device)
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - t) / repeat


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="a tiny model on CPU (smoke test)")
    ap.add_argument("--new-tokens", type=int, default=None, help="new tokens per row (default 256; tiny 16)")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--questions", type=int, default=None, help="likelihood questions (default 256; tiny 16)")
    ap.add_argument("--bandwidth", type=float, default=None, help="GPU memory bandwidth in GB/s (roofline)")
    ap.add_argument(
        "--skip-hf-compile", action="store_true", help="skip model.generate with static cache+compile"
    )
    args = ap.parse_args(argv)

    import torch

    from luopan.types import GenerationConfig, GenerationRequest, LoglikelihoodRequest
    from luopan_hf.backend import HFBackend
    from luopan_hf.model import wrap_model

    if args.tiny:
        device, dtype = torch.device("cpu"), torch.float32
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: use --tiny for a CPU smoke test", file=sys.stderr)
            return 2
        device, dtype = torch.device("cuda"), torch.bfloat16
    new = args.new_tokens or (16 if args.tiny else 256)
    n_q = args.questions or (16 if args.tiny else 256)
    model = make_model(args.tiny, device, dtype)
    vocab = model.config.vocab_size
    tok = make_tokenizer(min(vocab, 4096))
    rng = random.Random(0)

    def text(n: int) -> str:
        return " ".join(str(rng.randrange(2, min(vocab, 4096))) for _ in range(n))

    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    bw = args.bandwidth or next((v for k, v in BANDWIDTH_GBS.items() if k in gpu), None)
    print(
        f"device: {gpu}; model: {sum(p.numel() for p in model.parameters()) / 1e6:,.1f}M parameters, "
        f"{weight_bytes / 1e9:.2f} GB in {dtype}; prompts {args.prompt_tokens} tokens, {new} new tokens"
    )

    def backend(compile: bool, batch_size: int) -> HFBackend:
        b = HFBackend(
            path=".",
            device=device.type,
            dtype="float32" if args.tiny else "bfloat16",
            batch_size=batch_size,
            compile=compile,
        )
        b.lm = wrap_model(model, tok, batch_size=batch_size, compile=compile, max_length=4096)
        b.lm.static_decode = compile  # on CPU (--tiny) this runs the static-cache loop without torch.compile
        b.ignore_eos = True
        return b

    rows: list[tuple[str, str, float]] = []
    cfg = GenerationConfig(max_new_tokens=new)
    for bs in [int(x) for x in args.batches.split(",")]:
        prompts = [text(args.prompt_tokens) for _ in range(bs)]
        ids = torch.tensor([[int(w) for w in p.split()] for p in prompts], device=device)
        total = bs * new

        def plain(ids=ids):
            model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=new,
                min_new_tokens=new,
            )

        rows.append(("generate", f"model.generate, batch {bs}", total / timed(plain, device)))
        if not args.skip_hf_compile and device.type == "cuda":

            def plain_static(ids=ids):
                model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=False,
                    max_new_tokens=new,
                    min_new_tokens=new,
                    cache_implementation="static",
                )

            rows.append(
                (
                    "generate",
                    f"model.generate static+compile, batch {bs}",
                    total / timed(plain_static, device),
                )
            )
        reqs = [GenerationRequest(prompt=p, config=cfg) for p in prompts]
        for compile in (False, True):
            b = backend(compile, bs)
            out = b.generate(reqs)
            assert all(o.completion_tokens == new for o in out), [o.completion_tokens for o in out]
            name = f"luopan hf{' compile' if compile else ''}, batch {bs}"
            rows.append(("generate", name, total / timed(lambda b=b, reqs=reqs: b.generate(reqs), device)))

    # likelihood: questions of ~prompt-tokens tokens, 4 single-token options each
    qs = [text(args.prompt_tokens) for _ in range(n_q)]
    lreqs = [LoglikelihoodRequest(q, f" {c}") for q in qs for c in (5, 6, 7, 8)]
    tokens = sum(len(q.split()) for q in qs)
    b = backend(False, 8 if args.tiny else 32)

    def plain_ll():
        with torch.inference_mode():
            for k in range(0, len(qs), b.lm.rows_per_batch(0)):
                chunk = qs[k : k + b.lm.rows_per_batch(0)]
                x = torch.tensor([[int(w) for w in q.split()] for q in chunk], device=device)
                logp = torch.log_softmax(model(input_ids=x).logits.float(), dim=-1)
                logp[:, -1, 5:9].sum().item()

    rows.append(("likelihood", "plain forward + full log-softmax", tokens / timed(plain_ll, device)))
    rows.append(("likelihood", "luopan hf", tokens / timed(lambda: b.loglikelihood(lreqs), device)))

    base: dict[tuple[str, str], float] = {}
    print("\n| task | how | tokens/s | vs plain |\n|---|---|---:|---:|")
    for task, name, tps in rows:
        key = (task, name.rsplit("batch", 1)[-1] if "batch" in name else "")
        base.setdefault(key, tps)  # the first row of each (task, batch) is the plain baseline
        print(f"| {task} | {name} | {tps:,.0f} | {tps / base[key]:.2f}x |")
    if bw:
        roof = bw * 1e9 / weight_bytes
        best1 = max((tps for t, n, tps in rows if t == "generate" and n.endswith("batch 1")), default=0)
        print(
            f"\nbatch-1 decode roofline ({bw:,.0f} GB/s / {weight_bytes / 1e9:.2f} GB): {roof:,.0f} tokens/s; "
            f"best batch-1 here: {best1:,.0f} ({best1 / roof:.0%})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
