"""Ship a trained model: fp16 copy into the package, registry entry, measured model card.

    python tools/ship_model.py runs/restore-x4/model.safetensors --name restore-x4 \
        --config configs/restore-x4-cpu.toml --description "x4 upscaling + JPEG and watermark removal"
    python tools/ship_model.py --name restore-x4 --reuse      # re-measure speed on an idle machine

What it does, so every shipped file and every figure on its card comes from one command:
1. `weights.load_model` the run's model and `save_model` it again as fp16 into `src/decrappify/models/<name>`
   (fp16 halves the file; `load_model` casts back to fp32, and the scores below are measured on that very file);
2. `decrappify.evaluation.evaluate` it on the evaluation sets of its task (BSD100 = ../shared/data/bsds500/val, which no
   shipped model trains on; for sr-x4 also Set5 and Set14), with bicubic and, at x4, the OpenCV peers in
   ../shared/models/peers; perceptual distance off (run `decrappify evaluate` for it);
3. `decrappify benchmark` its speed, run as a user runs it (torch: fp32 channels-last and bf16 autocast,
   512x512 output, 2 threads and 1); the headline speed is that of the precision `--precision auto` picks for it
   on this machine;
   with `--ensemble flip` the file names that self-ensemble as its default (`decrappify.inference.ensemble`), so the
   evaluation and the speed are both of the model as users run it; the plain model's scores are listed too;
4. keep everything measured in `docs/models/<name>.json`, render `docs/models/<name>.md` from it, and write the
   registry entry (`src/decrappify/models/registry.json`) with the headline metrics `decrappify models` lists.

A `text-mask` model is scored as `decrappify evaluate --task text-mask` scores it (IoU, F1, box recall on BSD100,
text drawn by restore-x1 and by restore-x4); its headline metrics are those.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from decrappify.evaluation.evaluate import evaluate
from decrappify.evaluation.methods import Method, ModelMethod
from decrappify.evaluation.segmentation import evaluate_text_mask
from decrappify.inference.ensemble import ENSEMBLES, model_ensemble, views_for
from decrappify.inference.precision import resolve_precision
from decrappify.inference.zoo import MODELS_DIR, REGISTRY_FILE
from decrappify.io.atomic import atomic_write_text
from decrappify.io.model_metadata import read_model_metadata
from decrappify.nn.models import gflops_per_output_megapixel
from decrappify.tasks import TEXT_MASK, is_segmentation_task
from decrappify.weights import load_model, save_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CARDS = ROOT / "docs" / "models"
MAX_BYTES = 25_000_000  # the package ships every model: the EfficientNet-Lite0 colorize U-Net is 19 MB as fp16
SPEED_VARIANTS = ("channels_last", "bf16")
#: Tasks the OpenCV peers (x4 super-resolution models) are scored on.
PEER_TASKS = ("sr-x4", "restore-x4")

#: Evaluation sets per task: (label, folder). BSD100 is bsds500/val: never trained on.
EVAL_SETS = {
    "sr-x4": [
        ("Set5", "data/benchmarks/Set5"),
        ("Set14", "data/benchmarks/Set14"),
        ("BSD100", "data/bsds500/val"),
    ],
    "restore-x4": [("BSD100", "data/bsds500/val")],
    "restore-x1": [("BSD100", "data/bsds500/val")],
    "colorize": [("BSD100", "data/bsds500/val")],
    TEXT_MASK: [("BSD100", "data/bsds500/val")],
}
#: A text-mask model's tables: the text of these presets (the first is the one its bar is set on).
TEXT_MASK_PRESETS = ("restore-x1", "restore-x4")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path, help="the run's model.safetensors (not with --reuse)")
    parser.add_argument("--name", required=True, help="shipped name (the file is <name>.safetensors)")
    parser.add_argument("--config", help="the recipe it was trained with (shown on the card)")
    parser.add_argument("--description", default="", help="one line for `decrappify models`")
    parser.add_argument("--limitations", help="a paragraph for the card (kept by later runs unless given)")
    parser.add_argument("--hardware", default="", help="what it was trained on (default: this machine)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the shipped file and its stored evaluation (then: speed, card)",
    )
    parser.add_argument(
        "--before",
        action="append",
        default=[],
        metavar="COMMAND",
        help="a command that made the run's starting point (its init.weights), in order; repeatable",
    )
    parser.add_argument(
        "--before-minutes",
        type=float,
        default=0.0,
        help="wall-clock training minutes those commands took (added to the card's training time)",
    )
    parser.add_argument(
        "--ensemble",
        choices=tuple(ENSEMBLES),
        default="none",
        help="the self-ensemble the shipped file runs as by default (default none: the plain model)",
    )
    parser.add_argument("--no-speed", action="store_true", help="skip the speed benchmark (machine busy)")
    return parser.parse_args(argv)


def this_machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )  # fmt: skip
    return f"{os.cpu_count()}-core CPU ({cpu}), no GPU, PyTorch {torch.__version__}"


def ship_file(
    source: Path, name: str, description: str, ensemble: str = "none"
) -> tuple[Path, torch.nn.Module, dict, dict]:
    """Re-save `source` as fp16 under the package's models folder, named `name`, to run as `ensemble` by
    default; refuse files over 10 MB."""
    model, config, info = load_model(source)
    info = {**info, "name": name, "description": description, "shipped_from": str(source)}
    info.pop("ensemble", None)
    if ensemble != "none":
        info["ensemble"] = ensemble
    target = save_model(model, MODELS_DIR / f"{name}.safetensors", config, info, dtype=torch.float16)
    size = target.stat().st_size
    if size > MAX_BYTES:
        target.unlink()
        sys.exit(
            f"{source}: {size / 1e6:.1f} MB as fp16, over the {MAX_BYTES / 1e6:.0f} MB limit; not shipped"
        )
    return target, model, config, info


def evaluation_tables(path: Path, task: str, scale: int, ensemble: str = "none") -> list[dict]:
    """Each evaluation set's table; a model that runs as an ensemble also gets its plain model's row."""
    if is_segmentation_task(task):
        return mask_tables(path)
    peers = SHARED / "models" / "peers" if task in PEER_TASKS else None
    tables = []
    for label, folder in EVAL_SETS[task]:
        methods: list[str | Method] = [str(path)]
        if ensemble != "none":
            methods.append(ModelMethod(path, scale, ensemble="none"))
        result = evaluate(SHARED / folder, task, methods, peers_dir=peers, keep_crops=False,
                          progress=True, perceptual=False)  # fmt: skip
        tables.append({"set": label, "markdown": result.to_markdown(), "summary": result.to_dict()})
        print(result.to_markdown())
    return tables


def mask_tables(path: Path) -> list[dict]:
    """A text-mask model's tables: IoU, F1 and box recall on BSD100, one per preset whose text it finds."""
    tables = []
    for label, folder in EVAL_SETS[TEXT_MASK]:
        for preset in TEXT_MASK_PRESETS:
            result = evaluate_text_mask(SHARED / folder, [str(path)], preset=preset, keep_crops=False, progress=True)
            tables.append({"set": f"{label} {preset}", "markdown": result.to_markdown(), "summary": result.to_dict()})
            print(result.to_markdown())
    return tables


