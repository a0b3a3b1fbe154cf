"""Fixtures shared by the whole suite: one torch thread, tiny model files made on the spot, and the VGG16 file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from decrappify.nn import create_model
from decrappify.weights import VGG_WEIGHTS_ENV, save_model

# A compact x2 generator small enough that a test runs it in milliseconds.
TINY_COMPACT = {"arch": "compact", "scale": 2, "widths": [8, 12, 16], "blocks": [1, 1, 1]}
#: The BSDS500-tuned VGG16 of the shared folder beside the checkout, where the development machines keep it.
SHARED_VGG16 = Path(__file__).resolve().parents[1].parent / "shared" / "weights" / "vgg16_hed_bsds500.safetensors"


def pytest_configure(config: pytest.Config) -> None:
    """Point $DECRAPPIFY_VGG_WEIGHTS at the shared VGG16 file when it exists and the variable is unset.

    The library only takes VGG weights it is given, so the tests give them the way a user would. Done at
    configure time, before test modules are imported, because their `skipif(no weights)` marks are evaluated
    then; tests that need the file still skip where it is absent.
    """
    if not os.environ.get(VGG_WEIGHTS_ENV) and SHARED_VGG16.is_file():
        os.environ[VGG_WEIGHTS_ENV] = str(SHARED_VGG16)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models on a small shared machine: one thread is several times faster than two (no waiting on a
    core another process holds), and results do not depend on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def save_tiny_model(path: Path, config: dict = TINY_COMPACT, **info) -> Path:
    """An untrained model file, seeded so every test that makes one gets the same weights."""
    torch.manual_seed(0)
    return save_model(create_model(config), path, config, {"name": path.stem, "task": "restore", **info})


def random_batch_norm_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in eval mode with batch norms far from the identity, so a wrong fold or fusion shows."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained compact x2 model file, shared by the tests of one module."""
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny.safetensors")


@pytest.fixture(scope="module")
def x4_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained compact x4 model file; its output is close to bicubic, which is all service tests need."""
    config = {"arch": "compact", "scale": 4, "widths": [8, 8, 8], "blocks": [1, 1, 1]}
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny-x4.safetensors", config, scale=4)
