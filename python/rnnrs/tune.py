"""Hyper-parameter sweeps on Ray Tune: ``rnnrs.tune`` and ``python -m rnnrs tune``.

Each trial is an ordinary rnnrs training run (:class:`rnnrs.Trainer`). Its run directory
(``model.safetensors`` + ``checkpoint.safetensors``) is the trial's Ray checkpoint, reported with
``ray.tune.report`` after each validation; a restarted or paused trial gets it back with
``ray.tune.get_checkpoint()`` and resumes bit-identically. ``checkpoint_every = val_every =
report_every``, so the checkpoint Ray copies is the one of the reported validation. Metrics:
``val_ppl`` (``inf`` once the loss is non-finite; the trial then stops), ``train_ppl``, ``step``,
``tokens_per_s``, ``best_val_ppl``, ``num_threads``, ``seed`` and ``resumed_step`` (the step the
session resumed from, 0 for a fresh start).

Ray is optional (``pip install 'rnnrs[ray]'``) and imported inside the functions only, so this
module imports without it. See ``docs/tune.md``::

    import rnnrs.tune
    from ray import tune
    result = rnnrs.tune.sweep(open("timemachine.txt").read(),
                              {"hidden": tune.choice([64, 128]), "lr": tune.loguniform(1e-3, 1e-2)},
                              max_steps=400, num_samples=8, storage_path="runs/sweep")
    print(result.best_config, result.best_val_ppl, result.best_dir)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = ["trainable", "tuner", "sweep", "restore", "SweepResult", "trial_seed", "space_from_json",
           "PRESETS", "add_arguments", "run"]

#: The file rnnrs writes next to Ray's experiment state: what a restore needs to rebuild the
#: trainable (JSON; the text given by value is not stored, only its SHA-256).
SPEC_FILE = "rnnrs-tune.json"
#: The run directory inside each trial's working directory.
RUN_DIR = "run"
#: Options a sweep sets itself (or that only make sense for one run).
_FORCED = {
    "corpus": "pass the corpus as data (text or a path), not in the search space",
    "out": "each trial's run directory is chosen by rnnrs.tune (it is the trial's Ray checkpoint)",
    "resume": "trials resume from their Ray checkpoint by themselves; continue a sweep with rnnrs.tune.restore",
    "overwrite": "each trial has its own run directory",
    "steps": "set by max_steps",
    "epochs": "a sweep is measured in steps (max_steps)",
    "val_every": "forced to report_every",
    "checkpoint_every": "forced to report_every",
    "json": "trials print nothing", "quiet": "trials print nothing",
}
#: Private test hooks a param space or the fixed options may hold (see tests/test_tune.py).
_HOOKS = ("_num_threads", "_crash_after_steps")


def _ray_missing(e: ImportError) -> ImportError:
    return ImportError(f"rnnrs.tune needs Ray Tune: pip install 'rnnrs[ray]' ({e})")


def _import_tune() -> Any:
    try:
        from ray import tune
    except ImportError as e:
        raise _ray_missing(e) from None
    return tune


# ====================================================================================== search spaces
def _presets() -> Dict[str, Dict[str, Any]]:
    return {
        # 2 cells x 2 sizes x 2 depths, lr log-uniform over a decade: a few minutes on 2 cores.
        "small": {"cell": {"choice": ["lstm", "gru"]}, "hidden": {"choice": [64, 128]},
                  "layers": {"choice": [1, 2]}, "lr": {"loguniform": [1e-3, 1e-2]},
                  "dropout": {"choice": [0.0, 0.1]}, "embed": 32, "seq_len": 64, "batch_size": 32},
    }


#: Named search spaces (in the JSON form of :func:`space_from_json`) for ``--space-preset``.
PRESETS = _presets()

_DOMAINS = ("choice", "grid", "uniform", "loguniform", "randint", "lograndint", "quniform", "qloguniform",
            "qrandint")


def space_from_json(spec: Any) -> Dict[str, Any]:
    """A Tune param space from its JSON form (``--space space.json``): a dict of TrainConfig field ->
    a constant, or a one-key dict ``{"choice": [...]}``, ``{"grid": [...]}``, ``{"uniform": [lo, hi]}``,
    ``{"loguniform": [lo, hi]}``, ``{"randint": [lo, hi]}`` (hi excluded), ``{"lograndint": [lo, hi]}``,
    ``{"quniform": [lo, hi, q]}``, ``{"qloguniform": [lo, hi, q]}`` or ``{"qrandint": [lo, hi, q]}``.
    A path (str or PathLike) to such a JSON file is read first."""
    if isinstance(spec, (str, os.PathLike)):
        path = os.fspath(spec)
        try:
            with open(path, encoding="utf-8") as f:
                spec = json.load(f)
        except OSError as e:
            raise ValueError(f"space {path}: cannot read it: {e.strerror or e}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"space {path}: expected JSON, got an error at line {e.lineno} column {e.colno}: "
                             f"{e.msg}") from None
    if not isinstance(spec, dict):
        raise TypeError(f"space: expected a JSON object of option -> value or domain, got {type(spec).__name__}")
    tune = _import_tune()
    out: Dict[str, Any] = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            if len(value) != 1 or next(iter(value)) not in _DOMAINS:
                raise ValueError(f"space[{key!r}]: expected a constant or a one-key object "
                                 f"{{{'|'.join(_DOMAINS)}: [...]}}, got {json.dumps(value)[:100]}")
            kind, args = next(iter(value.items()))
            if not isinstance(args, list) or not args:
                raise ValueError(f"space[{key!r}].{kind}: expected a non-empty list, got {json.dumps(args)[:100]}")
            if kind in ("choice", "grid"):
                out[key] = tune.choice(args) if kind == "choice" else tune.grid_search(args)
                continue
            want = 3 if kind.startswith("q") else 2
            if len(args) != want or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
                raise ValueError(f"space[{key!r}].{kind}: expected {want} numbers, got {json.dumps(args)[:100]}")
            try:
                out[key] = getattr(tune, kind)(*args)
            except (ValueError, TypeError, AssertionError) as e:
                raise ValueError(f"space[{key!r}].{kind}: {e or 'invalid bounds'} (got {args})") from None
        else:
            out[key] = value
    return out


def _candidates(value: Any) -> Optional[List[Any]]:
    """The values a param-space entry can take when they can be listed (constants, grid searches,
    categorical domains); the bounds of a numeric range; None otherwise."""
    from ray.tune.search.sample import Categorical, Domain, Float, Integer
    if isinstance(value, dict) and set(value) == {"grid_search"}:
        return list(value["grid_search"])
    if isinstance(value, Categorical):
        return list(value.categories)
    if isinstance(value, (Float, Integer)):
        lo, hi = value.lower, value.upper
        return [lo] + ([hi - 1] if isinstance(value, Integer) else [])
    if isinstance(value, Domain) or callable(value):
        return None
    return [value]


def _check_options(param_space: Mapping[str, Any], fixed: Mapping[str, Any]) -> None:
    """Refuse, before any trial starts, what no trial could run with: keys that are not TrainConfig
    fields, options a sweep sets itself, ``val_fraction=0``, and invalid listed values."""
    from .trainer import ConfigError, TrainConfig
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if not isinstance(param_space, Mapping):
        raise TypeError(f"param_space: expected a dict of TrainConfig field -> value or Tune search space, got "
                        f"{type(param_space).__name__}")
    for where, keys in (("param_space", param_space), ("train options", fixed)):
        unknown = sorted(k for k in keys if k not in fields and k not in _HOOKS)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}: expected rnnrs.TrainConfig fields (e.g. hidden, "
                             "layers, cell, dropout, lr, embed, seq_len, batch_size, optimizer, weight_decay)")
        for k in keys:
            if k in _FORCED:
                raise ValueError(f"{where}: {k!r} cannot be set in a sweep: {_FORCED[k]}")
    values: Dict[str, List[Any]] = {k: [v] for k, v in fixed.items() if k not in _HOOKS}
    for k, v in param_space.items():
        if k in _HOOKS:
            continue
        listed = _candidates(v)
        if listed is not None:
            values[k] = listed
    for v in values.get("val_fraction", []):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0:
            raise ValueError("val_fraction: expected a fraction in (0, 1) (trials are compared by their "
                             "validation perplexity), got 0")
    for k, listed in values.items():
        for v in listed:
            try:
                TrainConfig(**{k: v}).validate()
            except ConfigError as e:
                message = str(e)
                if message.startswith(("min_lr", "momentum")):  # depends on other options; checked per trial
                    continue
                raise ValueError(f"{'param_space' if k in param_space else 'train options'}: {message}") from None


def trial_seed(config: Mapping[str, Any], seed: int = 0) -> int:
    """The training seed of the trial with ``config`` in a sweep of ``seed``: ``config["seed"]`` if
    the param space sets it, else a hash of ``seed`` and the trial's config (so a trial keeps its
    seed when restarted or restored, whatever the order trials run in)."""
    if "seed" in config:
        return int(config["seed"])
    items = {k: v for k, v in config.items() if k not in _HOOKS}
    text = json.dumps([int(seed), items], sort_keys=True, default=repr)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") % (2 ** 31)


# ========================================================================================= trainable
def _trial_threads() -> int:
    """The CPUs Ray gave this trial (its placement group's CPUs), at least 1."""
    try:
        from ray import tune
        resources = tune.get_context().get_trial_resources().required_resources
        cpus = float(resources.get("CPU", 0))
    except Exception:  # outside a Tune session, or an old Ray
        cpus = 0.0
    return max(1, int(cpus))


def _check_corpus(text: Any, corpus: Any) -> Tuple[Optional[str], Optional[str]]:
    if (text is None) == (corpus is None):
        raise ValueError("data: expected exactly one of text= (the corpus as a str) and corpus= (an absolute "
                         f"path), got {'both' if text is not None else 'neither'}")
    if text is not None and not isinstance(text, str):
        raise TypeError(f"text: expected the corpus as a str, got {type(text).__name__}")
    if corpus is not None:
        paths = list(corpus) if isinstance(corpus, (list, tuple)) else [corpus]
        for p in paths:
            if not isinstance(p, (str, os.PathLike)):
                raise TypeError(f"corpus: expected a path (str or os.PathLike) or a list of them, got "
                                f"{type(p).__name__}")
            if not os.path.isabs(os.fspath(p)):
                raise ValueError(f"corpus: expected absolute paths (trials change directory), got {os.fspath(p)!r}")
        corpus = [os.fspath(p) for p in paths] if isinstance(corpus, (list, tuple)) else os.fspath(corpus)
    return text, corpus


def trainable(config: Dict[str, Any], *, text: Optional[str] = None, corpus: Optional[str] = None,
              **fixed: Any) -> None:
    """A Tune function trainable: one rnnrs training run with ``{**fixed, **config}``.

    ``config`` and ``fixed`` hold :class:`rnnrs.TrainConfig` fields; ``fixed`` may also hold
    ``report_every`` (default 100: validate, checkpoint and report every that many steps),
    ``max_steps`` (the run's ``steps``) and ``sweep_seed`` (see :func:`trial_seed`). Give the data as
    ``text=`` (a str) or ``corpus=`` (an absolute path), e.g.
    ``tune.with_parameters(rnnrs.tune.trainable, text=text, max_steps=400)``. The trial computes on
    its CPU share (:func:`rnnrs.set_num_threads`), writes its run directory in the trial's working
    directory, reports it as its checkpoint after each validation and resumes from
    ``ray.tune.get_checkpoint()`` when Ray restarts it."""
    import rnnrs
    from ray import tune
    from ._rnnrs import NonFiniteError
    from .trainer import StopTraining, Trainer, TrainConfig

    text, corpus = _check_corpus(text, corpus)
    fixed = dict(fixed)
    report_every = int(fixed.pop("report_every", 100))
    if report_every < 1:
        raise ValueError(f"report_every: expected an integer >= 1, got {report_every}")
    max_steps = fixed.pop("max_steps", None)
    sweep_seed = int(fixed.pop("sweep_seed", 0))
    opts = {**fixed, **config}
    num_threads = opts.pop("_num_threads", None)
    crash_after = opts.pop("_crash_after_steps", None)
    seed = trial_seed(config, sweep_seed)
    opts.pop("seed", None)
    threads = int(num_threads) if num_threads else _trial_threads()
    rnnrs.set_num_threads(threads)

    run_dir = os.path.join(tune.get_context().get_trial_dir() or os.getcwd(), RUN_DIR)
    checkpoint = tune.get_checkpoint()
    shutil.rmtree(run_dir, ignore_errors=True)  # the Ray checkpoint is the truth, not a local leftover
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            shutil.copytree(d, run_dir)
    session = dict(val_every=report_every, checkpoint_every=report_every, quiet=True, json=False,
                   sample_every=opts.pop("sample_every", 0), plot=opts.pop("plot", False))
    if max_steps is not None:
        session["steps"] = int(max_steps)
    data = dict(text=text) if text is not None else {}
    if checkpoint is not None:
        trainer = Trainer.resume(run_dir, callbacks=(), **data, **session)
    else:
        cfg = TrainConfig(corpus=corpus)
        trainer = Trainer(cfg, out=run_dir, seed=seed, callbacks=(), **data, **opts, **session)
    state: Dict[str, Any] = {"val": None}

    def report(metrics: Dict[str, Any], with_checkpoint: bool) -> None:
        metrics = dict(metrics, num_threads=rnnrs.get_num_threads(), seed=seed,
                       resumed_step=trainer.resumed_step or 0)
        ckpt = tune.Checkpoint.from_directory(run_dir) if with_checkpoint else None
        tune.report(metrics, checkpoint=ckpt)

    def on_event(ev: Dict[str, Any]) -> None:
        kind = ev["event"]
        if kind == "step" and crash_after is not None and checkpoint is None and ev["step"] >= int(crash_after):
            os._exit(1)  # test hook: the trial's process dies once (a restarted trial has a checkpoint)
        elif kind == "val":
            state["val"] = ev
        elif kind in ("checkpoint", "checkpoint_error") and state["val"] is not None \
                and state["val"]["step"] == ev["step"]:
            v, state["val"] = state["val"], None
            val_ppl = v["val_ppl"] if math.isfinite(v["val_ppl"]) else math.inf
            train_ppl = v["train_ppl"] if math.isfinite(v["train_ppl"]) else math.inf
            report({"val_ppl": val_ppl, "train_ppl": train_ppl, "step": ev["step"],
                    "tokens_per_s": trainer.session_tokens / max(trainer.session_train_time, 1e-9),
                    "best_val_ppl": math.exp(trainer.best_val) if trainer.best_val < 700 else math.inf},
                   kind == "checkpoint")
            if not math.isfinite(val_ppl):
                raise StopTraining

    trainer.callbacks.append(on_event)
    try:
        trainer.run()
    except NonFiniteError:
        report({"val_ppl": math.inf, "train_ppl": math.inf, "step": trainer.step,
                "tokens_per_s": trainer.session_tokens / max(trainer.session_train_time, 1e-9),
                "best_val_ppl": math.exp(trainer.best_val) if trainer.best_val < 700 else math.inf}, False)


# ============================================================================================= tuner
def _data_options(data: Any, fixed: Dict[str, Any]) -> Dict[str, Any]:
    """``{"text": ...}`` or ``{"corpus": absolute path}`` from ``data`` (a str is the text itself, an
    os.PathLike a file) or ``corpus=`` among the train options."""
    corpus = fixed.pop("corpus", None)
    if data is not None and corpus is not None:
        raise ValueError("data: expected the corpus as data or as corpus=, got both")
    if data is None and corpus is None:
        raise ValueError("data: expected the corpus text (a str), a path (os.PathLike) or corpus='file.txt', "
                         "got none")
    if isinstance(data, str):
        if not data:
            raise ValueError("data: expected some text, got an empty string")
        if "\n" not in data and len(data) < 4096 and os.path.isfile(data):
            raise ValueError(f"data: a str is the corpus text itself, got the name of a file ({data!r}); pass "
                             "pathlib.Path(...) or corpus=... to train on the file")
        return {"text": data}
    path = data if data is not None else corpus
    many = isinstance(path, (list, tuple))
    for p in path if many else [path]:
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"data: expected the text (str), a corpus path (os.PathLike) or a list of paths, got "
                            f"{type(p).__name__}")
    from .corpus import corpus_files
    from .trainer import read_corpus
    paths = [os.path.abspath(os.fspath(p)) for p in (path if many else [path])]
    for f in corpus_files(paths):  # a missing or unreadable file is a ConfigError (a ValueError) now, not in every trial
        read_corpus(f)
    return {"corpus": paths if many else paths[0]}


