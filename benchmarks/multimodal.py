"""Images and text on shapes: zero-shot compositional generalization, text retrieval, and text-to-image.

    python benchmarks/multimodal.py            # everything (about 80 minutes on 2 CPU cores, 65 of them the generator)
    python benchmarks/multimodal.py --quick    # a few steps a run: checks the script, not the numbers

Six colour-shape pairs (one per colour) never appear in training. Training data: 3,000 generated
32 px scenes of one shape, written as PNGs and a ``path,caption`` CSV (``omnivis datasets export
--captions`` does the same for the built-in set), with those pairs left out. Test data: 600 scenes of
another seed made only of the held-out pairs, and 600 of the seen ones.

- **Zero-shot**: ``omnivis train align --data train/captions.csv`` with defaults; each test image is
  given the closest of the 24 label texts "a COLOUR SHAPE". The reference is ``omnivis train
  classify`` with defaults on the same images labelled by their 18 seen pairs: a closed-set
  classifier cannot name a pair it never saw (top-1 0 on held-out pairs by construction); its colour
  and shape, read off its predicted pair, are reported too.
- **Retrieval**: the align bundle's recall@1/@5 text->image on its own held-out 20% (exact-caption
  hits), and on the held-out-pair test set with the 6 queries "a COLOUR SHAPE" (a hit: an image of
  that pair).
- **Text-to-image**: ``omnivis train generate --text --data train/captions.csv`` (diffusion, the
  fields of ``GENERATE_FIELDS``, defaults otherwise), 16 samples per prompt "a COLOUR SHAPE" for all
  24 pairs; a checker (``omnivis train classify`` with defaults on 3,000 scenes of all 24 pairs, its
  accuracy on real held-out scenes reported) says whether a sample shows the requested pair.

Results are printed and merged into benchmarks/results.json under ``multimodal``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from results_file import merge_results, read_results  # benchmarks/results_file.py

ROOT = Path(__file__).resolve().parent
UNSEEN = (("red", "circle"), ("green", "square"), ("blue", "triangle"), ("yellow", "star"), ("purple", "circle"),
          ("orange", "triangle"))
TRAIN_SCENES, TEST_SCENES, CHECKER_SCENES = 3000, 600, 3000
SAMPLES_PER_PROMPT = 16


def all_pairs() -> list[tuple[str, str]]:
    from omnivis.data.captions import CAPTION_SHAPES, SHAPE_COLOURS

    return [(c, s) for c in SHAPE_COLOURS for s in CAPTION_SHAPES]


def scenes(n: int, seed: int, keep: list[tuple[str, str]]):
    """``n`` one-shape scenes of exactly the pairs in ``keep``."""
    from omnivis.data.captions import make_captioned_shapes

    return make_captioned_shapes(n, 32, seed, exclude_pairs=[p for p in all_pairs() if p not in keep])


def pair_of(sample) -> str:
    colour, shape, _ = sample.objects[0]
    return f"{colour} {shape}"


def write_pair_folder(data, out: Path) -> Path:
    """A class folder whose classes are the scenes' colour-shape pairs."""
    from PIL import Image

    for sample in data.samples:
        folder = out / pair_of(sample).replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sample.source).save(folder / f"{Path(sample.name).name}.png")
    return out


def defaults(config_class, quick: bool, **fields):
    """``config_class`` with its own defaults (the command's), no progress bar; --quick: 5 steps."""
    from dataclasses import replace

    config = config_class(**fields)
    changes = {"progress": False, **({"epochs": 1, "max_steps": 5} if quick else {})}
    return replace(config, trainer=replace(config.trainer, **changes))


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, round(time.perf_counter() - start, 1)


def classify_pairs(bundle: Path, images: list) -> list[str]:
    """A pair classifier's answer for each image, as "colour shape"."""
    from omnivis.inference.classify import ClassifyPredictor

    predictor = ClassifyPredictor.from_dir(bundle)
    probs = predictor.predict_proba(images)
    return [predictor.classes[i].replace("_", " ") for i in probs.argmax(1).tolist()]


def scores(answers: list[str], data) -> dict:
    truth = [pair_of(s) for s in data.samples]
    pairs = [a == t for a, t in zip(answers, truth)]
    colours = [a.split()[0] == t.split()[0] for a, t in zip(answers, truth)]
    shapes = [a.split()[1] == t.split()[1] for a, t in zip(answers, truth)]
    return {"top1": round(float(np.mean(pairs)), 4), "colour": round(float(np.mean(colours)), 4),
            "shape": round(float(np.mean(shapes)), 4)}


