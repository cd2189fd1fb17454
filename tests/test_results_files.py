"""Score files on disk: modes that follow the umask, and damaged files named, not tracebacks."""

import os
from datetime import datetime, timezone

import polars as pl
import pytest

from painters import aggregate, cli
from painters.results import SCORE_COLUMNS, score_path, scores_frame, stale_scores, write_atomic


def one_row(plan_key="baseline"):
    row = {column: None for column in SCORE_COLUMNS}
    row.update(model="m", plan=plan_key, variant=plan_key.split("-")[0], benchmark="choice", metric="acc",
               filter="none", value=0.5, random_baseline=0.25, higher_is_better=True, num_layers=4, limit=8.0,
               bootstrap_iters=1000, timestamp=datetime.now(timezone.utc))
    return scores_frame([row])


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        score = score_path(tmp_path, "m", "baseline", "choice")
        write_atomic(one_row(), score)
        aggregate.write_csv_atomic(pl.DataFrame({"a": [1]}), tmp_path / "summary.csv")
    finally:
        os.umask(old)
    for path in (score, tmp_path / "summary.csv"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, oct(path.stat().st_mode)


def test_figures_follow_the_umask(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from painters.figures import save_atomic

    old = os.umask(0o002)
    try:
        paths = save_atomic(plt.figure(), tmp_path / "f.png", dpi=20)
    finally:
        os.umask(old)
    assert [path.stat().st_mode & 0o777 for path in paths] == [0o664, 0o664]


def test_a_truncated_score_file_is_named_and_recomputed_by_the_workflow(tmp_path, capsys):
    good, bad = (score_path(tmp_path, "m", key, "choice") for key in ("baseline", "skip-N0"))
    write_atomic(one_row(), good)
    write_atomic(one_row("skip-N0"), bad)
    os.truncate(bad, bad.stat().st_size // 2)
    summary = tmp_path / "summary.parquet"
    assert cli.main(["aggregate", "--scores", str(tmp_path / "scores"), "--out", str(summary)]) == 2
    error = capsys.readouterr().err
    assert str(bad) in error and "delete it and run the workflow again" in error
    assert len(error.strip().splitlines()) == 1
    assert not summary.exists()  # nothing half-made
    # the workflow's staleness check takes it as a score to make again, and keeps the good one
    wanted = {"fewshot_seed": 1234, "limit": 8, "bootstrap_iters": 1000, "dtype": "auto", "max_gen_toks": None}
    stale = stale_scores([str(good), str(bad)], wanted)
    assert list(stale) == [str(bad)] and "unreadable score file" in stale[str(bad)][0]