def _cli_corpus(paths: List[str]) -> Any:
    """``--corpus``: one path (a ``Path``: a file, not text) or a list of them."""
    return Path(os.path.abspath(paths[0])) if len(paths) == 1 else [os.path.abspath(p) for p in paths]


def _split_storage(storage_path: Optional[Any]) -> Tuple[Optional[str], Optional[str]]:
    """``storage_path`` is the sweep's directory: Ray's (storage_path, name) are its parent and name."""
    if storage_path is None:
        return None, None
    path = os.fspath(storage_path)
    if "://" not in path:
        path = os.path.abspath(path)
    path = path.rstrip("/")
    parent, name = path.rsplit("/", 1)
    return parent or "/", name


def _resources_trainable(data: Mapping[str, Any], cpus_per_trial: float, fixed: Mapping[str, Any]) -> Any:
    tune = _import_tune()
    fn = tune.with_parameters(trainable, **data, **fixed)
    return tune.with_resources(fn, {"cpu": cpus_per_trial})


def _write_spec(storage_path: Optional[str], spec: Dict[str, Any]) -> None:
    if storage_path is None:
        return
    parent, name = _split_storage(storage_path)
    text = json.dumps(spec, indent=1, sort_keys=True)
    if "://" in str(parent):
        import pyarrow.fs
        fs, root = pyarrow.fs.FileSystem.from_uri(f"{parent}/{name}")
        fs.create_dir(root, recursive=True)
        with fs.open_output_stream(f"{root}/{SPEC_FILE}") as f:
            f.write(text.encode("utf-8"))
        return
    path = os.path.join(str(parent), str(name))
    os.makedirs(path, exist_ok=True)
    from ._atomic import atomic_write_bytes
    atomic_write_bytes(os.path.join(path, SPEC_FILE), text.encode("utf-8"))