def speed_command(path: Path, json_file: Path) -> list[str]:
    """The `decrappify benchmark` command a card's speed comes from (the card prints it, less the paths)."""
    cli = str(Path(sys.executable).with_name("decrappify"))
    variants = [f"--variant={variant}" for variant in SPEED_VARIANTS]
    return [cli, "benchmark", "--model", str(path), "--backend", "torch", *variants, "--threads", "2",
            "--threads", "1", "--repeats", "5", "--warmup", "2", "--json", str(json_file), "-q"]  # fmt: skip


def speed_table(path: Path) -> dict:
    """fp32 channels-last and bf16, 2 threads and 1; the headline is the 2-thread speed of the precision that
    `--precision auto` runs this model in here. Run as the CLI, in its own process: the speed a user of
    `decrappify` gets, OpenMP waiting included (`decrappify.openmp_wait`, chosen before torch loads)."""
    _, info = read_model_metadata(path)
    with tempfile.TemporaryDirectory() as folder:
        json_file = Path(folder) / "speed.json"
        done = subprocess.run(speed_command(path, json_file), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"decrappify benchmark failed:\n{done.stderr}")
        rows = json.loads(json_file.read_text(encoding="utf-8"))["rows"]
    markdown = done.stdout
    print(markdown)
    precision = resolve_precision("auto", "cpu", info)
    variant = "bf16" if precision == "bf16" else "channels_last"
    best = max(row["megapixels_per_second"] for row in rows if row["variant"] == variant)
    return {"markdown": markdown, "best_mp_per_s": round(best, 2), "precision": precision,
            "hardware": this_machine()}  # fmt: skip


