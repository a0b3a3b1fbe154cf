"""The CLI's choice of how OpenMP threads wait: spin briefly when the machine is idle, sleep when it is not."""

from __future__ import annotations

from decrappify import openmp_wait


def test_an_idle_machine_spins_briefly():
    assert openmp_wait.wait_settings({}, other_running=0) == {"GOMP_SPINCOUNT": "1000"}


def test_a_busy_machine_or_an_unknown_one_sleeps():
    assert openmp_wait.wait_settings({}, other_running=1) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert openmp_wait.wait_settings({}, other_running=None) == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_the_service_always_sleeps():
    assert openmp_wait.wait_settings({}, other_running=0, service=True) == {"OMP_WAIT_POLICY": "PASSIVE"}
    environ: dict[str, str] = {}
    assert openmp_wait.choose_wait_policy(environ, service=True) == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_the_users_choice_wins():
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert openmp_wait.choose_wait_policy(environ) == {}
    assert environ == {"OMP_WAIT_POLICY": "ACTIVE"}
    assert openmp_wait.wait_settings({"GOMP_SPINCOUNT": "0"}, other_running=0) == {}


def test_the_running_count_leaves_out_this_process(tmp_path, monkeypatch):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("0.90 0.50 0.20 3/120 4242\n")
    monkeypatch.setattr(openmp_wait, "LOADAVG", str(loadavg))
    assert openmp_wait.other_running_processes(samples=3, interval_s=0) == 2
    environ: dict[str, str] = {}
    assert openmp_wait.choose_wait_policy(environ) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    loadavg.write_text("0.90 0.50 0.20 1/120 4242\n")
    assert openmp_wait.other_running_processes(samples=1) == 0
    monkeypatch.setattr(openmp_wait, "LOADAVG", str(tmp_path / "missing"))
    assert openmp_wait.other_running_processes() is None