def _read_spec(path: str) -> Dict[str, Any]:
    parent, name = _split_storage(path)
    if "://" in str(parent):
        import pyarrow.fs
        fs, root = pyarrow.fs.FileSystem.from_uri(f"{parent}/{name}")
        with fs.open_input_stream(f"{root}/{SPEC_FILE}") as f:
            spec: Dict[str, Any] = json.loads(f.read().decode("utf-8"))
            return spec
    file = os.path.join(str(parent), str(name), SPEC_FILE)
    try:
        with open(file, encoding="utf-8") as f:
            loaded: Dict[str, Any] = json.load(f)
            return loaded
    except FileNotFoundError:
        raise ValueError(f"{path}: expected a sweep directory made by rnnrs.tune (holding {SPEC_FILE}), got none") \
            from None


def tuner(data: Any, param_space: Mapping[str, Any], *, max_steps: int, metric: str = "val_ppl",
          mode: str = "min", num_samples: int = 8, scheduler: Any = "asha", grace_steps: Optional[int] = None,
          report_every: int = 100, cpus_per_trial: float = 1, max_concurrent_trials: Optional[int] = None,
          search_alg: Any = None, seed: int = 0, storage_path: Optional[Any] = None, keep_checkpoints: int = 2,
          max_failures: int = 1, callbacks: Optional[List[Any]] = None, verbose: Optional[int] = None,
          reuse_actors: bool = True, **fixed_train_options: Any) -> Any:
    """A ``ray.tune.Tuner`` sweeping ``param_space`` (TrainConfig field -> Tune search space or
    constant) over ``data`` (the text as a str, or a corpus path as os.PathLike / ``corpus=``).

    Each trial trains ``max_steps`` steps (``fixed_train_options`` are the other TrainConfig
    fields), validating, checkpointing and reporting every ``report_every`` steps, on
    ``cpus_per_trial`` CPUs (Ray's resource and the trial's thread count). ``scheduler``: ``"asha"``
    (time attribute ``step``, grace period ``grace_steps``, default ``report_every``), ``"fifo"``/None,
    or a Tune scheduler. Configs are drawn with ``seed`` (unless ``search_alg`` is given) and each
    trial's training seed derives from it (:func:`trial_seed`). ``storage_path`` is the sweep's
    directory (local, shared, or a URI; default ``~/ray_results/rnnrs-tune-<date>_<time>``); it keeps the best
    ``keep_checkpoints`` checkpoints of each trial (and the latest), and a trial that fails is
    restarted from its checkpoint up to ``max_failures`` times. ``callbacks`` and ``verbose`` go to
    ``ray.tune.RunConfig``. Errors in the options are raised here, before any trial starts."""
    tune = _import_tune()
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    fixed = dict(fixed_train_options)

    def positive(name: str, v: Any, minimum: int = 1) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f"{name}: expected an integer >= {minimum}, got {v!r}")
        return v

    positive("max_steps", max_steps)
    positive("num_samples", num_samples)
    positive("report_every", report_every)
    positive("keep_checkpoints", keep_checkpoints)
    positive("max_failures", max_failures, 0)
    positive("seed", seed, 0)
    if grace_steps is not None:
        positive("grace_steps", grace_steps)
    if max_concurrent_trials is not None:
        positive("max_concurrent_trials", max_concurrent_trials)
    if isinstance(cpus_per_trial, bool) or not isinstance(cpus_per_trial, (int, float)) or not cpus_per_trial > 0:
        raise ValueError(f"cpus_per_trial: expected a number > 0, got {cpus_per_trial!r}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode: expected 'min' or 'max', got {mode!r}")
    if metric not in ("val_ppl", "train_ppl", "best_val_ppl", "tokens_per_s"):
        raise ValueError(f"metric: expected one of 'val_ppl', 'train_ppl', 'best_val_ppl', 'tokens_per_s', "
                         f"got {metric!r}")
    data_opts = _data_options(data, fixed)
    _check_options(param_space, fixed)
    if scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="step", max_t=max_steps,
                                  grace_period=min(max_steps, grace_steps or report_every))
    elif scheduler in ("fifo", None):
        scheduler = FIFOScheduler()
    elif isinstance(scheduler, str):
        raise ValueError(f"scheduler: expected 'asha', 'fifo', None or a Tune scheduler, got {scheduler!r}")
    if search_alg is None:
        search_alg = BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent_trials or 0)
    trial_fixed = dict(fixed, max_steps=max_steps, report_every=report_every, sweep_seed=seed)
    if storage_path is None:  # a directory of its own, so that restore() finds rnnrs-tune.json in it
        storage_path = os.path.join(os.path.expanduser("~"), "ray_results",
                                    "rnnrs-tune-" + time.strftime("%Y-%m-%d_%H-%M-%S"))
    parent, name = _split_storage(storage_path)
    spec = {"rnnrs_tune": 1, "fixed": trial_fixed, "cpus_per_trial": cpus_per_trial,
            "corpus": data_opts.get("corpus"),
            "text_sha256": (hashlib.sha256(data_opts["text"].encode("utf-8")).hexdigest()
                            if "text" in data_opts else None)}
    try:
        json.dumps(spec)
    except TypeError as e:
        raise TypeError(f"train options: expected JSON values (they are stored in {SPEC_FILE}), got {e}") from None
    _write_spec(storage_path, spec)
    run_config = tune.RunConfig(
        name=name, storage_path=parent, callbacks=callbacks, verbose=verbose,
        failure_config=tune.FailureConfig(max_failures=max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=keep_checkpoints, checkpoint_score_attribute=metric,
                                                checkpoint_score_order=mode))
    return tune.Tuner(
        _resources_trainable(data_opts, cpus_per_trial, trial_fixed),
        param_space=dict(param_space),
        tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=num_samples, scheduler=scheduler,
                                    search_alg=search_alg, max_concurrent_trials=max_concurrent_trials,
                                    reuse_actors=reuse_actors, trial_dirname_creator=_trial_dirname),
        run_config=run_config)