def headline(card: dict) -> dict:
    """The metrics `decrappify models` lists: PSNR_Y per set and the gain over the baseline (BSD100)."""
    metrics: dict = {}
    for table in card.get("evaluation", []):
        rows = {row["method"]: row for row in table["summary"]["results"]}
        ours = rows[card["name"]]
        if table["summary"]["task"] == TEXT_MASK:
            for key, title in (("iou", "IoU"), ("f1", "F1"), ("box_recall", "box recall")):
                metrics[f"{table['set']} {title}"] = round(ours[key], 3)
            continue
        base = rows.get("bicubic") or rows.get("input")
        metrics[f"{table['set']} PSNR_Y"] = round(ours["psnr_y"], 2)
        if table["set"] == "BSD100" and base is not None:
            metrics[f"BSD100 gain over {base['method']}"] = round(ours["psnr_y"] - base["psnr_y"], 2)
            if ours.get("psnr_watermark") is not None and base.get("psnr_watermark") is not None:
                gain = ours["psnr_watermark"] - base["psnr_watermark"]
                metrics[f"BSD100 watermark-box gain over {base['method']}"] = round(gain, 2)
            if ours.get("ab_error") is not None:
                metrics["BSD100 a*b* error"] = round(ours["ab_error"], 2)
    if "speed" in card:
        metrics["output MP/s"] = card["speed"]["best_mp_per_s"]
    return metrics


def write_registry(name: str, description: str, metrics: dict) -> None:
    path = MODELS_DIR / REGISTRY_FILE
    rows = json.loads(path.read_text(encoding="utf-8"))["models"] if path.is_file() else []
    rows = [row for row in rows if row.get("name") != name]
    rows.append({"name": name, "file": f"{name}.safetensors", "description": description, "metrics": metrics})
    rows.sort(key=lambda row: row["name"])
    atomic_write_text(path, json.dumps({"models": rows}, indent=2) + "\n")


def training_commands(before: list[str], command: str) -> str:
    """The card's recipe: the training command, after the commands that made its starting point, if any."""
    if not before:
        return f"- Training command (run from the repository root):\n\n      {command}\n"
    steps = "\n".join(f"      {line}" for line in [*before, command])
    return f"- Training commands, in order (run from the repository root):\n\n{steps}\n"


def ensemble_lines(name: str, ensemble: str) -> list[str]:
    """The card's word on a default self-ensemble (nothing for a plain model)."""
    if ensemble == "none":
        return []
    views = len(views_for(ensemble))
    return [
        f"- Runs as a `{ensemble}` self-ensemble by default: each tile is restored {views} times (as is and "
        + ("mirrored" if ensemble == "flip" else "turned and mirrored")
        + f") and the results averaged (`decrappify.inference.ensemble`); the scores and the speed below are of that. "
        f"`--ensemble none` runs the plain model, {views}x faster: its scores are the `{name} (no ensemble)` rows."
    ]


def precision_line(card: dict) -> str:
    """What `--precision auto` runs the model in, and so which row the headline speed is."""
    if card["speed"].get("precision") == "bf16":
        return ("`--precision auto` (the default) runs it in bf16 on CPUs that do bf16 natively, as this one does: "
                f"{card['speed']['best_mp_per_s']} MP/s with 2 threads; fp32 elsewhere.")  # fmt: skip
    if card["info"].get("precision") == "fp32":
        return ("It runs in fp32 under `--precision auto`: bf16 changed its scores by more than the 0.02 dB bar "
                "(docs/benchmarks/bf16-parity.md); `--precision bf16` still runs it in bf16.")  # fmt: skip
    return "`--precision auto` runs it in fp32 here (this CPU has no native bf16)."


