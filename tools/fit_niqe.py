"""Fit NIQE's pristine model on BSDS500 train + test and write it where the package reads it.

    python tools/fit_niqe.py                       # ../shared/data/bsds500/{train,test} -> the package's model
    python tools/fit_niqe.py --data DIR --data DIR2 --out model.npz

Never fit on bsds500/val (BSD100): NIQE is scored there. The model is the mean and covariance of the 36 NSS
features of every picture's sharp 96 px patches (`decrappify.evaluation.quality.fit_niqe`); deterministic.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from tqdm import tqdm

from decrappify.evaluation.quality import NIQE_MODEL, fit_niqe
from decrappify.io.atomic import atomic_write_bytes
from decrappify.io.images import read_image
from decrappify.io.listing import images_in_folder

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEFAULT_DATA = [SHARED / "data/bsds500/train", SHARED / "data/bsds500/test"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", help="folder of pristine photos (repeatable)")
    parser.add_argument("--out", type=Path, default=NIQE_MODEL, help="the .npz to write (default: the package's)")
    args = parser.parse_args(argv)
    folders = args.data or DEFAULT_DATA
    paths = [path for folder in folders for path, _ in images_in_folder(folder)]
    pictures = (read_image(path).rgb for path in tqdm(paths, desc="NIQE features", unit="img"))
    mean, cov, count = fit_niqe(pictures)
    buffer = io.BytesIO()
    names = np.array([folder.name for folder in folders])
    np.savez(buffer, mean=mean, cov=cov, patches=np.array(count), images=np.array(len(paths)), folders=names)
    atomic_write_bytes(args.out, buffer.getvalue())
    print(f"{args.out}: {count} patches from {len(paths)} images in {', '.join(map(str, folders))}")


if __name__ == "__main__":
    main()