def _trial_dirname(trial: Any) -> str:
    """``trial_<id>``: short, shell-safe trial directories (Ray's default spells out the config)."""
    return f"trial_{trial.trial_id}"


def restore(path: Any, data: Any = None, **kw: Any) -> Any:
    """The ``ray.tune.Tuner`` of the interrupted sweep in ``path`` (its ``storage_path``); call
    ``.fit()`` to continue it. Errored trials resume from their last checkpoint
    (``resume_errored=True``). ``data`` is the same text (checked by its SHA-256) or corpus file;
    without it, the corpus path stored in the sweep is read again. ``kw`` goes to
    ``ray.tune.Tuner.restore`` (e.g. ``restart_errored=True``)."""
    tune = _import_tune()
    path = os.fspath(path)
    if "://" not in path:
        path = os.path.abspath(path)
    spec = _read_spec(path)
    fixed = dict(spec["fixed"])
    if data is None and spec.get("corpus") is None:
        raise ValueError(f"data: the sweep in {path} was given its text by value; pass the same text again")
    if spec.get("corpus") is not None and isinstance(data, str):  # a sweep of a file: a str is its path
        data = Path(data)
    data_opts = _data_options(data, {} if data is not None else {"corpus": spec["corpus"]})
    if "text" in data_opts:
        digest = hashlib.sha256(data_opts["text"].encode("utf-8")).hexdigest()
        if digest != spec.get("text_sha256"):
            raise ValueError(f"data: expected the text the sweep in {path} was started with (sha256 "
                             f"{str(spec.get('text_sha256'))[:12]}…), got other text (sha256 {digest[:12]}…)")
    kw.setdefault("resume_errored", True)
    return tune.Tuner.restore(path, trainable=_resources_trainable(data_opts, spec["cpus_per_trial"], fixed), **kw)


