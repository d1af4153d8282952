"""Candidates per second: the studio's batched generation against a naive loop, same model, prompts and length.

    python bench/generate.py [--prompts 16] [--k 4] [--max-new-tokens 48] [--batch-size 8] [--no-naive]
                             [--server {none,f16,q8_0}] [--slots 16]

The naive loop is what a notebook does: plain transformers, one prompt and one sample per generate() call, in the
checkpoint's float32 (the studio computes in bf16 on a GPU or a CPU with AMX: models.inference_device_and_dtype).
Both sides sample with the same temperature, top_p and token limit, on the same prompts; the studio side also
saves every candidate in a fresh SQLite database, as the app does. Prints the ratio measured in this run, and the
fraction of the decode bound: a decode step must read every weight once, so with B rows in a batch the machine can
produce at most B x (memory bandwidth / weight bytes) new tokens per second (bandwidth measured in this run,
bench/limits.py). The studio's time includes reading the prompts and saving, and rows leave the batch as they finish,
so the fraction is a lower bound of how close the decode steps themselves come. With many rows a CPU step is
bound by its matrix products rather than by memory (2 FLOPs per weight per row): the roofline, the slower of the
two, is printed too.

With --server f16 (or q8_0), the same candidates through an inference server: llama.cpp's llama-server (built from
source by tests/llama_server.py) serving the embedded model exported to GGUF by the studio, `--slots` sequences
decoded together (continuous batching), the studio sending its requests as the Generate tab does (n=k, many in
flight). Its decode bound uses the GGUF's weight bytes at the same measured bandwidth.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from bench.limits import describe  # noqa: E402
from studio.core.store import Store  # noqa: E402
from studio.data.candidates import generate_candidates  # noqa: E402
from studio.data.prompts import get_prompts, install_builtin_sets  # noqa: E402
from studio.inference import models  # noqa: E402
from studio.inference.decode import GenerationParams, chat_texts


def naive(folder: str, prompts: list[dict], params: GenerationParams) -> tuple[int, int]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    torch.manual_seed(0)
    candidates = tokens = 0
    for prompt in prompts:
        inputs = tokenizer(chat_texts(tokenizer, [prompt]), return_tensors="pt", add_special_tokens=False)
        for _ in range(params.k):
            with torch.inference_mode():
                out = model.generate(
                    **inputs,
                    do_sample=True,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    max_new_tokens=params.max_new_tokens,
                    pad_token_id=tokenizer.eos_token_id,
                )
            candidates += 1
            tokens += out.shape[1] - inputs["input_ids"].shape[1]
    return candidates, tokens


def served(store, prompts, params, kind: str, slots: int, bandwidth: float) -> float:
    """Candidates per second through llama-server serving the embedded model as `kind` GGUF; prints its line."""
    import gguf

    from studio.inference import servers
    from studio.shipping import gguf_export
    from tests import llama_server

    binary = llama_server.server_binary()
    if binary is None:
        print("server: skipped (PyPI out of reach: llama.cpp's source cannot be fetched)")
        return 0.0
    folder = Path(store.path).parent
    path = gguf_export.write_gguf(models.embedded_folder(), folder / f"embedded-{kind}.gguf", kind)
    weight_bytes = sum(int(t.n_bytes) for t in gguf.GGUFReader(str(path)).tensors)
    threads = str(torch.get_num_threads())
    extra = ("--alias", "embedded", "-t", threads)
    with llama_server.serve(binary, path, *extra, slots=slots, context=slots * 1024) as url:
        servers.add(store, "bench", url)
        reference = servers.reference("bench", "embedded")
        generate_candidates(store, reference, prompts[:2], GenerationParams(k=1, max_new_tokens=4))  # warm-up
        start = time.perf_counter()
        result = generate_candidates(store, reference, prompts, params)
        seconds = time.perf_counter() - start
    texts = [r["text"] for r in store.query("SELECT text FROM responses WHERE model = ? ORDER BY id", (reference,))]
    tokenizer = models.load("embedded").tokenizer
    this_run = texts[-result.responses_added :]
    new_tokens = sum(len(ids) for ids in tokenizer(this_run, add_special_tokens=False)["input_ids"])
    rows = min(slots, len(prompts) * params.k)
    bound = rows * bandwidth / weight_bytes
    rate = result.responses_added / seconds
    print(
        f"server (llama-server, {kind} GGUF, {slots} slots, {threads} threads): {result.responses_added} candidates "
        f"in {seconds:7.1f} s = {rate:6.2f} candidates/s, {new_tokens / seconds:.0f} new tokens/s; decode bound "
        f"(memory, {weight_bytes / 2**20:.0f} MiB of weights, {rows} rows): {bound:.0f} tokens/s -> "
        f"{new_tokens / seconds / bound:.0%}"
    )
    return rate


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-naive", action="store_true", help="leave out the naive loop (slow at long answers)")
    parser.add_argument("--server", choices=["none", "f16", "q8_0"], default="none")
    parser.add_argument("--slots", type=int, default=16, help="llama-server's parallel sequences (-np)")
    args = parser.parse_args()
    params = GenerationParams(k=args.k, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=0)

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        install_builtin_sets(store)
        prompts = get_prompts(store, "bank", limit=args.prompts)
        loaded = models.load("embedded")
        print(
            f"model: embedded ({loaded.path}), {loaded.device} {loaded.dtype}, torch threads "
            f"{torch.get_num_threads()}; {len(prompts)} prompts x k={params.k}, max {params.max_new_tokens} "
            f"new tokens, temperature {params.temperature}, top_p {params.top_p}"
        )
        generate_candidates(store, "embedded", prompts[:2], GenerationParams(k=1, max_new_tokens=4))  # warm-up

        if not args.no_naive:
            start = time.perf_counter()
            count, tokens = naive(loaded.path, prompts, params)
            naive_s = time.perf_counter() - start
            print(
                f"naive (fp32)   : {count} candidates in {naive_s:7.1f} s = {count / naive_s:6.2f} candidates/s "
                f"({tokens / naive_s:.0f} new tokens/s)"
            )

        start = time.perf_counter()
        result = generate_candidates(store, "embedded", prompts, params)
        studio_s = time.perf_counter() - start
        print(
            f"studio ({loaded.dtype}): {result.responses_added} candidates in {studio_s:7.1f} s = "
            f"{result.responses_added / studio_s:6.2f} candidates/s (batch of {params.batch_size} prompts x k)"
        )
        if not args.no_naive:
            print(
                "ratio (studio / naive candidates per second): "
                f"{(result.responses_added / studio_s) / (count / naive_s):.2f}x"
            )
        texts = [
            r["text"]
            for r in store.query("SELECT text FROM responses ORDER BY id DESC LIMIT ?", (result.responses_added,))
        ]  # this run's (after the warm-up's)
        new_tokens = sum(len(ids) for ids in loaded.tokenizer(texts, add_special_tokens=False)["input_ids"])
        weight_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
        weights = sum(p.numel() for p in loaded.model.parameters())
        rows = min(params.batch_size, len(prompts)) * params.k
        flops, bandwidth, measured = describe(
            "cuda" if str(loaded.device).startswith("cuda") else "cpu", loaded.model.dtype
        )  # the matmul rate in the precision it decodes in
        memory_bound = rows * bandwidth / weight_bytes  # the decode bound: every weight read once a step
        # A step also costs 2 FLOPs per weight per row; with many rows on a CPU that, not memory, may set the floor.
        step = max(weight_bytes / bandwidth, rows * 2 * weights / flops)
        roofline = rows / step
        rate = new_tokens / studio_s
        print(f"{measured}; weights {weight_bytes / 2**20:.0f} MiB")
        print(
            f"studio: {rate:.0f} new tokens/s (tokens of the saved answers); decode bound (memory) at {rows} rows: "
            f"{memory_bound:.0f} tokens/s -> {rate / memory_bound:.0%}; roofline (memory or matmul, whichever is "
            f"slower per step): {roofline:.0f} tokens/s -> {rate / roofline:.0%}"
        )
        if args.server != "none":
            rate = served(store, prompts, params, args.server, args.slots, bandwidth)
            if rate:
                print(
                    "ratio (server / studio's in-process candidates per second): "
                    f"{rate / (result.responses_added / studio_s):.2f}x"
                )


if __name__ == "__main__":
    main()
