#!/usr/bin/env python
"""Time Matrix NMS (and greedy mask NMS, for comparison) on random candidate masks.

    python projects/SOLOv2/benchmark_matrix_nms.py                       # 500 of 200x336, CPU
    python projects/SOLOv2/benchmark_matrix_nms.py --device cuda --num 500

The default is SOLOv2's worst case at COCO scale: NMS_PRE = 500 candidates, masks at 1/4 of an
800x1344 padded input, 80 classes. Prints the median time over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from segtron.projects.solov2 import mask_nms, matrix_nms


def random_candidates(num: int, height: int, width: int, num_classes: int, device: str):
    """Random rectangles (many overlapping), classes, and decreasing scores."""
    g = torch.Generator().manual_seed(0)
    y0 = torch.randint(0, height // 2, (num,), generator=g)
    x0 = torch.randint(0, width // 2, (num,), generator=g)
    h = torch.randint(8, height // 2, (num,), generator=g)
    w = torch.randint(8, width // 2, (num,), generator=g)
    ys, xs = torch.arange(height), torch.arange(width)
    rows = (ys >= y0[:, None]) & (ys < (y0 + h)[:, None])
    cols = (xs >= x0[:, None]) & (xs < (x0 + w)[:, None])
    masks = (rows[:, :, None] & cols[:, None, :]).to(device)
    labels = torch.randint(0, num_classes, (num,), generator=g).to(device)
    scores = torch.rand(num, generator=g).sort(descending=True).values.to(device)
    return labels, masks, masks.flatten(1).sum(1).float(), scores


def median_ms(fn, repeats: int, device: str) -> float:
    """Median wall time of `fn` in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    """Parse the arguments, run the timings and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=500, help="candidates")
    parser.add_argument("--height", type=int, default=200)
    parser.add_argument("--width", type=int, default=336)
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--skip-mask-nms", action="store_true", help="time Matrix NMS only")
    args = parser.parse_args()
    labels, masks, areas, scores = random_candidates(
        args.num, args.height, args.width, args.num_classes, args.device
    )
    print(
        f"{args.num} candidates, {args.height}x{args.width} masks, {args.num_classes} classes, "
        f"{args.device}, torch threads {torch.get_num_threads()}"
    )
    for kernel in ("gaussian", "linear"):
        ms = median_ms(
            lambda kernel=kernel: matrix_nms(labels, masks, areas, scores, 2.0, kernel),
            args.repeats,
            args.device,
        )
        print(f"matrix_nms ({kernel}): {ms:.1f} ms")
    if not args.skip_mask_nms:
        ms = median_ms(
            lambda: mask_nms(labels, masks, areas, scores, 0.5), args.repeats, args.device
        )
        print(f"mask_nms (greedy, for comparison): {ms:.1f} ms")


if __name__ == "__main__":
    main()
