"""What the LayerShuffle study's jobs cost on this machine, in process (no start-up): training steps of
each variant, the evaluation grid, merging and scoring, the ensemble, and a UMAP of layer outputs.

    python benchmarks/layershuffle_costs.py [--steps 200] [--threads 1]

The demo's sizes: a tiny ViT of 6 layers x 64 on scikit-learn's digits, batch 64. Run it alone:
two torch processes on 2 cores slow each other down many times over.
"""

from __future__ import annotations

import argparse
import time

import torch

from painters.layershuffle import layer_umap, merging, study, training, vision
from painters.plan import parse


def timed(function):
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = vision.load_digits(0)
    print(f"tiny ViT 6 x 64 on digits ({len(data.train)} training, {len(data.test)} test images), batch 64, "
          f"{args.threads} thread(s)")

    trained = {}
    for variant in training.VARIANTS:
        model = vision.tiny_vit(data, layers=6, hidden=64, seed=0)
        settings = training.TrainSettings(variant=variant, seed=0, steps=args.steps, batch_size=64, warmup_steps=20,
                                          position_loss_weight=0.1)
        (modules, _), seconds = timed(lambda: training.train(model, data.train, settings, log=lambda _: None))
        trained[variant] = (model, modules)
        print(f"train {variant:22s} {1000 * seconds / args.steps:6.1f} ms/step")

    grid = [parse(key) for key in study.evaluation_plans(
        {"evaluation": {"order_seeds": [0, 1, 2, 3, 4], "pruned": [1, 2, 3], "prune_seeds": [0, 1, 2],
                        "plans": [f"skip_layer-L{i}" for i in range(6)] + [f"switch-L{i}" for i in range(5)]}}, 6)]
    model, modules = trained["layershuffle"]
    _, seconds = timed(lambda: training.accuracies(model, modules, grid, data.test))
    print(f"evaluation grid: {len(grid)} plans x {len(data.test)} images in {seconds:.2f} s")

    sources = [trained["layershuffle"][0]] + [vision.tiny_vit(data, layers=6, hidden=64, seed=s) for s in (1, 2)]
    orders = [parse("baseline")] + [parse(f"shuffle_all-S{s}") for s in range(5)]
    assignments = merging.merge_assignments(3, 6, 10, 0)
    _, seconds = timed(lambda: [training.accuracies(*merging.merge(sources, a), orders, data.test) for a in assignments])
    print(f"10 merges of 3 models, each scored under {len(orders)} orders: {seconds:.2f} s")
    _, seconds = timed(lambda: merging.ensemble_accuracies(sources, [None] * 3, orders, data.test))
    print(f"ensemble of 3 models under {len(orders)} orders: {seconds:.2f} s")

    images = data.test.images(range(200))
    (labels, outputs), seconds = timed(lambda: layer_umap.collect(model, modules, orders[1:4], images))
    print(f"layer outputs of 200 images in 3 orders ({len(labels)} points): {seconds:.2f} s")
    _, first = timed(lambda: layer_umap.embed(outputs, seed=0))
    _, second = timed(lambda: layer_umap.embed(outputs, seed=1))
    print(f"UMAP of {len(labels)} points: first fit in this process {first:.1f} s (compiling or loading umap's numba "
          f"functions), second {second:.1f} s")


if __name__ == "__main__":
    main()
