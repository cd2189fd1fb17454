"""What sharing a pass over the images saves for a vision model's plans (painters evaluate-images):
every plan of the demo's vision grid scored in one shared pass (painters.shared_pass) against the same
plans one after another under surgery, with the layer calls each makes.

    python benchmarks/vision_shared_pass.py [--layers 6] [--hidden 64] [--threads 1]

A tiny ViT (random weights: time does not depend on them) on scikit-learn's digits, batch 256, the
plans of the demo's `vision` grid (config/config.yaml). Run it alone: two torch processes on 2 cores
slow each other down many times over.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from painters import surgery, sweep, trie
from painters.layershuffle import vision
from painters.plan import parse
from painters.vision_sweep import top_k_accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = sweep.read_config([Path(__file__).resolve().parents[1] / "config/config.yaml"])
    grid = next(g for g in config["sweeps"] if g.get("name") == "vision")
    plans = [parse("baseline"), *sweep.plans_of_grid(grid, "vision", "vit", args.layers)]
    data = vision.load_digits(0)
    model = vision.tiny_vit(data, layers=args.layers, hidden=args.hidden).eval()
    schedules = [plan.schedule(args.layers) for plan in plans]
    print(f"tiny ViT {args.layers} x {args.hidden}, {len(data.test)} test images, {len(plans)} plans, {args.threads} thread(s)")
    print(f"layer calls per image: {trie.layer_calls(schedules)} plan by plan, {trie.distinct_layer_calls(schedules)} shared")

    top_k_accuracies(model, plans[:2], data.test)  # warm up
    started = time.perf_counter()
    shared = top_k_accuracies(model, plans, data.test)
    shared_seconds = time.perf_counter() - started
    started = time.perf_counter()
    alone = []
    with torch.no_grad():
        for plan in plans:
            with surgery.apply(model, plan):
                logits = torch.cat([model(pixel_values=data.test.images(range(i, min(i + 256, len(data.test))))).logits
                                    for i in range(0, len(data.test), 256)])
            alone.append(int((logits.argmax(-1) == data.test.labels).sum()) / len(data.test))
    alone_seconds = time.perf_counter() - started
    assert [s["acc"] for s in shared] == alone, "the shared pass and plan by plan disagree"
    print(f"shared pass: {shared_seconds:.2f} s; plan by plan: {alone_seconds:.2f} s ({alone_seconds / shared_seconds:.2f}x); "
          "top-1 equal for every plan")


if __name__ == "__main__":
    main()