# ============================================================================================= sweep
@dataclass
class SweepResult:
    """What :func:`sweep` returns: the best trial's sampled config (with its seed), its best
    validation perplexity and the checkpoint directory holding that model (a run directory
    ``python -m rnnrs generate --model`` and :meth:`rnnrs.LyricGenerator.load` accept), one row per
    trial in ``table``, and Ray's ``ResultGrid``."""

    best_config: Dict[str, Any]
    best_val_ppl: float
    best_dir: Optional[str]
    table: List[Dict[str, Any]] = field(default_factory=list)
    results: Any = None

    def format_table(self) -> str:
        return format_table(self.table)


def _config_row(config: Mapping[str, Any], metrics: Mapping[str, Any]) -> Dict[str, Any]:
    row = {k: v for k, v in config.items() if k not in _HOOKS}
    if "seed" in metrics:
        row["seed"] = metrics["seed"]
    return row


def _status(state: Optional[str], result: Any, metrics: Mapping[str, Any]) -> str:
    """TERMINATED, ERROR or UNFINISHED (pending, running or paused when the sweep stopped)."""
    if result.error or state == "ERROR":
        return "ERROR"
    if state == "TERMINATED" or (state is None and metrics.get("done")):
        return "TERMINATED"
    return "UNFINISHED"