def zeroshot_block(tmp: Path, train_csv: Path, tests: dict, quick: bool, grayscale: float | None = None) -> dict:
    from omnivis.inference.align import AlignPredictor, retrieval_recall
    from omnivis.tasks.align import AlignConfig, train_align
    from omnivis.tasks.classify import ClassifyConfig, train_classifier

    config = defaults(AlignConfig, quick, data=str(train_csv))
    if grayscale is not None:  # the ablation of the align default (0.5)
        from dataclasses import replace

        config = replace(config, augment=replace(config.augment, grayscale=grayscale))
    align, align_s = timed(train_align, config, tmp / "align")
    seen_pairs = [p for p in all_pairs() if p not in UNSEEN]
    closed_data = write_pair_folder(scenes(TRAIN_SCENES, 0, seen_pairs), tmp / "closed-data")
    closed, closed_s = timed(train_classifier, defaults(ClassifyConfig, quick, data=str(closed_data)), tmp / "closed")
    predictor = AlignPredictor.from_dir(align)
    labels = [f"a {c} {s}" for c, s in all_pairs()]
    block: dict = {"align_train_s": align_s, "closed_set_train_s": closed_s, "labels": len(labels)}
    for name, data in tests.items():
        probs = predictor.zeroshot_proba([s.source for s in data.samples], labels)
        answers = [labels[i].removeprefix("a ") for i in probs.argmax(1).tolist()]
        block[f"zeroshot_{name}"] = scores(answers, data)
        block[f"closed_set_{name}"] = scores(classify_pairs(closed, [s.source for s in data.samples]), data)
    metrics = json.loads((align / "metrics.json").read_text())
    block["heldout_text_to_image_recall@1"] = metrics.get("text_to_image_recall@1")
    block["heldout_text_to_image_recall@5"] = metrics.get("text_to_image_recall@5")
    unseen = tests["unseen_pairs"]
    queries = [f"a {c} {s}" for c, s in UNSEEN]
    recall = retrieval_recall(predictor.embed_images([s.source for s in unseen.samples]),
                              [(f"a {pair_of(s)}",) for s in unseen.samples], predictor.embed_texts(queries), queries,
                              ks=(1, 5))
    block["unseen_text_to_image_recall@1"] = recall["text_to_image_recall@1"]
    block["unseen_text_to_image_recall@5"] = recall["text_to_image_recall@5"]
    block["chance_top1"] = round(1 / len(labels), 4)
    return block


def print_zeroshot(block: dict) -> None:
    print(f"zero-shot over {block['labels']} labels 'a COLOUR SHAPE' (chance {block['chance_top1']}); "
          f"align {block['align_train_s']} s, closed-set classifier {block['closed_set_train_s']} s")
    print(f"{'test images':16s} {'model':12s} {'top-1':>6s} {'colour':>7s} {'shape':>6s}")
    for name in ("unseen_pairs", "seen_pairs"):
        for model in ("zeroshot", "closed_set"):
            row = block[f"{model}_{name}"]
            print(f"{name:16s} {model:12s} {row['top1']:6.3f} {row['colour']:7.3f} {row['shape']:6.3f}")
    print(f"retrieval text->image: held-out captions R@1 {block['heldout_text_to_image_recall@1']} "
          f"R@5 {block['heldout_text_to_image_recall@5']}; unseen-pair queries R@1 "
          f"{block['unseen_text_to_image_recall@1']} R@5 {block['unseen_text_to_image_recall@5']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 steps a run: checks the script, not the numbers")
    parser.add_argument("--skip-generate", action="store_true", help="only the zero-shot and retrieval part")
    parser.add_argument("--skip-align", action="store_true", help="only the text-to-image part")
    parser.add_argument("--align-grayscale", type=float, help="the align run's share of grey images (default: "
                        "the align default, 0.5)")
    parser.add_argument("--generator", type=Path, help="a bundle trained by exactly GENERATE_FIELDS on the same "
                        "training CSV, to score instead of training one (its metrics.json gives the time)")
    args = parser.parse_args()
    from omnivis.data.captions import write_caption_folder

    seen_pairs = [p for p in all_pairs() if p not in UNSEEN]
    results: dict = {"unseen_pairs": [" ".join(p) for p in UNSEEN]}
    with tempfile.TemporaryDirectory(prefix="omnivis-multimodal-") as tmp:
        tmp = Path(tmp)
        train_csv = write_caption_folder(scenes(TRAIN_SCENES, 0, seen_pairs), tmp / "train")
        tests = {"unseen_pairs": scenes(TEST_SCENES, 1, list(UNSEEN)), "seen_pairs": scenes(TEST_SCENES, 1, seen_pairs)}
        if not args.skip_align:
            results["zeroshot"] = zeroshot_block(tmp, train_csv, tests, args.quick, args.align_grayscale)
            print_zeroshot(results["zeroshot"])
        if not args.skip_generate:
            results["text_to_image"] = text_to_image_block(tmp, train_csv, args.quick, args.generator)
            print_text_to_image(results["text_to_image"])
    if not args.quick:
        merge_results({"multimodal": {**read_results().get("multimodal", {}), **results}})


