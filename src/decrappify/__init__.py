"""decrappify: train and run image-restoration models (super-resolution, JPEG/watermark removal, colourisation)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("decrappify")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
