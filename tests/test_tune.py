"""rnnrs.tune against a real local Ray (CI installs rnnrs[ray] and sets RNNRS_REQUIRED=1, so
nothing skips there; elsewhere the Ray tests skip when Ray is not installed).

One Ray per module (2 CPUs, no dashboard, a 100 MB object store, a short temp dir because socket
paths are limited to 107 bytes); a few-KB corpus, hidden 8-16, tens of steps.
"""

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import rnnrs
from rnnrs import cli
from rnnrs.checkpoint import read_tensors

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

try:
    import ray
    from ray import tune as rtune
except ImportError:
    if os.environ.get("RNNRS_REQUIRED"):
        raise
    ray = rtune = None
needs_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed (pip install 'rnnrs[ray]')")

TEXT = ("the time traveller for so it will be convenient to speak of him was expounding a recondite "
        "matter to us his grey eyes shone and twinkled and his usually pale face was flushed and animated\n") * 24
#: What every trial and its reference run share (small and quick).
BASE = dict(embed=8, seq_len=16, batch_size=4, layers=1, cell="gru", lr=5e-3)


@pytest.fixture(scope="module")
def ray_session():
    if ray is None:
        pytest.skip("Ray is not installed")
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 ** 2, _temp_dir=temp,
             logging_level=logging.WARNING, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def _tensors(run_dir):
    return read_tensors(os.path.join(run_dir, "checkpoint.safetensors"))[0]


def _assert_same_bits(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), f"{k} differs"


