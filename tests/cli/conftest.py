"""Running `npplm` in the test process, and one tiny trained run of every family."""

from dataclasses import dataclass

import pytest

from npplm import cli
from npplm.training.recipe import FAMILIES

# A run of any family small enough for a test: the family's tiny preset, 2 steps.
TINY = ["--preset", "tiny", "--max-chars", "40000", "--vocab-size", "400", "--block-size", "32",
        "--batch-size", "4", "--steps", "2", "--eval-batches", "1", "--quiet"]


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def npplm(capsys):
    """npplm("train", ...) -> Result(exit status, stdout, stderr), run in this process."""
    def run(*argv):
        capsys.readouterr()
        code = cli.main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def family_runs(tmp_path_factory):
    """{family: run folder} of a tiny `npplm train` of each of the seven families."""
    root = tmp_path_factory.mktemp("families")
    runs = {}
    for family in FAMILIES:
        runs[family] = root / family
        assert cli.main(["train", "--model", family, "--out", str(runs[family]), *TINY]) == 0
    return runs