def summarize(results: Any, metric: str = "val_ppl", mode: str = "min") -> SweepResult:
    """A :class:`SweepResult` from a ``ray.tune.ResultGrid`` of rnnrs trials."""
    sign = 1.0 if mode == "min" else -1.0
    table, best = [], None
    # Ray's trial states (TERMINATED, ERROR, PENDING, RUNNING, PAUSED); the ResultGrid is in their order.
    trials = getattr(getattr(results, "_experiment_analysis", None), "trials", None)
    states = [t.status for t in trials] if trials is not None and len(trials) == len(results) else None
    for i, result in enumerate(results):
        metrics = result.metrics or {}
        config = result.config or {}
        best_metric, best_path = math.inf, None
        for ckpt, m in result.best_checkpoints or []:
            v = m.get(metric)
            if isinstance(v, (int, float)) and math.isfinite(v) and sign * v < best_metric:
                best_metric, best_path = sign * v, ckpt.path
        df = result.metrics_dataframe
        reported = []
        if df is not None and metric in df:
            reported = [float(x) for x in df[metric] if x == x]
        trial_best = (min if mode == "min" else max)(reported) if reported else None
        row = {"trial": metrics.get("trial_id") or os.path.basename(result.path),
               **_config_row(config, metrics),
               "status": _status(states[i] if states else None, result, metrics),
               "step": metrics.get("step"), metric: metrics.get(metric), f"best_{metric}"
               if not metric.startswith("best_") else metric: trial_best,
               "dir": best_path}
        table.append(row)
        if best_path is not None and (best is None or best_metric < best[0]):
            best = (best_metric, row, best_path)
    if best is None:
        return SweepResult({}, math.inf if mode == "min" else -math.inf, None, table, results)
    _, row, path = best
    config = {k: v for k, v in row.items() if k not in ("trial", "status", "step", metric, f"best_{metric}", "dir")}
    return SweepResult(config, sign * best[0], path, table, results)


def sweep(data: Any, param_space: Mapping[str, Any], **kw: Any) -> SweepResult:
    """Run :func:`tuner` ``(data, param_space, **kw)`` to the end and summarize it."""
    t = tuner(data, param_space, **kw)
    results = t.fit()
    return summarize(results, kw.get("metric", "val_ppl"), kw.get("mode", "min"))


