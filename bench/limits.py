"""This machine's physical limits, measured in the run that uses them: dense matrix-product FLOP/s (fp32, or the
precision a benchmark computes in: bf16 runs on AMX units where a CPU has them) with the threads torch uses, and memory
bandwidth (a large tensor copy). The benchmarks divide what they reach by these.

    python bench/limits.py
"""

import time


def _best(run, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_flops(size: int = 2048, repeats: int = 5, device: str = "cpu", dtype=None) -> float:
    """FLOP/s of one square matrix product (2 * size^3 FLOPs), the best of `repeats` (after a warm-up)."""
    import torch

    dtype = dtype or torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def run():
        torch.mm(a, b)
        if device != "cpu":
            torch.cuda.synchronize()

    run()
    return 2 * size**3 / _best(run, repeats)


def memory_bandwidth(megabytes: int = 512, repeats: int = 5, device: str = "cpu") -> float:
    """Bytes/s of a copy from one large buffer to another (each byte read once and written once: 2 x the size),
    the best of `repeats`; far larger than the caches, so it is the memory's rate."""
    import torch

    source = torch.ones(megabytes * 2**20 // 4, device=device)
    target = torch.empty_like(source)

    def run():
        target.copy_(source)
        if device != "cpu":
            torch.cuda.synchronize()

    run()
    return 2 * source.numel() * 4 / _best(run, repeats)


def describe(device: str = "cpu", dtype=None) -> tuple[float, float, str]:
    """The matmul rate in `dtype` (float32 unless told: the precision the benchmark's model computes in) and the
    memory bandwidth, with a line that says so."""
    import torch

    dtype = dtype or torch.float32
    flops, bandwidth = matmul_flops(device=device, dtype=dtype), memory_bandwidth(device=device)
    where = f"{device}, {torch.get_num_threads()} torch threads" if device == "cpu" else device
    name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))
    return (
        flops,
        bandwidth,
        (
            f"measured now ({where}): {name} matmul {flops / 1e9:.0f} GFLOP/s (2048^3, best of 5), "
            f"memory copy {bandwidth / 1e9:.1f} GB/s (512 MB, read + write)"
        ),
    )


if __name__ == "__main__":
    import torch

    print(describe()[2])
    print(describe(dtype=torch.bfloat16)[2])