def render_card(card: dict) -> str:
    info = card["info"]
    ensemble = model_ensemble(info)
    ensemble_option = f" --ensemble {ensemble}" if ensemble != "none" else ""
    hours, rest = divmod(int(info.get("train_seconds", 0)), 3600)
    lines = [
        f"# {card['name']}",
        "",
        card["description"],
        "",
        f"    decrappify detect photo.jpg -o masks/ --model {card['name']}"
        if is_segmentation_task(info.get("task"))
        else f"    decrappify restore photo.jpg -o out/ --model {card['name']}",
        "",
        "## How it was made",
        "",
        f"- Recipe: `{card['config']}`; task / degradation preset `{info.get('task')}`, x{info.get('scale')}.",
        training_commands(card.get("before", []), str(info.get("command"))),
        (
            f"- Shipped with: `python tools/ship_model.py {info.get('shipped_from')} --name {card['name']} "
            f'--config {card["config"]}{ensemble_option} --description "..."` (fp16 copy, evaluation, speed, '
            "this card)."
        ),
        (
            f"- Data: the folders {', '.join(info.get('data', []))} (of ../shared/data: "
            "bsds500/train and test hold 400 photos, imagenet-sample 704), less the validation photos the run held "
            "out of them. Never trained on "
            "bsds500/val (BSD100), Set5 or Set14."
        ),
        f"- Wall-clock training time: {hours} h {rest // 60} min ({info.get('step')} steps)"
        + (
            f" + {card['before_minutes']:.0f} min for the commands before it"
            if card.get("before_minutes")
            else ""
        )
        + f", on {card['hardware']}"
        + (
            "; this file is the run's best-validation checkpoint (`best.safetensors`, picked by the task's "
            "validation metric on the held-out photos), the run itself went on to the end of its time budget."
            if str(info.get("shipped_from", "")).endswith("best.safetensors")
            else "."
        ),
        (
            f"- Architecture: `{json.dumps(card['model_config'], sort_keys=True)}`; "
            f"{card['parameters'] / 1e6:.2f} M parameters, {card['gflops_per_mp']:.1f} GFLOPs per output megapixel, "
            f"{card['size_bytes'] / 1e6:.2f} MB file (fp16 safetensors)."
        ),
        *ensemble_lines(card["name"], ensemble),
        "",
        "## Evaluation",
        "",
        "`decrappify evaluate DIR --task "
        + f"{info.get('task')} --model {card['name']}"
        + (" --peers ../shared/models/peers" if info.get("task") in PEER_TASKS else "")
        + " --no-perceptual` (seed 0: every method sees the same degraded input).",
        "",
    ]
    for table in card.get("evaluation", []):
        lines += [f"### {table['set']}", "", table["markdown"].rstrip(), ""]
    lines += ["## Speed", ""]
    if "speed" in card:
        lines += [
            "`decrappify benchmark --model " + card["name"] + " --backend torch --variant channels_last "
            "--variant bf16 --threads 2 --threads 1 --repeats 5 --warmup 2` on "
            + card["speed"].get("hardware", "the machine above")
            + ", nothing else running:",
            "",
            card["speed"]["markdown"].rstrip(),
            "",
            precision_line(card),
            "",
        ]
    else:
        lines += ["Not measured yet (`python tools/ship_model.py --name NAME --reuse`).", ""]
    lines += ["## Limitations", "", card.get("limitations") or "See docs/models/README.md.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    CARDS.mkdir(parents=True, exist_ok=True)
    card_json = CARDS / f"{args.name}.json"
    if args.reuse:
        card = json.loads(card_json.read_text(encoding="utf-8"))
        path = MODELS_DIR / f"{args.name}.safetensors"
        card["info"] = read_model_metadata(path)[1]  # facts added since shipping (a precision pin)
    else:
        if args.model is None:
            sys.exit("give the run's model file (or --reuse)")
        path, model, config, info = ship_file(args.model, args.name, args.description, args.ensemble)
        old = json.loads(card_json.read_text(encoding="utf-8")) if card_json.is_file() else {}
        card = {
            "name": args.name,
            "description": args.description,
            "config": args.config or "",
            "hardware": args.hardware or this_machine(),
            "info": info,
            "model_config": config,
            "parameters": sum(p.numel() for p in model.parameters()),
            "gflops_per_mp": round(gflops_per_output_megapixel(model, (1, 3, 128, 128)), 2),
            "size_bytes": path.stat().st_size,
            "limitations": old.get("limitations", ""),
            "before": args.before,
            "before_minutes": args.before_minutes,
            "evaluation": evaluation_tables(path, info["task"], int(info["scale"]), args.ensemble),
        }
    if args.limitations:
        card["limitations"] = args.limitations
    if not args.no_speed:
        card["speed"] = speed_table(path)
    atomic_write_text(card_json, json.dumps(card, indent=2) + "\n")
    atomic_write_text(CARDS / f"{args.name}.md", render_card(card))
    write_registry(args.name, card["description"], headline(card))
    print(f"shipped {path} ({card['size_bytes'] / 1e6:.2f} MB); card {CARDS / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