def format_table(rows: List[Dict[str, Any]]) -> str:
    if not rows:
        return "(no trials)"
    keys: List[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys and k != "dir")

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    cols = [[k] + [cell(r.get(k)) for r in rows] for k in keys]
    widths = [max(len(x) for x in c) for c in cols]
    lines = ["  ".join(c[i].ljust(w) for c, w in zip(cols, widths)).rstrip() for i in range(len(rows) + 1)]
    return "\n".join(lines)


# =============================================================================================== CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``rnnrs tune`` (works without Ray)."""
    from .cli import _positive_int, _nonneg_int
    parser.add_argument("--corpus", metavar="PATH", nargs="+",
                        help="UTF-8 text files or folders, as rnnrs train takes them (required unless --resume)")
    parser.add_argument("--out", metavar="DIR", required=True,
                        help="the sweep's directory (Ray's storage_path): trials and their checkpoints")
    space = parser.add_mutually_exclusive_group()
    space.add_argument("--space", metavar="FILE", help="search space as JSON (see docs/tune.md)")
    space.add_argument("--space-preset", choices=sorted(PRESETS), help="a built-in search space")
    parser.add_argument("--samples", type=_positive_int, metavar="N", default=8, help="trials (default 8)")
    parser.add_argument("--max-steps", type=_positive_int, metavar="N", help="steps per trial (required)")
    parser.add_argument("--report-every", type=_positive_int, metavar="N", default=None,
                        help="validate, checkpoint and report every N steps (default max-steps/8, at least 10)")
    parser.add_argument("--scheduler", choices=["asha", "fifo"], default="asha", help="default asha")
    parser.add_argument("--grace-steps", type=_positive_int, metavar="N", default=None,
                        help="ASHA: steps before a trial may be stopped (default --report-every)")
    parser.add_argument("--cpus-per-trial", type=_positive_int, metavar="N", default=1, help="default 1")
    parser.add_argument("--max-concurrent", type=_positive_int, metavar="N", default=None,
                        help="trials at once (default: as many as the CPUs allow)")
    parser.add_argument("--max-failures", type=_nonneg_int, metavar="N", default=1,
                        help="restarts of a failed trial from its checkpoint (default 1)")
    parser.add_argument("--seed", type=_nonneg_int, metavar="S", default=0, help="seed of the sweep (default 0)")
    parser.add_argument("--address", metavar="ADDR", default=None,
                        help="connect to a running Ray cluster (ray start --head); default: start a local Ray")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted sweep in --out")
    parser.add_argument("--json", action="store_true", help="one JSON object per line on stdout")


