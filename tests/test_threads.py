"""The CPU thread policy: one torch thread unless ADVGAME_THREADS / --threads (or the user's
OMP_NUM_THREADS) asks for more; bad values are one-line errors."""

import os

import pytest
import torch

from agents.threads import VARIABLE, apply_thread_policy, thread_count
from algorithms.cli.main import main, parse_command


@pytest.fixture
def clean(monkeypatch):
    for name in (VARIABLE, "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, "1")  # recorded, so whatever the test (or main) sets is undone after
        monkeypatch.delenv(name)
    before = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(before)


def test_one_thread_by_default_and_the_variables_in_order(clean):
    assert thread_count() == 1
    clean.setenv("OMP_NUM_THREADS", "3")
    assert thread_count() == 3  # the user's OpenMP setting stands
    clean.setenv(VARIABLE, "2")
    assert thread_count() == 2
    clean.setenv(VARIABLE, "two")
    with pytest.raises(ValueError, match="ADVGAME_THREADS='two'"):
        thread_count()


def test_the_policy_sets_torch_and_what_workers_inherit(clean):
    torch.set_num_threads(2)
    assert apply_thread_policy() == 1
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"


def test_the_threads_flag_goes_anywhere_in_the_command_line(clean, capsys):
    command = parse_command(["--threads", "2", "plot", "runs/x"])
    assert type(command).__name__ == "Plot" and os.environ[VARIABLE] == "2"
    parse_command(["plot", "runs/x", "--threads=3"])
    assert os.environ[VARIABLE] == "3"
    assert main(["plot", "runs/x", "--threads", "0"]) == 2
    assert capsys.readouterr().err.strip() == "advgame: --threads '0': give a whole number of threads, at least 1"


def test_a_bad_thread_variable_is_one_line_and_exit_2(clean, capsys):
    clean.setenv(VARIABLE, "-1")
    assert main(["plot", "runs/x"]) == 2
    assert (
        capsys.readouterr().err.strip() == "advgame: ADVGAME_THREADS='-1': give a whole number of threads, at least 1"
    )
