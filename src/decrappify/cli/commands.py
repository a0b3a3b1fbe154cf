"""The subcommands and their one-line summaries, with no imports: `decrappify --help` lists them from here.

Each subcommand's module is imported only when that subcommand runs (or shows its own help), so the top-level
help and light commands such as `decrappify models` never load torch or the models.
"""

from __future__ import annotations

#: Subcommand -> summary, in the order `--help` lists them. Each is implemented by `decrappify.cli.<name>`.
COMMAND_HELP: dict[str, str] = {
    "crappify": "make degraded (low-quality) training inputs from a folder of clean images",
    "demo": "restore bundled sample photos with the shipped models and write an HTML before/after page",
    "evaluate": "score methods on a folder of clean images (PSNR/SSIM on Y, PSNR on RGB, speed)",
    "serve": "serve the models over HTTP: a JSON/upload API and a web page (needs decrappify[serve])",
    "train": "train a model on a folder of images (progress, checkpoints, --resume; torchrun for DDP)",
    "restore": "restore pictures (upscale, remove JPEG artefacts and watermarks, colourise) with a model",
    "detect": "find watermark text in photos: write its mask (PNG) and a preview with the mask over the photo",
    "export": "export a model to ONNX (dynamic height and width) for ONNX Runtime and other runtimes",
    "benchmark": "measure restoration speed per backend (PyTorch, ONNX Runtime) against this machine's peak",
    "models": "list the shipped models (name, what it does, task, scale, size, default self-ensemble, metrics)",
}
