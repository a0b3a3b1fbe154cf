"""Many inputs, one job each, failures isolated.

A batch of a thousand photos must not stop at the one corrupt file: each input runs on its own, an expected failure
(`DecrappifyError`) becomes one log line `path: reason`, an unexpected one an `internal error` line for that file,
and the rest go on. Inputs that cannot even be found are not a crash either: `collect_inputs` returns them as items
carrying a `problem`, which `run_batch` reports as failed without calling the job.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from decrappify.errors import DecrappifyError, InputError
from decrappify.io.images import is_image_path
from decrappify.io.listing import broken_link_reason, is_hidden, list_images
from decrappify.io.video import is_video_path

log = logging.getLogger(__name__)

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class BatchItem:
    """One input file and where its result goes, relative to the output folder."""

    source: Path
    relative: Path  # where it goes under the output root (the tree below a named folder is kept)
    problem: str | None = (
        None  # why it cannot be processed (missing path, ...): reported failed, job not called
    )


def collect_inputs(inputs: Sequence[str | Path], *, videos: bool = False) -> list[BatchItem]:
    """Expand files, folders (recursively, image extensions only, hidden entries skipped) and glob patterns
    (images, and with `videos` also video files).

    Arguments keep their order; what one argument expands to is sorted. A file named explicitly is always kept,
    whatever its extension, so a wrong file is reported rather than skipped. A missing path, a pattern matching
    nothing, a folder with no images, or a second input mapping to the same output become items with a `problem`.
    A file reached twice is kept once.
    """
    items: list[BatchItem] = []
    seen_sources: set[Path] = set()
    seen_outputs: dict[str, Path] = {}
    for raw in inputs:
        for item in _expand(str(raw), videos):
            if item.problem is None:
                key = _resolved(item.source)
                if key in seen_sources:
                    continue
                seen_sources.add(key)
                first = seen_outputs.setdefault(str(item.relative).casefold(), item.source)
                if first != item.source:
                    item = BatchItem(item.source, item.relative, f"same output name as {first}")
            items.append(item)
    return items


def mark_shared_outputs(items: Sequence[BatchItem], target_of: Callable[[BatchItem], Path]) -> list[BatchItem]:
    """The items, where each one whose output (`target_of`) is the file an earlier item's goes to gets a problem.

    `collect_inputs` only sees input names; a changed suffix (`--format png` for a.png and a.jpg) can still send
    two results to one file, and with overwriting allowed the second would silently replace the first. Called
    before any work, so the batch reports the clash instead. Names compare without case, as on macOS and Windows.
    """
    first_source: dict[str, Path] = {}
    marked = []
    for item in items:
        if item.problem is None:
            target = target_of(item)
            first = first_source.setdefault(str(target).casefold(), item.source)
            if first != item.source:
                reason = f"same output file {target} as {first}: one result would overwrite the other"
                item = BatchItem(item.source, item.relative, reason)
        marked.append(item)
    return marked


def output_path(item: BatchItem, out_dir: str | Path, suffix: str | None = None) -> Path:
    """Where an item's result goes: the input tree mirrored under `out_dir`, optionally with a new suffix."""
    relative = item.relative
    if suffix:
        relative = relative.with_suffix(suffix if suffix.startswith(".") else f".{suffix}")
    return Path(out_dir) / relative


@dataclass
class BatchReport:
    """What a batch did; `failed` holds (input, reason) in input order; `skipped` the inputs whose outputs
    already existed (`--skip-existing`), never given to the job."""

    done: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    skipped: list[Path] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 if every input succeeded, 1 if any failed (the CLI's exit status)."""
        return 1 if self.failed else 0

    def summary(self) -> str:
        """One line for the end of a run: `3 done, 1 failed in 2.4 s` (`, 2 skipped (already there)` when any)."""
        skipped = f", {len(self.skipped)} skipped (already there)" if self.skipped else ""
        return f"{len(self.done)} done{skipped}, {len(self.failed)} failed in {self.seconds:.1f} s"


def run_batch(
    items: Sequence[BatchItem],
    job: Callable[[BatchItem], Path],
    *,
    workers: int = 1,
    desc: str = "",
    quiet: bool = False,
) -> BatchReport:
    """Run `job` on every item, isolating failures; results come back in input order.

    With `workers > 1` the items run in that many spawned processes, so `job` must be picklable (a module-level
    function or a `functools.partial` of one) and load its model itself. A progress bar goes to stderr (only on
    a terminal, and never when `quiet`).
    """
    items = list(items)
    start = time.perf_counter()
    outcomes: list[_Outcome | None] = [None] * len(items)
    runnable = [(index, item) for index, item in enumerate(items) if item.problem is None]
    with ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=len(items), desc=desc or None, unit="img", file=sys.stderr,
                                       disable=True if quiet else None))  # fmt: skip
        if not quiet:
            stack.enter_context(logging_redirect_tqdm(loggers=_console_loggers()))
        for index, item in enumerate(items):
            if item.problem is not None:
                outcomes[index] = _Outcome(False, None, item.problem, None)
                _log_failure(item, outcomes[index])
                bar.update(1)
        for index, outcome in _execute(runnable, job, workers):
            outcomes[index] = outcome
            if not outcome.ok:
                _log_failure(items[index], outcome)
            bar.update(1)
    return _report(items, outcomes, time.perf_counter() - start)


