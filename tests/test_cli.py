"""python -m leaklib: the reproduce and bench commands on tiny runs."""

from __future__ import annotations

import json

import pytest

from leaklib.__main__ import main


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("LEAKLIB_OFFLINE", "1")


def test_reproduce_idlg_writes_json_and_figure(tmp_path, capsys):
    out, fig = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["reproduce", "idlg", "--dataset", "mnist", "--trials", "2", "--iterations", "5", "--methods",
                 "dlg,idlg", "--device", "cpu", "--seed", "1", "--json", str(out), "--figure", str(fig),
                 "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert {"dataset", "trials", "device", "label_accuracy", "fidelity", "seconds"} <= set(data)
    assert data["dataset"] == "mnist" and data["trials"] == 2 and data["device"] == "cpu"
    assert set(data["label_accuracy"]) == {"dlg", "idlg"} and data["label_accuracy"]["idlg"] == 1.0
    assert list(data["fidelity"]["idlg"]) == ["0.01", "0.005", "0.001", "0.0005", "0.0001"]
    assert all(0.0 <= v <= 1.0 for m in ("dlg", "idlg") for v in data["fidelity"][m].values())
    assert data["seconds"]["idlg"] > 0
    assert fig.stat().st_size > 1000
    assert "idlg" in capsys.readouterr().out


def test_bench_prints_both_sides(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "idlg", "--trials", "2", "--iterations", "3", "--device", "cpu", "--json", str(out),
                 "--no-progress"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"sequential", "engine", "engine_no_polish", "engine_protocol"}
    assert rows["sequential"]["speedup"] == pytest.approx(1.0)
    assert "attacks/s" in capsys.readouterr().out


def test_bench_runs_the_official_loop_on_a_subset(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "idlg", "--trials", "3", "--sequential-trials", "1", "--engines", "engine_no_polish",
                 "--iterations", "3", "--device", "cpu", "--json", str(out), "--no-progress"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"sequential", "engine_no_polish"}
    assert rows["sequential"]["trials"] == 1 and rows["engine_no_polish"]["trials"] == 3
    assert rows["engine_no_polish"]["attacks_per_second"] == pytest.approx(3 / rows["engine_no_polish"]["seconds"])
    assert main(["bench", "idlg", "--trials", "2", "--sequential-trials", "3", "--no-progress"]) == 2
    assert "--sequential-trials must be at most --trials (2); got 3" in capsys.readouterr().err


def test_reproduce_labels_writes_the_table(tmp_path, capsys):
    out = tmp_path / "labels.json"
    assert main(["reproduce", "labels", "--methods", "idlg,yin,llg,geng,ilrg", "--dataset", "mnist", "--model",
                 "lenet", "--batch-sizes", "1,4", "--unique", "--trained-steps", "2", "--local-steps", "2",
                 "--trials", "2", "--seed", "1", "--device", "cpu", "--json", str(out), "--no-progress"]) == 0
    data = json.loads(out.read_text())
    methods = [(r["method"], r["batch_size"]) for r in data["rows"]]
    assert methods == [(m, 1) for m in ("idlg", "yin", "llg", "geng", "ilrg")] + [
        (m, 4) for m in ("yin", "llg", "geng", "ilrg")]
    for row in data["rows"]:
        assert set(row) == {"method", "batch_size", "duplicates", "trained_steps", "local_steps", "instance_accuracy",
                            "exact_batch_rate"}
        assert row["duplicates"] is False and row["trained_steps"] == 2 and row["local_steps"] == 2
        assert 0.0 <= row["exact_batch_rate"] <= row["instance_accuracy"] <= 1.0
    assert "instance acc" in capsys.readouterr().out


def test_reproduce_labels_reports_a_setting_it_cannot_run(capsys):
    assert main(["reproduce", "labels", "--unique", "--batch-sizes", "32", "--trials", "1", "--no-progress"]) == 2
    assert "unique labels need 32 classes" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["reproduce", "idlg", "--methods", "dlg,gradinversion"],
                                  ["reproduce", "idlg", "--trials", "0"],
                                  ["reproduce", "idlg", "--dataset", "imagenet"],
                                  ["reproduce", "labels", "--methods", "geng,zhu"],
                                  ["reproduce", "labels", "--batch-sizes", "8,0"],
                                  ["reproduce", "labels", "--duplicates", "--unique"],
                                  ["reproduce", "labels", "--trained-steps", "-1"],
                                  ["reproduce", "defenses", "--attack", "gradinversion"],
                                  ["reproduce", "defenses", "--epochs", "0"],
                                  ["reproduce", "fedavg"]])
def test_bad_arguments_exit_with_a_message(argv, capsys):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    assert "error" in capsys.readouterr().err


def test_reproduce_defenses_writes_rows(tmp_path, capsys):
    out, fig = tmp_path / "d.json", tmp_path / "d.png"
    assert main(["reproduce", "defenses", "--dataset", "mnist", "--attack", "idlg", "--defenses",
                 "none,prune:0.5+fp16,dpsgd:0.1", "--trials", "2", "--iterations", "3", "--seed", "0", "--device",
                 "cpu", "--utility", "--epochs", "1", "--json", str(out), "--figure", str(fig), "--no-progress"]) == 0
    assert fig.stat().st_size > 1000
    data = json.loads(out.read_text())
    assert [r["defense"] for r in data["rows"]] == ["none", "prune:0.5+fp16", "dpsgd:0.1"]
    for row in data["rows"]:
        assert {"defense", "label_accuracy", "fidelity", "mse_median", "test_accuracy"} <= set(row)
        assert list(row["fidelity"]) == ["0.01", "0.001", "0.0001"]
        assert 0.0 <= row["test_accuracy"] <= 1.0
    assert data["rows"][0]["epsilon"] is None and data["rows"][2]["epsilon"] > 0
    assert "prune:0.5+fp16" in capsys.readouterr().out


def test_reproduce_defenses_figure_needs_utility(tmp_path, capsys):
    assert main(["reproduce", "defenses", "--defenses", "none", "--trials", "1", "--iterations", "1",
                 "--figure", str(tmp_path / "f.png"), "--no-progress"]) == 2
    assert "needs --utility" in capsys.readouterr().err


@pytest.mark.parametrize("defenses", ["prune:1.5", "gauss:-1e-2", "blur:1", ""])
def test_reproduce_defenses_rejects_bad_strengths(defenses, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "defenses", "--defenses", defenses, "--trials", "1"])
    assert exit_info.value.code == 2
    assert "--defenses" in capsys.readouterr().err