GENERATE_FIELDS = dict(method="diffusion", text=True, img_size=32, channels=3, snr_gamma=5.0, epochs=100)
"""``omnivis train generate --text --img-size 32 --channels 3 --snr-gamma 5 --epochs 100``: colour needs 3
channels and the shapes their 32 px (the generate defaults are 16 px grey); Min-SNR weighting as
diffusers' text-to-image script offers it; 100 epochs (3,700 steps): 60 left the asked pair in 0.795 of
seen-pair samples (BENCHMARKS.md (s), second run)."""
GUIDANCES = (1.25, 2.0, 3.0)  # the class-conditional default, the text default (2), a stronger pull


def text_to_image_block(tmp: Path, train_csv: Path, quick: bool, bundle: Path | None = None) -> dict:
    from omnivis.tasks.classify import ClassifyConfig, train_classifier
    from omnivis.tasks.generate import GenerateConfig, GeneratorPredictor, train_generator

    fields = {k: v for k, v in GENERATE_FIELDS.items() if k != "epochs"}
    if bundle is None:
        config = defaults(GenerateConfig, quick, data=str(train_csv), **fields)
        if not quick:
            from dataclasses import replace

            config = replace(config, trainer=replace(config.trainer, epochs=GENERATE_FIELDS["epochs"]))
        bundle, _ = timed(train_generator, config, tmp / "t2i")
    metrics = json.loads((Path(bundle) / "metrics.json").read_text())
    checker_data = write_pair_folder(scenes(CHECKER_SCENES, 2, all_pairs()), tmp / "checker-data")
    checker, checker_s = timed(train_classifier, defaults(ClassifyConfig, quick, data=str(checker_data)),
                               tmp / "checker")
    real = scenes(TEST_SCENES, 3, all_pairs())
    block: dict = {"generator": str(bundle), "generator_train_s": metrics["train_time_s"],
                   "generator_steps": metrics["train_steps"], "checker_train_s": checker_s,
                   "checker_on_real": scores(classify_pairs(checker, [s.source for s in real.samples]), real)["top1"],
                   "samples_per_prompt": SAMPLES_PER_PROMPT}
    generator = GeneratorPredictor.from_dir(bundle)
    for guidance in GUIDANCES:
        rows: dict = {"seen": [], "unseen": []}
        for k, (colour, shape) in enumerate(all_pairs()):
            images = generator.generate(SAMPLES_PER_PROMPT, prompt=f"a {colour} {shape}", seed=k, guidance=guidance,
                                        steps=5 if quick else None)
            answers = classify_pairs(checker, list(images))
            rows["unseen" if (colour, shape) in UNSEEN else "seen"] += [(a, f"{colour} {shape}") for a in answers]
        name = f"guidance_{guidance:g}"
        block[name] = {part: {"pair": round(float(np.mean([a == t for a, t in got])), 4),
                              "colour": round(float(np.mean([a.split()[0] == t.split()[0] for a, t in got])), 4),
                              "shape": round(float(np.mean([a.split()[1] == t.split()[1] for a, t in got])), 4),
                              "samples": len(got)} for part, got in rows.items()}
    return block


def print_text_to_image(block: dict) -> None:
    print(f"text-to-image: generator {block['generator_steps']} steps, {block['generator_train_s']} s; checker "
          f"({block['checker_train_s']} s) on real held-out scenes {block['checker_on_real']}")
    print(f"{'guidance':10s} {'prompts':8s} {'pair':>6s} {'colour':>7s} {'shape':>6s} {'samples':>8s}")
    for name, row in block.items():
        if name.startswith("guidance_"):
            for part in ("seen", "unseen"):
                r = row[part]
                print(f"{name[9:]:10s} {part:8s} {r['pair']:6.3f} {r['colour']:7.3f} {r['shape']:6.3f} "
                      f"{r['samples']:8d}")


if __name__ == "__main__":
    main()