# ======================================================================== without Ray running
def test_import_rnnrs_does_not_import_ray():
    code = ("import sys, rnnrs, rnnrs.tune, rnnrs.cli; rnnrs.tune.add_arguments; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_works_without_starting_ray(capsys):
    assert cli.main(["tune", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--corpus", "--out", "--space", "--space-preset", "--samples", "--max-steps", "--cpus-per-trial",
                 "--resume", "--json", "--address"):
        assert flag in out


def test_missing_ray_names_the_extra(tmp_path):
    # A Ray that cannot be imported: an empty 'ray' package that raises on import, first on the path.
    fake = tmp_path / "fake" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray (test)')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "fake"))
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    p = subprocess.run([sys.executable, "-m", "rnnrs", "tune", "--corpus", str(corpus), "--out", str(tmp_path / "s"),
                        "--space-preset", "small", "--max-steps", "10"], capture_output=True, text=True, env=env)
    assert p.returncode == 2
    assert "pip install 'rnnrs[ray]'" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    code = "import rnnrs.tune\ntry:\n    rnnrs.tune.tuner('x', {}, max_steps=1)\nexcept ImportError as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout
    assert "pip install 'rnnrs[ray]'" in out


def test_trial_seed_is_derived_from_the_sweep_seed():
    a = rnnrs.tune.trial_seed({"hidden": 8, "lr": 0.01}, 0)
    assert a == rnnrs.tune.trial_seed({"lr": 0.01, "hidden": 8}, 0)
    assert a != rnnrs.tune.trial_seed({"hidden": 8, "lr": 0.01}, 1)
    assert a != rnnrs.tune.trial_seed({"hidden": 16, "lr": 0.01}, 0)
    assert rnnrs.tune.trial_seed({"hidden": 8, "seed": 7}, 3) == 7
    assert rnnrs.tune.trial_seed({"hidden": 8, "_num_threads": 2}, 0) == rnnrs.tune.trial_seed({"hidden": 8}, 0)


# ============================================================ errors before any trial starts
@needs_ray
def test_unknown_space_key_is_refused():
    with pytest.raises(ValueError, match=r"unknown keys \['hiden'\].*TrainConfig"):
        rnnrs.tune.tuner(TEXT, {"hiden": rtune.choice([8, 16])}, max_steps=10)
    with pytest.raises(ValueError, match=r"train options: unknown keys \['bogus'\]"):
        rnnrs.tune.tuner(TEXT, {}, max_steps=10, bogus=1)
    with pytest.raises(ValueError, match="'steps' cannot be set in a sweep: set by max_steps"):
        rnnrs.tune.tuner(TEXT, {"steps": 5}, max_steps=10)
    with pytest.raises(ValueError, match="cell: expected one of"):
        rnnrs.tune.tuner(TEXT, {"cell": rtune.choice(["gru", "transformer"])}, max_steps=10)
    with pytest.raises(TypeError, match="param_space: expected a dict"):
        rnnrs.tune.tuner(TEXT, [("hidden", 8)], max_steps=10)


@needs_ray
def test_val_fraction_zero_is_refused():
    with pytest.raises(ValueError, match="val_fraction: expected a fraction in \\(0, 1\\).*got 0"):
        rnnrs.tune.tuner(TEXT, {"hidden": 8}, max_steps=10, val_fraction=0)
    with pytest.raises(ValueError, match="val_fraction"):
        rnnrs.tune.tuner(TEXT, {"val_fraction": rtune.grid_search([0.1, 0.0])}, max_steps=10)


@needs_ray
def test_data_and_space_file_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        rnnrs.tune.tuner(None, {}, max_steps=10, corpus=str(tmp_path / "missing.txt"))
    named = tmp_path / "named.txt"
    named.write_text(TEXT)
    with pytest.raises(ValueError, match="a str is the corpus text itself, got the name of a file"):
        rnnrs.tune.tuner(str(named), {}, max_steps=10)
    with pytest.raises(ValueError, match="no such file"):  # several files, as --corpus takes them
        rnnrs.tune.tuner([str(named), str(tmp_path / "a.txt")], {}, max_steps=10)
    assert rnnrs.tune.tuner([str(named), str(named)], {}, max_steps=10, storage_path=str(tmp_path / "s")) is not None
    with pytest.raises(ValueError, match="max_steps: expected an integer >= 1, got 0"):
        rnnrs.tune.tuner(TEXT, {}, max_steps=0)
    with pytest.raises(ValueError, match=r"space\['lr'\]\.loguniform: expected 2 numbers"):
        rnnrs.tune.space_from_json({"lr": {"loguniform": [1e-3]}})
    with pytest.raises(ValueError, match=r"space\['lr'\]: expected a constant or a one-key object"):
        rnnrs.tune.space_from_json({"lr": {"log": [1e-3, 1e-2]}})
    bad = tmp_path / "space.json"
    bad.write_text("{hidden: 8}")
    with pytest.raises(ValueError, match="expected JSON, got an error at line 1"):
        rnnrs.tune.space_from_json(bad)
    with pytest.raises(ValueError, match="relative|absolute"):
        rnnrs.tune.trainable({}, corpus="relative.txt")


# =========================================================================== sweeps on Ray
@needs_ray
def test_asha_sweep_reports_finite_perplexities_and_the_best_run_generates(ray_session, tmp_path):
    space = {"hidden": rtune.choice([8, 16]), "lr": rtune.loguniform(2e-3, 2e-2), **{k: v for k, v in BASE.items()
                                                                                   if k != "lr"}}
    result = rnnrs.tune.sweep(TEXT, space, max_steps=40, report_every=10, num_samples=4, seed=3,
                              storage_path=tmp_path / "sweep", verbose=0)
    assert len(result.table) == 4 and all(r["status"] == "TERMINATED" for r in result.table)
    for r in result.results:
        ppl = list(r.metrics_dataframe["val_ppl"])
        assert ppl and all(math.isfinite(x) for x in ppl)
        assert set(r.metrics_dataframe["step"]) <= {10, 20, 30, 40}
    assert math.isfinite(result.best_val_ppl) and result.best_val_ppl == min(r["best_val_ppl"] for r in result.table)
    assert set(result.best_config) >= {"hidden", "lr", "seed"}
    assert result.best_dir.startswith(str(tmp_path / "sweep"))
    gen = rnnrs.LyricGenerator.load(result.best_dir)
    text = gen.generate("the time", length=20, seed=0)
    assert text.startswith("the time") and len(text) > len("the time")
    # The run directory is an ordinary one: the model file holds the best validation so far.
    info = rnnrs.checkpoint.load_model(result.best_dir)[2]
    assert info["best"] and math.isclose(info["val_ppl"], result.best_val_ppl, rel_tol=1e-9)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The crash tests' config trained by rnnrs.train without interruption."""
    def run(seed):
        out = tmp_path_factory.mktemp("reference")
        rnnrs.train(TEXT, **BASE, hidden=12, seed=seed, steps=40, val_every=10, checkpoint_every=10, sample_every=0,
                    plot=False, quiet=True, out=str(out))
        return _tensors(str(out))
    return run


@needs_ray
def test_trial_killed_once_resumes_bit_identically(ray_session, tmp_path, reference):
    space = {**BASE, "hidden": 12, "_crash_after_steps": 25}
    result = rnnrs.tune.sweep(TEXT, space, max_steps=40, report_every=10, num_samples=1, scheduler="fifo",
                              max_failures=1, storage_path=tmp_path / "sweep", verbose=0)
    (r,) = result.results
    assert r.error is None and r.metrics["step"] == 40
    assert r.metrics["resumed_step"] == 20  # it died after step 25 and restarted from the step-20 checkpoint
    assert r.metrics["seed"] == rnnrs.tune.trial_seed({k: v for k, v in space.items() if k[0] != "_"}, 0)
    _assert_same_bits(_tensors(r.checkpoint.path), reference(r.metrics["seed"]))


@needs_ray
def test_errored_sweep_restored_resumes_bit_identically(ray_session, tmp_path, reference):
    space = {**BASE, "hidden": 12, "_crash_after_steps": 25}
    path = tmp_path / "sweep"
    results = rnnrs.tune.tuner(TEXT, space, max_steps=40, report_every=10, num_samples=1, scheduler="fifo",
                               max_failures=0, storage_path=path, verbose=0).fit()
    assert results.num_errors == 1 and results[0].metrics["step"] == 20
    assert [row["status"] for row in rnnrs.tune.summarize(results).table] == ["ERROR"]
    with pytest.raises(ValueError, match="expected the text the sweep"):
        rnnrs.tune.restore(path, TEXT + "x")
    results = rnnrs.tune.restore(path, TEXT).fit()
    (r,) = results
    assert r.error is None and r.metrics["step"] == 40 and r.metrics["resumed_step"] == 20
    _assert_same_bits(_tensors(r.checkpoint.path), reference(r.metrics["seed"]))


@needs_ray
def test_trials_in_one_reused_actor_each_see_their_thread_share(ray_session, tmp_path):
    # 1 and 2 threads forced by the private hook, then a trial on its Ray share (1 CPU) — all three in
    # the same actor process, one after the other.
    space = {**BASE, "hidden": 8, "_num_threads": rtune.grid_search([1, 2, None])}
    results = rnnrs.tune.tuner(TEXT, space, max_steps=10, report_every=10, num_samples=1, scheduler="fifo",
                               max_concurrent_trials=1, cpus_per_trial=1, storage_path=tmp_path / "sweep",
                               verbose=0).fit()
    seen = sorted(((r.config["_num_threads"] or 0), r.metrics["num_threads"], r.metrics["pid"]) for r in results)
    assert [(want, got) for want, got, _ in seen] == [(0, 1), (1, 1), (2, 2)]
    assert len({pid for _, _, pid in seen}) == 1, "the actor was not reused"
    results = rnnrs.tune.tuner(TEXT, {**BASE, "hidden": 8}, max_steps=10, report_every=10, num_samples=1,
                               scheduler="fifo", cpus_per_trial=2, storage_path=tmp_path / "two", verbose=0).fit()
    assert results[0].metrics["num_threads"] == 2


@needs_ray
def test_cli_json_prints_one_object_per_line_and_a_summary(ray_session, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"hidden": {"choice": [8, 16]}, "lr": {"loguniform": [2e-3, 2e-2]},
                                 **{k: v for k, v in BASE.items() if k != "lr"}}))
    out = tmp_path / "sweep"
    args = ["tune", "--corpus", str(corpus), "--out", str(out), "--space", str(space), "--samples", "2",
            "--max-steps", "20", "--report-every", "10", "--scheduler", "fifo", "--json"]
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert events[0]["event"] == "start" and events[-1]["event"] == "summary"
    results = [e for e in events if e["event"] == "result"]
    assert len(results) == 4 and {e["step"] for e in results} == {10, 20}
    summary = events[-1]
    assert summary["best_val_ppl"] == min(e["val_ppl"] for e in results)
    assert len(summary["trials"]) == 2 and summary["best_dir"].startswith(str(out))
    assert os.path.isfile(os.path.join(summary["best_dir"], "model.safetensors"))
    # The best run directory is what `rnnrs generate --model` takes.
    assert cli.main(["generate", "--model", summary["best_dir"], "--prefix", "the time", "--length", "10"]) == 0
    assert "the time" in capsys.readouterr().out
    # A second start in the same --out is refused; --resume continues (here: nothing left to do).
    assert cli.main(args) == 2
    assert "already holds a sweep" in capsys.readouterr().err
    assert cli.main(["tune", "--out", str(out), "--resume", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["event"] == "summary"
    assert cli.main(["tune", "--out", str(out), "--resume"]) == 0
    human = capsys.readouterr().out
    assert f"best: val ppl {summary['best_val_ppl']:.4f} with " in human
    assert f"  model: {summary['best_dir']}\n" in human and "TERMINATED" in human


@needs_ray
def test_nonfinite_trial_reports_inf_and_stops(ray_session, tmp_path):
    space = {**BASE, "hidden": 8, "cell": "rnn_relu", "optimizer": "sgd", "clip": None,
             "lr": rtune.grid_search([1e3, 5e-2])}
    result = rnnrs.tune.sweep(TEXT, space, max_steps=30, report_every=10, num_samples=1, scheduler="fifo",
                              storage_path=tmp_path / "sweep", verbose=0)
    by_lr = {r.config["lr"]: r for r in result.results}
    bad, good = by_lr[1e3], by_lr[5e-2]
    assert bad.error is None and bad.metrics["val_ppl"] == math.inf  # inf, never NaN
    assert bad.metrics["step"] < 30 and bad.checkpoint is None
    assert good.metrics["step"] == 30 and math.isfinite(good.metrics["val_ppl"])
    assert result.best_config["lr"] == 5e-2 and result.best_dir == result.table[1 if result.table[0]["lr"] == 1e3
                                                                                 else 0]["dir"]
