"""The malloc tuning: applied once, and never over a user's own allocator choice."""

from __future__ import annotations

import sys

import pytest

from decrappify import allocator


@pytest.mark.parametrize(
    "environ",
    [
        {"DECRAPPIFY_MALLOC": "system"},
        {"MALLOC_MMAP_THRESHOLD_": "131072"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"},
        {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
    ],
)
def test_a_users_own_malloc_choice_is_kept(environ):
    assert allocator.user_tuned_malloc(environ)


def test_an_ordinary_environment_gets_the_tuning():
    assert not allocator.user_tuned_malloc({"PATH": "/usr/bin", "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"})


def test_the_opt_out_leaves_glibc_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_state", {})
    monkeypatch.setenv("DECRAPPIFY_MALLOC", "system")
    assert allocator.keep_freed_memory() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_glibc_takes_the_settings_once(monkeypatch):
    monkeypatch.setattr(allocator, "_state", {})
    for name in ("DECRAPPIFY_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "MALLOC_ARENA_MAX", "GLIBC_TUNABLES", "LD_PRELOAD"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    assert allocator.keep_freed_memory() is True
    monkeypatch.setattr(allocator, "_apply", lambda: pytest.fail("applied twice"))
    assert allocator.keep_freed_memory() is True
