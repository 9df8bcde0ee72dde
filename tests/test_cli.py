"""The command line (``python -m rnnrs``): train/evaluate, --json, exit codes, signals, SIGKILL."""

import json
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import settings

import rnnrs
from rnnrs import checkpoint as ck
from rnnrs.cli import main
from rnnrs.trainer import train

TINY_ARGS = ["--embed", "8", "--hidden", "16", "--layers", "1", "--seq-len", "8", "--batch-size", "4", "--lr", "0.01",
             "--no-plot"]
TINY = dict(embed=8, hidden=16, layers=1, seq_len=8, batch_size=4, lr=0.01, plot=False, quiet=True)


@pytest.fixture
def corpus(tmp_path):
    words = "the time machine traveller said one two three went into the future".split()
    text = " ".join(np.random.default_rng(0).choice(words, 600)) + "\n"
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "rnnrs", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------ train/evaluate
def test_train_json_then_evaluate(tmp_path, corpus):
    out = tmp_path / "run"
    p = run_cli("train", "--corpus", corpus, "--out", out, "--epochs", "2", "--json", "--log-every", "20",
                "--sampling", "sequential", *TINY_ARGS)
    assert p.returncode == 0, p.stderr
    events = json_lines(p.stdout)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "summary" and "progress" in kinds and "val" in kinds
    s = events[-1]
    assert s["status"] == "completed" and s["steps"] > 0
    for key in ("train_ppl", "val_ppl", "tokens_per_s", "wall_time_s"):
        assert isinstance(s[key], float) and s[key] > 0
    assert sorted(os.listdir(out)) == ["checkpoint.safetensors", "model.safetensors"]
    assert rnnrs.LanguageModel.load(out).vocab_size == events[0]["data"]["vocab_size"]

    p = run_cli("evaluate", "--model", out, "--corpus", corpus, "--json")
    assert p.returncode == 0, p.stderr
    (e,) = json_lines(p.stdout)
    assert e["perplexity"] == pytest.approx(np.exp(e["loss"])) and e["bits_per_token"] == pytest.approx(
        e["loss"] / np.log(2))
    assert 1 < e["perplexity"] < 30 and e["unknown_tokens"] == 0 and e["tokens"] > e["tokens_evaluated"] > 0
    p = run_cli("evaluate", "--model", out, "--corpus", corpus)
    assert p.returncode == 0 and "perplexity" in p.stdout and "bits per character" in p.stdout


def test_defaults_alone_work(tmp_path):
    # one batch of the default 32 x 64 per epoch: the smallest corpus the defaults accept
    text = "".join(np.random.default_rng(1).choice(list("abcdefghij  \n"), 2300))
    path = tmp_path / "small.txt"
    path.write_text(text)
    p = run_cli("train", "--corpus", path, "--out", tmp_path / "run", "--no-plot")
    assert p.returncode == 0, p.stderr
    assert "TrainConfig(" in p.stdout and "completed after 10 steps" in p.stdout
    assert os.path.exists(tmp_path / "run" / "model.safetensors")


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"rnnrs {rnnrs.__version__}"
    assert main(["train", "--help"]) == 0
    assert "--corpus" in capsys.readouterr().out
    assert main([]) == 2


def test_generate_subcommand_is_registered(capsys):
    try:
        import rnnrs.generate  # noqa: F401
    except ImportError:
        assert main(["generate", "--prefix", "x"]) == 2
        assert "generate command is not available" in capsys.readouterr().err
    else:
        assert main(["generate", "--help"]) == 0


# ------------------------------------------------------------------------------------- user errors
def _one_line_error(capsys, argv, pattern):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert pattern in err, err


