#!/usr/bin/env python3
"""PyTorch's bf16 matmul rate at the training shapes (F.linear on bf16 inputs, fp32 result), to set
beside ft's `bench/bench_gemm --benchmark_filter=ft_bf16w_autocast` on the same machine.

  python3 bench/torch_matmul.py 1 4 16        # thread counts (default 1 4 16)

Not part of CI (needs torch).
"""
import sys, time

import torch

for t in [int(x) for x in sys.argv[1:]] or [1, 4, 16]:
    torch.set_num_threads(t)
    for (M, K, N, name) in [(1024, 2048, 8192, "1b_up_fwd"), (1024, 8192, 2048, "1b_up_dX"),
                            (1024, 576, 1536, "up_fwd"), (1024, 576, 49152, "lm_head")]:
        x = torch.randn(M, K)
        w = torch.randn(N, K).bfloat16()
        f = lambda: torch.nn.functional.linear(x.bfloat16(), w).float()
        for _ in range(3):
            f()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.5:
            f()
            n += 1
        dt = (time.perf_counter() - t0) / n
        print(f"torch t{t} {name} {M}x{K}x{N}: {dt * 1e3:.2f} ms {2 * M * N * K / dt / 1e9:.0f} GFLOP/s", flush=True)
