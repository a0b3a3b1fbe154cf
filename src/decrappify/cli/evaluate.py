"""`decrappify evaluate DATA_DIR --task T`: score the baseline, OpenCV peers and our models on clean images."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from decrappify.cli.options import add_precision
from decrappify.errors import ConfigError, OutputError
from decrappify.evaluation.evaluate import evaluate
from decrappify.evaluation.methods import split_label
from decrappify.evaluation.perceptual import PerceptualDistance
from decrappify.evaluation.report import write_json, write_mask_report, write_report
from decrappify.evaluation.segmentation import evaluate_text_mask
from decrappify.inference.ensemble import ENSEMBLES
from decrappify.inference.realesrgan import is_realesrgan
from decrappify.inference.zoo import resolve_model
from decrappify.io.model_metadata import is_onnx_file, read_model_metadata
from decrappify.io.video import is_video_path
from decrappify.tasks import TASKS, TEXT_MASK, TEXT_MASK_PRESET, is_segmentation_task
from decrappify.weights import VGG_WEIGHTS_ENV

log = logging.getLogger("decrappify")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="score methods on a folder of clean images (PSNR/SSIM on Y, PSNR on RGB, speed)",
        description=(
            "Degrade every clean image in DATA_DIR with the task's preset (fixed seed, the same input for every "
            "method), run each method and score it against the clean image: PSNR and SSIM on the BT.601 Y "
            "channel with a border of `scale` pixels cropped, PSNR on RGB, PSNR inside watermark boxes, "
            "NIQE and BRISQUE (no-reference; also for the truth), high-frequency and 2/4 px periodic power over "
            "the truth's, the share of watermark boxes where text is still detected, and speed. The baseline is "
            "always included: 'bicubic' (Pillow BICUBIC) for upscaling tasks, 'input' "
            "(the degraded input as is) for x1 tasks. Prints a markdown table."
        ),
    )
    parser.add_argument("data_dir", metavar="DATA_DIR", help="folder of clean images (searched recursively)")
    parser.add_argument(
        "--task",
        help=f"degradation and scale: one of {', '.join(TASKS)} (default: the task the --model files were "
        "trained for, when they agree)",
    )
    parser.add_argument(
        "--preset",
        help=f"--task {TEXT_MASK} only: the degradation whose text the mask models must find (default "
        f"{TEXT_MASK_PRESET}; also restore-x4, watermark). Scores: pixel IoU and F1 pooled over the images, and the "
        "share of watermark boxes some predicted line box overlaps with IoU > 0.5",
    )
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        default=[],
        metavar="[LABEL=]NAME|PATH",
        help="a shipped model name, a model file, 'realesrgan-x4plus' (the peer; needs decrappify[bench]), or "
        "'bicubic' (always included); repeatable. LABEL names its "
        "row (default: the name stored in the model file)",
    )
    parser.add_argument(
        "--peers",
        metavar="DIR",
        help="add the OpenCV dnn_superres models in DIR at the task's scale (*_x4.pb ...; needs decrappify[bench])",
    )
    parser.add_argument("--json", metavar="FILE", help="write the summary as JSON to FILE")
    parser.add_argument("--report", metavar="DIR", help="write an HTML page of side-by-side crops to DIR")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --report page"
    )
    parser.add_argument("--seed", type=int, default=0, help="degradation seed (default 0)")
    parser.add_argument(
        "--no-perceptual",
        dest="perceptual",
        action="store_false",
        default=None,
        help="skip the VGG perceptual distance (scored when --vgg-weights or $DECRAPPIFY_VGG_WEIGHTS names VGG16 "
        "weights; one VGG16 pass per image and method, the slowest part of an evaluation on a CPU)",
    )
    parser.add_argument(
        "--no-quality",
        dest="no_reference",
        action="store_false",
        default=None,
        help="skip NIQE, BRISQUE, the HF ratio and the periodic-artefact ratio (scored by default; BRISQUE when "
        "the brisque package is installed)",
    )
    parser.add_argument(
        "--no-text-detection",
        dest="text_detection",
        action="store_false",
        default=None,
        help="skip the share of watermark boxes where text is still detected (scored for watermark tasks when "
        "rapidocr-onnxruntime and onnxruntime are installed; a detector pass per image and method)",
    )
    parser.add_argument(
        "--vgg-weights",
        metavar="PATH",
        help=f"VGG16 weights in torchvision's layout for the perceptual distance (default: ${VGG_WEIGHTS_ENV}; "
        "with neither, the column is left empty). A file given here must load, or evaluate stops",
    )
    parser.add_argument(
        "--ensemble",
        choices=tuple(ENSEMBLES),
        default=None,
        help="score the models as self-ensembles: 'flip' averages 2 mirrored views, 'dihedral' all 8 turns and "
        "mirrors, 'none' the plain model (default: each model's own, see `decrappify models`; a row whose "
        "ensemble differs from its model's own gets a suffix such as '+dihedral')",
    )
    add_precision(parser)
    video = parser.add_argument_group(
        "videos: DATA_DIR may be a clean video clip (needs decrappify[video])",
        "Every frame is degraded with the task's preset and the same random draws (a steady watermark and JPEG "
        "quality, like a re-encoded video); each method is scored for PSNR_Y and SSIM_Y per frame and for "
        "flicker: the mean absolute difference between consecutive output frames (R, G, B) minus the clean clip's "
        "(8-bit levels; lower is steadier, 0 as steady as the truth).",
    )
    video.add_argument(
        "--temporal-smoothing",
        type=float,
        default=0.0,
        metavar="S",
        help="also score each model with temporal smoothing of strength S (0..1; default: not scored)",
    )
    video.add_argument("--max-frames", type=int, default=None, metavar="N", help="score only the first N frames")
    parser.set_defaults(handler=run)
    return parser


def _task_of_models(specs: list[str]) -> str:
    """The task every named model file records (shipped and trained ones do); `ConfigError` when they do not
    agree, or none names one, so `--task` is needed."""
    tasks = {}
    for spec in specs:
        _, target = split_label(spec)
        if target.lower() in ("bicubic", "input") or is_realesrgan(target):  # peers: any x4 task
            continue
        try:
            path = resolve_model(target)
        except ConfigError:  # not a file or shipped name (a peer such as realesrgan-x4plus): no task to read
            tasks[target] = None
            continue
        task = None if is_onnx_file(path) else read_model_metadata(path)[1].get("task")
        tasks[target] = task if task in TASKS else None
    found = set(tasks.values())
    if len(found) == 1 and None not in found:
        return found.pop()
    known = ", ".join(f"{target}: {task or 'unknown'}" for target, task in tasks.items()) or "no model given"
    raise ConfigError(f"--task is needed ({known}); choose one of: {', '.join(TASKS)}")


def _check_outputs(args: argparse.Namespace) -> None:
    """`OutputError` for an earlier --report page, unless --overwrite (a page and its crops are a result one
    looks at and may have shared; the --json file is data, replaced like a log)."""
    page = Path(args.report) / "index.html" if args.report else None
    if page is not None and page.exists() and not args.overwrite:
        raise OutputError(page, "already exists: an earlier report; use --overwrite to replace it")


def run(args: argparse.Namespace) -> int:
    _check_outputs(args)  # before the work, not after it
    if args.task is None:
        args.task = _task_of_models(args.models)
        log.info("task %s (from the model files)", args.task)
    if Path(args.data_dir).is_file() and is_video_path(args.data_dir):
        return _run_video(args)
    if args.temporal_smoothing or args.max_frames is not None:
        raise ConfigError("--temporal-smoothing and --max-frames are for a video clip; DATA_DIR is a picture folder")
    if is_segmentation_task(args.task):
        return _run_text_mask(args)
    if args.preset is not None:
        raise ConfigError(f"--preset: only for --task {TEXT_MASK}; the --task {args.task} degrades with its own preset")
    perceptual = args.perceptual  # None: scored when $DECRAPPIFY_VGG_WEIGHTS names a file; False: off
    if perceptual is None and args.vgg_weights:
        perceptual = PerceptualDistance.from_weights(args.vgg_weights)
    result = evaluate(
        args.data_dir,
        args.task,
        args.models,
        peers_dir=args.peers,
        seed=args.seed,
        keep_crops=args.report is not None,
        progress=not args.quiet,
        perceptual=perceptual,
        ensemble=args.ensemble,
        precision=args.precision,
        no_reference=args.no_reference,
        text_detection=args.text_detection,
    )
    print(result.to_markdown(), end="")
    if args.json:
        log.info("wrote %s", write_json(result, args.json))
    if args.report:
        log.info("wrote %s", write_report(result, args.report, overwrite=args.overwrite))
    if result.failed:
        log.warning("%d of %d images skipped", len(result.failed), len(result.failed) + len(result.images))
        return 1
    return 0


def _run_text_mask(args: argparse.Namespace) -> int:
    """`--task text-mask`: score mask models (IoU, F1, box recall) on text drawn by `--preset`."""
    if args.peers:
        raise ConfigError(f"--peers: the OpenCV peers restore pictures; --task {TEXT_MASK} scores masks")
    result = evaluate_text_mask(
        args.data_dir,
        args.models,
        preset=args.preset or TEXT_MASK_PRESET,
        seed=args.seed,
        keep_crops=args.report is not None,
        progress=not args.quiet,
        precision=args.precision,
    )
    print(result.to_markdown(), end="")
    if args.json:
        log.info("wrote %s", write_json(result, args.json))
    if args.report:
        log.info("wrote %s", write_mask_report(result, args.report, overwrite=args.overwrite))
    if result.failed:
        log.warning("%d of %d images skipped", len(result.failed), len(result.failed) + len(result.images))
        return 1
    return 0


def _run_video(args: argparse.Namespace) -> int:
    """DATA_DIR is a clean clip: fidelity per frame and flicker, with and without temporal smoothing."""
    from decrappify.evaluation.video import evaluate_video

    if args.report:
        raise ConfigError("--report: pictures only; a video evaluation prints its table (and --json writes it)")
    result = evaluate_video(
        args.data_dir,
        args.task,
        args.models,
        seed=args.seed,
        smoothing=args.temporal_smoothing,
        max_frames=args.max_frames,
        ensemble=args.ensemble,
        precision=args.precision,
        progress=not args.quiet,
    )
    print(result.to_markdown(), end="")
    if args.json:
        log.info("wrote %s", write_json(result, args.json))
    return 0
