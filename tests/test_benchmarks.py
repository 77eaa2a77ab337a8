"""The speed benchmarks run end to end at toy sizes and print what they promise (the timings
themselves are not checked: speed targets live in the benchmarks, never in tests)."""
from __future__ import annotations

from stytr.benchmarks import speed, train_step


def test_speed_benchmark_prints_both_paths_and_ratios(capsys):
    assert speed.main(["--preset", "toy", "--cases", "encoder", "generator", "--repeats", "1", "--warmup", "0",
                       "--threads", "1", "--no-allocator", "--no-rss"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith(("encoder", "generator"))]
    assert [r[0] for r in rows] == ["encoder", "generator"]
    for r in rows:   # GFLOP, reference s, GFLOP/s, fast s, GFLOP/s, ratio
        assert float(r[1]) > 0 and float(r[2]) > 0 and float(r[4]) > 0 and r[6].endswith("x")


def test_training_step_benchmark_prints_the_three_ratios(capsys):
    assert train_step.main(["--sizes", "toy", "--toy-batch", "2", "--repeats", "1", "--warmup", "0",
                            "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert {line.split()[1] for line in out.splitlines() if line.startswith("toy ")} >= {"pSp", "full"}
    assert "full / w/o self =" in out
