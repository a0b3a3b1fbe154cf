"""decrappify: train and run image-restoration models (super-resolution, JPEG/watermark removal, colourisation)."""

import os
from importlib.metadata import PackageNotFoundError, version

# OpenMP threads that spin while waiting make torch 3-10x slower whenever another process holds a core of a small
# machine (measured on the 2-core CPU here: inference 1.15 s -> 0.08 s per image with PASSIVE). It must be set before
# torch loads its OpenMP runtime; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = version("decrappify")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
