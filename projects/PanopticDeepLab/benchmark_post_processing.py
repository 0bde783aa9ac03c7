#!/usr/bin/env python
"""Time Panoptic-DeepLab's post-processing on one synthetic Cityscapes-sized output.

    python projects/PanopticDeepLab/benchmark_post_processing.py                 # CPU, 1024x2048
    python projects/PanopticDeepLab/benchmark_post_processing.py --device cuda --instances 100

Builds a 19-class output (things 11-18, as Cityscapes) with ``--instances`` discs of thing
classes on stuff, a center heatmap with a Gaussian at each disc's center and offsets pointing
to it, then times `get_panoptic_segmentation` (the panoptic map) and `get_instance_predictions`
(masks, boxes and scores for AP) with the Cityscapes settings (threshold 0.1, NMS kernel 7,
top-k 200, stuff area 2048). Prints the median wall and process CPU time over ``--repeat``
runs after one warm-up (the CPU time of all threads: on a busy machine, the better measure).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from segtron.projects.panoptic_deeplab import get_instance_predictions, get_panoptic_segmentation

NUM_CLASSES = 19
THING_IDS = list(range(11, 19))
LABEL_DIVISOR = 1000


def make_outputs(
    height: int, width: int, num_instances: int, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(C, H, W) logits, (1, H, W) center heatmap and (2, H, W) offsets of a synthetic scene."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    labels = torch.where(ys < height / 2, 0, 1).expand(height, width).clone()  # two stuff classes
    center = torch.zeros(height, width)
    offsets = torch.zeros(2, height, width)
    for _ in range(num_instances):
        cy = float(torch.randint(40, height - 40, (1,), generator=g))
        cx = float(torch.randint(40, width - 40, (1,), generator=g))
        radius = float(torch.randint(15, 80, (1,), generator=g))
        cls = THING_IDS[int(torch.randint(len(THING_IDS), (1,), generator=g))]
        disc = (ys - cy) ** 2 + (xs - cx) ** 2 <= radius**2
        labels[disc] = cls
        offsets[0][disc] = (cy - ys).expand(height, width)[disc]
        offsets[1][disc] = (cx - xs).expand(height, width)[disc]
        center = torch.maximum(center, torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / 200.0))
    logits = F.one_hot(labels, NUM_CLASSES).permute(2, 0, 1).float() * 4
    logits += torch.randn(logits.shape, generator=g) * 0.5
    return logits.to(device), center[None].to(device), offsets.to(device)


def post_process(
    logits: torch.Tensor, center: torch.Tensor, offsets: torch.Tensor, instances: bool
) -> tuple[torch.Tensor, int]:
    """What `PanopticDeepLab` does per image after the network; returns the map and #things."""
    panoptic, _ = get_panoptic_segmentation(
        logits.argmax(dim=0, keepdim=True),
        center,
        offsets,
        thing_ids=THING_IDS,
        label_divisor=LABEL_DIVISOR,
        stuff_area=2048,
        void_label=-1,
        threshold=0.1,
        nms_kernel=7,
        top_k=200,
    )
    panoptic = panoptic[0]
    num = 0
    if instances:
        num = len(get_instance_predictions(panoptic, logits, center, THING_IDS, LABEL_DIVISOR))
    return panoptic, num


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    outputs = make_outputs(args.height, args.width, args.instances, device)
    print(
        f"{args.height}x{args.width}, {args.instances} instances, device {device}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    for instances in (False, True):
        wall, cpu = [], []
        for _ in range(args.repeat + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            panoptic, num = post_process(*outputs, instances=instances)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        segments = len(torch.unique(panoptic))
        what = "panoptic map + instances" if instances else "panoptic map"
        print(
            f"{what:>26}: {statistics.median(wall[1:]) * 1000:8.1f} ms wall, "
            f"{statistics.median(cpu[1:]) * 1000:8.1f} ms CPU (median of {args.repeat}; "
            f"{segments} segments incl. void" + (f", {num} instances)" if instances else ")")
        )


if __name__ == "__main__":
    main()
