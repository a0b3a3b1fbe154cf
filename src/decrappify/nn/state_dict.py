"""Checking foreign weights against a module key by key and shape by shape, before any of them is copied.

Pure torch: reading files is :mod:`decrappify.weights`'s job; this module only compares and copies tensors, so
a network (the U-Net's encoder) can take a state dict without the network layer depending on file I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from decrappify.errors import WeightsError

_PREFIXES_TO_STRIP = ("module.", "_orig_mod.")
_MAX_LISTED = 5


def clean_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Strip the ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes from every key."""
    cleaned = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES_TO_STRIP:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        cleaned[key] = value
    return cleaned


def _listed(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else shown


def load_into(
    module: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    what: str,
    ignore_prefixes: Sequence[str] = (),
) -> None:
    """Copy ``state_dict`` into ``module`` after checking every key and shape; ``WeightsError`` if any differ.

    ``what`` names the source in messages (a file name, "resnet34 encoder"). Keys starting with one of
    ``ignore_prefixes`` are dropped first: this is how a full torchvision file (``fc.*``, ``classifier.*``)
    loads into a features-only backbone. A missing ``num_batches_tracked`` (older torchvision files) is not an
    error. Tensors are cast to the module's dtype (fp16 files load into fp32 models).
    """
    source = {
        k: v for k, v in clean_state_dict(state_dict).items() if not k.startswith(tuple(ignore_prefixes))
    }
    target = module.state_dict()
    missing = [k for k in target if k not in source and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in source if k not in target]
    mismatched = [
        f"{k} {tuple(source[k].shape)} vs {tuple(v.shape)}"
        for k, v in target.items()
        if k in source and source[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches (file vs model): {_listed(mismatched)}")
    if problems:
        raise WeightsError(f"{what}: weights do not fit {module.__class__.__name__}: " + "; ".join(problems))
    for key, value in target.items():
        source.setdefault(key, value)  # only num_batches_tracked can be absent here
    module.load_state_dict(source, strict=True)
