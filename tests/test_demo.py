"""The in-process demo: it runs to a consistent end, and bad flags get a clear error."""

import pytest

from raftfast import demo


def test_demo_commits_through_a_partition_and_agrees(capsys):
    assert demo.main(["--nodes", "3", "--proposals", "50", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "identical on every node" in out
    assert "took over" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--nodes", "2"], "--nodes must be between 3 and 9"),
        (["--nodes", "x"], "invalid int value"),
        (["--proposals", "0"], "--proposals must be positive"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_demo_rejects_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