class _Outcome(NamedTuple):
    """What one item's job gave; crosses process boundaries, so plain picklable values only."""

    ok: bool
    output: Path | None
    reason: str | None
    details: str | None  # traceback of an internal error, for --debug


def _run_one(job: Callable[[BatchItem], Path], item: BatchItem) -> _Outcome:
    """Run one job, turning every exception into an outcome (module-level, so worker processes can run it)."""
    try:
        result = job(item)
    except DecrappifyError as exc:
        return _Outcome(False, None, _reason(exc, item.source), None)
    except Exception as exc:  # noqa: BLE001 - one broken item must not end the batch
        return _Outcome(False, None, f"internal error: {type(exc).__name__}: {exc}", traceback.format_exc())
    return _Outcome(True, Path(result) if result is not None else None, None, None)


def _reason(exc: DecrappifyError, source: Path) -> str:
    """The error's message without the input's name when it already leads with it (the log line adds it)."""
    if isinstance(exc, InputError) and exc.path is not None and _resolved(exc.path) == _resolved(source):
        return exc.reason
    return str(exc)


def _execute(
    runnable: list[tuple[int, BatchItem]], job: Callable[[BatchItem], Path], workers: int
) -> Iterator[tuple[int, _Outcome]]:
    if workers <= 1 or len(runnable) <= 1:
        for index, item in runnable:
            yield index, _run_one(job, item)
        return
    try:
        pickle.dumps(job)
    except Exception as exc:  # pickling raises several types
        raise TypeError(
            f"run_batch(workers={workers}) needs a picklable job (a module-level function): {exc}"
        ) from exc
    context = multiprocessing.get_context("spawn")  # fork would copy torch's threads and locks: unsafe
    pool = ProcessPoolExecutor(max_workers=min(workers, len(runnable)), mp_context=context)
    try:
        futures = {pool.submit(_run_one, job, item): index for index, item in runnable}
        for future in as_completed(futures):
            yield futures[future], _collect(future)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _collect(future: Future[_Outcome]) -> _Outcome:
    try:
        return future.result()
    except BrokenProcessPool:
        return _Outcome(False, None, "internal error: the worker process died (out of memory?)", None)
    except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be unpickled
        return _Outcome(False, None, f"internal error: {type(exc).__name__}: {exc}", None)


def _log_failure(item: BatchItem, outcome: _Outcome) -> None:
    log.error("%s: %s", item.source, outcome.reason)
    if outcome.details:
        log.debug("%s", outcome.details)


def _report(items: list[BatchItem], outcomes: list[_Outcome | None], seconds: float) -> BatchReport:
    report = BatchReport(seconds=seconds)
    for item, outcome in zip(items, outcomes, strict=True):
        if outcome is not None and outcome.ok:
            report.done.append(outcome.output if outcome.output is not None else item.source)
        else:
            report.failed.append((item.source, outcome.reason if outcome else "not run"))
    return report


def _console_loggers() -> list[logging.Logger]:
    """Loggers printing to the console, whose lines must go through tqdm so they do not tear the bar."""
    candidates = [logging.getLogger(), logging.getLogger("decrappify")]
    return [
        logger
        for logger in candidates
        if any(
            isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr)
            for h in logger.handlers
        )
    ]


# ------------------------------------------------------------------------------------------- expanding inputs


def _expand(raw: str, videos: bool = False) -> list[BatchItem]:
    path = Path(raw)
    if path.is_dir():
        items = _folder_items(path, path)
        return items or [BatchItem(path, Path(path.name), "folder holds no image files")]
    if path.exists() or path.is_symlink():
        return [BatchItem(path, Path(path.name))]  # named explicitly: kept so its error is reported
    if _GLOB_CHARS & set(raw):
        items = _expand_glob(raw, videos)
        return items or [BatchItem(path, Path(path.name), "no file matches this pattern")]
    return [BatchItem(path, Path(path.name), "no such file or folder")]


def _expand_glob(pattern: str, videos: bool = False) -> list[BatchItem]:
    """Matches of a glob (`**` recursive); the tree below the pattern's literal folder is kept in `relative`."""
    parts = Path(pattern).parts
    literal = list(_take_literal(parts))
    base = Path(*literal) if literal else Path(".")
    glob_part = str(Path(*parts[len(literal) :]))
    items: list[BatchItem] = []
    for match in sorted(base.glob(glob_part)):
        if match.is_dir():
            items.extend(_folder_items(match, base))
        elif (is_image_path(match) or videos and is_video_path(match)) and not is_hidden(match.relative_to(base)):
            if match.is_file():
                items.append(BatchItem(match, match.relative_to(base)))
            elif (reason := broken_link_reason(match)) is not None:
                items.append(BatchItem(match, match.relative_to(base), reason))
    return items


def _folder_items(folder: Path, base: Path) -> list[BatchItem]:
    """The images under `folder`, relative to `base`, in walk order; broken links come as failed items."""
    listing = list_images(folder)
    return [BatchItem(file, file.relative_to(base), listing.broken_links.get(file)) for file in listing.paths]


def _take_literal(parts: Sequence[str]) -> Iterator[str]:
    for part in parts:
        if _GLOB_CHARS & set(part):
            return
        yield part


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()
