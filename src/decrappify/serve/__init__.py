"""The HTTP service (`decrappify serve`): a FastAPI app with an upload API and a small web page.

Nothing in the core library imports this package; it needs the `serve` extra (FastAPI, uvicorn,
python-multipart). `ServeSettings` imports without FastAPI, so the CLI can validate options and say what to
install before anything heavy is loaded; `create_app` is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from decrappify.serve.settings import ServeSettings

if TYPE_CHECKING:
    from decrappify.serve.app import create_app

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from decrappify.serve.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