def test_user_errors_exit_2_with_one_line(tmp_path, corpus, capsys):
    out = str(tmp_path / "out")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "bin.txt").write_bytes(b"\x7fELF\x00\x01\x02")
    (tmp_path / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    (tmp_path / "short.txt").write_text("hello world\n" * 5)
    (tmp_path / "no_files").mkdir()
    cases = [
        (["train", "--corpus", str(tmp_path / "missing.txt"), "--out", out], "no such file"),
        (["train", "--corpus", str(tmp_path / "empty.txt"), "--out", out], "empty"),
        (["train", "--corpus", str(tmp_path / "bin.txt"), "--out", out], "binary file (NUL byte at offset 4)"),
        (["train", "--corpus", str(tmp_path / "latin1.txt"), "--out", out], "byte 0xe9 at offset 3"),
        (["train", "--corpus", str(tmp_path / "short.txt"), "--out", out], "corpus too short"),
        (["train", "--corpus", str(tmp_path / "no_files"), "--out", out], "expected a folder with text files"),
        (["train", "--corpus", str(tmp_path), "--out", out], "binary file"),  # (a folder: each of its files)
        (["train", "--corpus", corpus, "--out", out, "--lr", "-1"], "--lr: expected a finite number"),
        (["train", "--corpus", corpus, "--out", out, "--lr", "abc"], "invalid number value"),
        (["train", "--corpus", corpus, "--out", out, "--dropout", "1.5"], "--dropout: expected"),
        (["train", "--corpus", corpus, "--out", out, "--seq-len", "0"], "expected an integer >= 1"),
        (["train", "--corpus", corpus, "--out", out, "--cell", "transformer"], "invalid choice"),
        (["train", "--corpus", corpus, "--out", out, "--epochs", "2", "--steps", "3"], "not allowed with"),
        (["train", "--corpus", corpus, "--out", out, "--momentum", "0.9"], "--momentum: applies to optimizer 'sgd'"),
        (["train", "--corpus", corpus, "--out", out, "--val-fraction", "1"], "--val-fraction: expected"),
        (["train", "--corpus", corpus], "the following arguments are required: --out"),
        (["train", "--out", out], "--corpus: required"),
        (["train", "--corpus", corpus, "--out", out, "--bogus"], "unrecognized arguments: --bogus"),
        (["evaluate", "--model", str(tmp_path / "nope"), "--corpus", corpus], "--model"),
        (["evaluate", "--model", str(tmp_path / "empty.txt"), "--corpus", corpus], "empty.txt"),
    ]
    for argv, pattern in cases:
        _one_line_error(capsys, argv, pattern)


def test_resume_mismatch_and_existing_run(tmp_path, corpus, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--corpus", corpus, "--out", out, "--steps", "3", "--quiet", *TINY_ARGS]) == 0
    _one_line_error(capsys, ["train", "--corpus", corpus, "--out", out, "--steps", "3", *TINY_ARGS], "--resume")
    _one_line_error(capsys, ["train", "--out", out, "--resume", "--hidden", "32"],
                    "--hidden: the checkpoint in")
    other = tmp_path / "other.txt"
    other.write_text(open(corpus).read().upper())
    _one_line_error(capsys, ["train", "--out", out, "--resume", "--corpus", str(other)], "differs")
    assert main(["train", "--out", out, "--resume", "--steps", "6", "--quiet"]) == 0
    assert ck.load_checkpoint(out).trainer["step"] == 6


def test_errors_in_json_mode_are_also_json(tmp_path, capsys):
    assert main(["train", "--corpus", str(tmp_path / "missing.txt"), "--out", str(tmp_path), "--json"]) == 2
    out, err = capsys.readouterr()
    (e,) = json_lines(out)
    assert e["event"] == "error" and e["exit_status"] == 2 and "no such file" in e["message"]
    assert "no such file" in err


# ---------------------------------------------------------------------------------------- signals
def _start(args):
    return subprocess.Popen([sys.executable, "-m", "rnnrs", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _wait_for_event(proc, kind, timeout=60.0):
    """Read the JSON lines of ``proc`` until an event of ``kind``; returns the lines read."""
    buf, lines = b"", []
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            lines.append(json.loads(line))
            if lines[-1]["event"] == kind:
                return lines
    proc.kill()
    raise AssertionError(f"no {kind!r} event within {timeout}s; stderr: {proc.stderr.read().decode()[-2000:]}")


LONG_RUN = ["--steps", "100000", "--checkpoint-every", "5", "--json", "--log-every", "1000", "--sampling", "sequential",
            "--layers", "2", "--dropout", "0.2"]


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_and_exits_cleanly(tmp_path, corpus, sig, status):
    out = tmp_path / "run"
    proc = _start(["train", "--corpus", corpus, "--out", out, *TINY_ARGS, *LONG_RUN])
    _wait_for_event(proc, "checkpoint")
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status, stderr.decode()
    assert b"Traceback" not in stderr
    events = json_lines(stdout.decode())
    summary = events[-1]
    assert summary["event"] == "summary" and summary["status"] == "interrupted"
    assert summary["signal"] == signal.Signals(sig).name
    assert any(e["event"] == "interrupt" for e in events)
    c = ck.load_checkpoint(out)
    assert c.trainer["status"] == "interrupted" and c.trainer["step"] == summary["steps"]
    p = run_cli("train", "--out", out, "--resume", "--steps", summary["steps"] + 3, "--quiet")
    assert p.returncode == 0, p.stderr
    assert ck.load_checkpoint(out).trainer["step"] == summary["steps"] + 3


#: SIGKILL points per run of the test, from the hypothesis profile (conftest): 3 in the default
#: "fast" profile (max_examples 30), 20 in "thorough" (500); RNNRS_KILL_POINTS overrides.
KILL_POINTS = int(os.environ.get("RNNRS_KILL_POINTS", max(3, min(20, settings.default.max_examples // 25))))


def test_sigkill_at_random_moments_leaves_a_resumable_checkpoint(tmp_path, corpus):
    """Kill training at random moments (some land in the middle of writing a checkpoint: a temporary
    file is left, which resuming removes) and check every time that the last complete checkpoint
    loads and resumes to exactly the weights of an uninterrupted run."""
    rng = np.random.default_rng(12345)
    opts = dict(TINY, layers=2, dropout=0.2, sampling="sequential", checkpoint_every=5)
    mid_write = 0
    for trial in range(KILL_POINTS):
        out = tmp_path / f"run{trial}"
        proc = _start(["train", "--corpus", corpus, "--out", out, *TINY_ARGS, *LONG_RUN])
        _wait_for_event(proc, "checkpoint")
        time.sleep(float(rng.uniform(0.0, 0.4)))
        proc.kill()
        proc.communicate(timeout=30)
        mid_write += any(n.endswith(".tmp") for n in os.listdir(out))  # killed while writing a file
        c = ck.load_checkpoint(out)  # the last complete checkpoint
        step = c.trainer["step"]
        assert step > 0 and step % 5 == 0
        total = step + 7
        p = run_cli("train", "--out", out, "--resume", "--steps", total, "--quiet")
        assert p.returncode == 0, p.stderr
        assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
        resumed = ck.load_checkpoint(out)
        straight = train(corpus=corpus, steps=total, **opts)
        a, b = straight.model.state_dict(), resumed.model.state_dict()
        assert all(np.array_equal(a[k], b[k]) for k in a), f"kill point {trial} (step {step})"
    print(f"{KILL_POINTS} kill points, {mid_write} of them while a file was being written")


def test_closed_json_output_stops_training_and_keeps_the_run(tmp_path, corpus):
    # `rnnrs train --json | head -1`: the reader goes away after one line. The run must stop with a
    # checkpoint (resumable), not die and lose it.
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "rnnrs", "train", "--corpus", str(corpus), "--out", str(out),
                          "--steps", "1000000", "--json", "--log-every", "1", "--hidden", "8", "--embed", "4",
                          "--batch-size", "2", "--seq-len", "4", "--no-plot"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()
    p.stdout.close()  # as `head -1` does
    _, err = p.communicate(timeout=120)
    assert json.loads(first)["event"] == "start"
    assert p.returncode == 141, err
    assert "broken pipe" in err and "--resume" in err and "Traceback" not in err
    assert os.path.exists(out / "checkpoint.safetensors")
    r = run_cli("train", "--out", out, "--resume", "--steps", "3", "--quiet")
    assert r.returncode == 0, r.stderr