def _json_line(obj: Dict[str, Any]) -> str:
    def safe(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: safe(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [safe(x) for x in v]
        return v
    return json.dumps(safe(obj), ensure_ascii=False, allow_nan=False, default=str)


def _progress_callback(json_mode: bool) -> Any:
    from ray.tune import Callback

    class Progress(Callback):
        """One line (or JSON object) per reported validation and per finished trial."""

        header = False

        def on_trial_result(self, iteration: int, trials: Any, trial: Any, result: Dict[str, Any], **info: Any) -> None:
            cfg = {k: v for k, v in (trial.config or {}).items() if k not in _HOOKS}
            if json_mode:
                print(_json_line({"event": "result", "trial": trial.trial_id, "config": cfg,
                                  **{k: result.get(k) for k in ("step", "val_ppl", "train_ppl", "best_val_ppl",
                                                                 "tokens_per_s", "num_threads", "seed")}}),
                      flush=True)
                return
            if not self.header:
                self.header = True
                print(f"{'trial':<12} {'step':>6} {'val ppl':>9} {'train ppl':>9} {'tok/s':>8}  config", flush=True)
            text = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in cfg.items())
            print(f"{trial.trial_id:<12} {result.get('step', 0):>6} {result.get('val_ppl', math.nan):>9.3f} "
                  f"{result.get('train_ppl', math.nan):>9.3f} {result.get('tokens_per_s', 0):>8.0f}  {text}",
                  flush=True)

        def on_trial_complete(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
            if json_mode:
                print(_json_line({"event": "trial_end", "trial": trial.trial_id, "status": "TERMINATED",
                                  "step": (trial.last_result or {}).get("step")}), flush=True)

        def on_trial_error(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
            if json_mode:
                print(_json_line({"event": "trial_end", "trial": trial.trial_id, "status": "ERROR",
                                  "step": (trial.last_result or {}).get("step")}), flush=True)
            else:
                print(f"{trial.trial_id:<12} failed (see {trial.local_path or 'the Ray logs'})", flush=True)

    return Progress()


def run(args: argparse.Namespace) -> int:
    """``rnnrs tune``: run (or with ``--resume`` continue) a sweep and print the best trial."""
    from .cli import _Reporter, EXIT_FAILED, EXIT_OK, EXIT_SIGINT, EXIT_USAGE
    report = _Reporter("rnnrs tune", bool(args.json))
    try:
        import ray
        from ray import tune as _tune  # noqa: F401
    except ImportError as e:
        return report.error(str(_ray_missing(e)), EXIT_USAGE)
    out = os.path.abspath(args.out)
    if not args.resume:
        if args.corpus is None:
            return report.error("--corpus: required to start a sweep (see rnnrs tune --help)", EXIT_USAGE)
        if args.max_steps is None:
            return report.error("--max-steps: required to start a sweep (see rnnrs tune --help)", EXIT_USAGE)
        if args.space is None and args.space_preset is None:
            return report.error("--space or --space-preset: expected one of them, got neither", EXIT_USAGE)
        if os.path.exists(os.path.join(out, SPEC_FILE)):
            return report.error(f"--out {args.out}: already holds a sweep; continue it with --resume, or choose "
                                "another --out", EXIT_USAGE)
    t0 = time.perf_counter()
    try:
        if args.resume:
            _read_spec(out)  # a clear error now if --out holds no sweep
            data: Any = _cli_corpus(args.corpus) if args.corpus else None
            space: Dict[str, Any] = {}
            t_args: Dict[str, Any] = {}
        else:
            space = space_from_json(args.space) if args.space else space_from_json(PRESETS[args.space_preset])
            report_every = args.report_every or max(10, args.max_steps // 8)
            t_args = dict(max_steps=args.max_steps, num_samples=args.samples, scheduler=args.scheduler,
                          grace_steps=args.grace_steps, report_every=report_every,
                          cpus_per_trial=args.cpus_per_trial, max_concurrent_trials=args.max_concurrent,
                          seed=args.seed, storage_path=out, max_failures=args.max_failures)
            _check_options(space, {})
            data = _cli_corpus(args.corpus)
            _data_options(data, {})
    except (ValueError, TypeError) as e:
        return report.error(str(e), EXIT_USAGE)
    import logging
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Every report carries a checkpoint, so Ray snapshots its state often and warns each time.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    try:
        if not ray.is_initialized():
            local_only: Dict[str, Any] = {} if args.address else {"include_dashboard": False}  # (a cluster has its own)
            ray.init(address=args.address, logging_level=logging.WARNING, log_to_driver=False, **local_only)
    except Exception as e:  # a wrong --address: ConnectionError, RuntimeError, ...
        return report.error(f"--address {args.address}: cannot connect to Ray: {e}" if args.address
                            else f"cannot start Ray: {e}", EXIT_USAGE)
    t_ray = time.perf_counter() - t0
    if args.json:
        print(_json_line({"event": "start", "out": out, "resumed": bool(args.resume), "ray_start_s": t_ray,
                          "cluster_cpus": ray.cluster_resources().get("CPU")}), flush=True)
    else:
        print(f"rnnrs tune: {'continuing' if args.resume else 'starting'} the sweep in {out} "
              f"(Ray ready in {t_ray:.1f}s, {ray.cluster_resources().get('CPU', 0):g} CPUs)", flush=True)
    callbacks = [_progress_callback(bool(args.json))]
    try:
        if args.resume:
            tuner_obj = restore(out, data)
            # Tuner.restore keeps the RunConfig; the progress callback is added to the restored one.
            internal = getattr(tuner_obj, "_local_tuner", None)  # None with Ray Client (ray://)
            if internal is not None:
                internal._run_config.callbacks = callbacks
                internal._run_config.verbose = 0
        else:
            tuner_obj = tuner(data, space, callbacks=callbacks, verbose=0, **t_args)
        results = tuner_obj.fit()
    except (ValueError, TypeError) as e:
        return report.error(str(e), EXIT_USAGE)
    summary = summarize(results)
    wall = time.perf_counter() - t0
    unfinished = sum(r["status"] == "UNFINISHED" for r in summary.table)
    if args.json:
        print(_json_line({"event": "summary", "best_config": summary.best_config, "best_val_ppl": summary.best_val_ppl,
                          "best_dir": summary.best_dir, "trials": summary.table, "wall_time_s": wall,
                          "ray_start_s": t_ray, "unfinished_trials": unfinished}), flush=True)
    else:
        print()
        print(format_table(summary.table))
        print()
        if summary.best_dir is None:
            print(f"no trial reported a finite validation perplexity yet ({wall:.1f}s)")
        else:
            cfg = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in summary.best_config.items())
            print(f"best: val ppl {summary.best_val_ppl:.4f} with {cfg}")
            print(f"  model: {summary.best_dir}")
            print(f"  generate: python -m rnnrs generate --model {summary.best_dir}")
            print(f"{len(summary.table)} trials in {wall:.1f}s (Ray start-up {t_ray:.1f}s)")
    if unfinished:  # Ctrl-C: Ray Tune stopped and saved its state
        report.error(f"interrupted with {unfinished} of {len(summary.table)} trials unfinished; continue with "
                     f"rnnrs tune --out {args.out} --resume", EXIT_SIGINT)
        return EXIT_SIGINT
    return EXIT_OK if summary.best_dir is not None else EXIT_FAILED
