"""Side-by-side chat: the Compare tab's one copy of the weights with a mixed-adapter batch, against two copies
generating one after the other.

    python bench/compare.py [--turns 8] [--max-new-tokens 48]

The baseline is what a notebook does: the base model, and a second copy with the LoRA adapter (PeftModel), each
answering the message in its own generate() call. The studio side is the Compare tab's code path (models.load,
models.with_adapters, decode.stream): one copy of the base, one generate() call whose two rows name `__base__` and
the adapter, streamed token by token. The adapter is a LoRA (r=16, all linear layers) with random non-zero weights,
so the two sides really differ. Each side runs in its own process (peak memory is per process). Same prompts, same
sampling settings, same token limit; answers per second count the answers finished. Prints ratios from this run.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_adapter(folder: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from studio.inference.models import embedded_folder

    model = AutoModelForCausalLM.from_pretrained(embedded_folder())
    get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
    ).save_pretrained(folder)


def prompts(turns: int) -> list[dict]:
    lines = (ROOT / "assets" / "prompts" / "bank.jsonl").read_text().splitlines()[:turns]
    return [{"text": json.loads(line)["prompt"], "system": "", "context": []} for line in lines]


def run_side(side: str, adapter: str, turns: int, max_new_tokens: int) -> dict:
    import torch
    from transformers import set_seed

    from studio.inference import models
    from studio.inference.decode import GenerationParams, chat_texts, stream

    params = GenerationParams(k=1, max_new_tokens=max_new_tokens)
    loaded = models.load("embedded")
    tokenizer = loaded.tokenizer
    if side == "studio":
        names = models.with_adapters(loaded, [None, adapter])
    else:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        # The second copy in the precision the first computes in (bf16 on a GPU or a CPU with AMX, else float32).
        aligned = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(loaded.path, dtype=loaded.model.dtype), adapter
        ).eval()
    set_seed(0)
    tokens, started = 0, None
    for i, prompt in enumerate([prompts(1)[0]] + prompts(turns)):  # the first turn warms up, untimed
        if i == 1:
            started = time.perf_counter()
        if side == "studio":
            for texts in stream(loaded, [prompt, prompt], params, names):
                pass
            counted = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        else:
            inputs = tokenizer(chat_texts(tokenizer, [prompt]), return_tensors="pt", add_special_tokens=False)
            counted = []
            for model in (loaded.model, aligned):
                with torch.inference_mode():
                    out = model.generate(
                        **inputs,
                        do_sample=True,
                        temperature=params.temperature,
                        top_p=params.top_p,
                        max_new_tokens=max_new_tokens,
                        pad_token_id=tokenizer.eos_token_id,
                    )
                counted.append(out.shape[1] - inputs["input_ids"].shape[1])
        if i > 0:
            tokens += sum(counted)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "turns": turns,
        "tokens": tokens,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "end_rss_mb": psutil.Process().memory_info().rss / 2**20,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--side", choices=["naive", "studio"], help=argparse.SUPPRESS)
    parser.add_argument("--adapter", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args.adapter, args.turns, args.max_new_tokens)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        adapter = Path(tmp) / "adapter"
        make_adapter(adapter)
        results = {}
        for side in ("naive", "studio"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--side",
                    side,
                    "--adapter",
                    str(adapter),
                    "--turns",
                    str(args.turns),
                    "--max-new-tokens",
                    str(args.max_new_tokens),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            results[side] = json.loads(out.stdout.strip().splitlines()[-1])
    for side, label in (("naive", "two copies, one generate() each"), ("studio", "one copy, mixed-adapter batch")):
        r = results[side]
        print(
            f"{label:34s} {r['turns']} turns in {r['seconds']:.1f} s: {r['seconds'] / r['turns']:.2f} s/turn, "
            f"{r['tokens'] / r['seconds']:.1f} tokens/s, peak RSS {r['peak_rss_mb']:.0f} MB, after the turns "
            f"{r['end_rss_mb']:.0f} MB"
        )
    naive, studio = results["naive"], results["studio"]
    print(
        f"seconds per turn: {naive['seconds'] / studio['seconds']:.2f}x faster; tokens/s: "
        f"{(studio['tokens'] / studio['seconds']) / (naive['tokens'] / naive['seconds']):.2f}x; peak memory: "
        f"{studio['peak_rss_mb'] / naive['peak_rss_mb']:.2f}x, after the turns "
        f"{studio['end_rss_mb'] / naive['end_rss_mb']:.2f}x"
    )


if __name__ == "__main__":
    main()
