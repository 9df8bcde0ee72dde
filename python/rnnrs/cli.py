"""The command line: ``python -m rnnrs train|evaluate|generate|...`` (also installed as ``rnnrs``);
the commands beyond train and evaluate live in their own modules, listed in :data:`COMMANDS`.

Exit status: 0 success (including early stopping), 1 training failed (non-finite loss, final
checkpoint not written), 2 user error (bad option, unreadable or too short corpus, mismatched
checkpoint) — one readable line on stderr, no traceback — 130 after SIGINT (Ctrl-C) and 143 after
SIGTERM (a checkpoint was saved; continue with ``--resume``). See ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGPIPE, EXIT_SIGTERM = 0, 1, 2, 130, 141, 143


class UsageError(Exception):
    """A command-line mistake: reported as one line on stderr with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (``rnnrs train: error: ... (see rnnrs train --help)``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def _version() -> str:
    from . import _rnnrs
    return _rnnrs.__version__


# ============================================================================================ parser
def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return v


def _nonneg_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return v


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return v


_positive_int.__name__ = "integer"
_nonneg_int.__name__ = "integer"
_finite_float.__name__ = "number"


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS  # absent options stay absent, so --resume can tell what was given
    g = p.add_argument_group("data")
    g.add_argument("--corpus", metavar="PATH", nargs="+", default=S,
                   help="UTF-8 text files or folders of them to train on (required unless --resume or --init-from "
                        "with a corpus); several are joined with a blank line, each split for validation at its end")
    g.add_argument("--out", metavar="DIR", required=True, help="run directory: model.safetensors, "
                   "checkpoint.safetensors, curve.png")
    g.add_argument("--level", choices=["char", "word", "bpe"], default=S,
                   help="tokens: characters (default), words, or byte-level BPE subwords (needs rnnrs[bpe])")
    g.add_argument("--tokenizer", dest="tokenizer_file", metavar="FILE", default=S,
                   help="--level bpe: a Hugging Face tokenizer.json to use instead of fitting one")
    g.add_argument("--bpe-vocab", type=_positive_int, metavar="N", default=S,
                   help="--level bpe: subword vocabulary to fit on the corpus (default 2000)")
    g.add_argument("--lower", action="store_true", default=S, help="lower-case the text")
    g.add_argument("--letters-only", action="store_true", default=S,
                   help="keep letters only, other runs become one space (the book's preprocessing)")
    g.add_argument("--newlines-as-spaces", action="store_true", default=S, help="replace newlines by spaces")
    g.add_argument("--max-chars", type=_positive_int, metavar="N", default=S, help="use the first N characters")
    g.add_argument("--min-freq", type=_positive_int, metavar="N", default=S,
                   help="tokens seen fewer than N times become <unk> (default 1)")
    g.add_argument("--max-vocab", type=_positive_int, metavar="N", default=S, help="keep the N-1 most frequent tokens")
    g.add_argument("--val-fraction", type=_finite_float, metavar="F", default=S,
                   help="hold out the last fraction of the corpus for validation (default 0.05; 0 = none)")
    g = p.add_argument_group("model")
    g.add_argument("--cell", choices=["lstm", "gru", "rnn", "rnn_relu"], default=S, help="default lstm")
    g.add_argument("--embed", type=_nonneg_int, metavar="N", default=S,
                   help="embedding size (default 128; 0 = one-hot inputs, as in the book)")
    g.add_argument("--one-hot", action="store_true", default=S, help="one-hot inputs instead of an embedding")
    g.add_argument("--hidden", type=_positive_int, metavar="N", default=S, help="hidden size (default 256)")
    g.add_argument("--layers", type=_positive_int, metavar="N", default=S, help="recurrent layers (default 2)")
    g.add_argument("--dropout", type=_finite_float, metavar="P", default=S, help="between layers (default 0.1)")
    g.add_argument("--dtype", choices=["float32", "float64"], default=S, help="compute precision (default float32)")
    g.add_argument("--init-from", metavar="DIR", default=S,
                   help="fine-tune a trained model: a run directory, a .safetensors file, or 'builtin'")
    from .layers import INITS
    inits = list(INITS)
    g.add_argument("--init", choices=inits, default=S, help="initialiser of input weights, embedding, output "
                   "layer (default pytorch: U(+-1/sqrt(H)); others zero the biases)")
    g.add_argument("--recurrent-init", choices=inits, default=S, help="initialiser of W_hh (default: as --init)")
    g.add_argument("--init-std", type=_finite_float, metavar="S", default=S, help="std of --init normal (default 0.01)")
    g.add_argument("--forget-bias", type=_finite_float, metavar="B", default=S,
                   help="LSTM: the forget gate's initial bias b_ih_f + b_hh_f (Keras: 1)")
    g.add_argument("--embed-dropout", type=_finite_float, metavar="P", default=S,
                   help="drop whole token types from the embedding per batch (AWD-LSTM; default 0)")
    g.add_argument("--locked-dropout", type=_finite_float, metavar="P", default=S,
                   help="dropout on the stack's input and output, one mask per sequence (default 0)")
    g.add_argument("--weight-drop", type=_finite_float, metavar="P", default=S,
                   help="DropConnect on every W_hh, one mask per batch (default 0)")
    g.add_argument("--tie-weights", action="store_true", default=S,
                   help="the output layer shares the embedding (with a learned projection if embed != hidden)")
    g = p.add_argument_group("batches and length")
    g.add_argument("--seq-len", type=_positive_int, metavar="T", default=S, help="time steps per batch (default 64)")
    g.add_argument("--batch-size", type=_positive_int, metavar="B", default=S, help="sequences per batch (default 32)")
    g.add_argument("--sampling", choices=["random", "sequential"], default=S,
                   help="random: fresh state every batch (default); sequential: state carried within an epoch")
    g.add_argument("--window-offset", choices=["random", "fixed"], default=S,
                   help="windows start at a random offset each epoch (default) or at 0, T, 2T, ... (the book's "
                        "first edition)")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=_positive_int, metavar="N", default=S, help="passes over the data (default 10)")
    length.add_argument("--steps", type=_positive_int, metavar="N", default=S, help="optimizer steps instead of epochs")
    g = p.add_argument_group("optimizer")
    g.add_argument("--optimizer", choices=["sgd", "adam", "adamw", "rmsprop"], default=S,
                   help="default adam (rmsprop: rho 0.9, as Keras)")
    g.add_argument("--lr", type=_finite_float, metavar="LR", default=S, help="learning rate (default 2e-3)")
    g.add_argument("--momentum", type=_finite_float, metavar="M", default=S, help="SGD momentum (default 0)")
    g.add_argument("--weight-decay", type=_finite_float, metavar="W", default=S, help="default 0")
    g.add_argument("--schedule", choices=["constant", "cosine", "step"], default=S,
                   help="learning-rate schedule (default constant)")
    g.add_argument("--warmup", type=_nonneg_int, metavar="N", default=S, help="linear warm-up steps (default 0)")
    g.add_argument("--min-lr", type=_finite_float, metavar="LR", default=S, help="final lr of the cosine schedule")
    g.add_argument("--decay-every", type=_positive_int, metavar="N", default=S,
                   help="step schedule: decay every N steps (default a third of the run)")
    g.add_argument("--decay-gamma", type=_finite_float, metavar="G", default=S, help="step schedule factor (default 0.1)")
    g.add_argument("--clip", type=_finite_float, metavar="C", default=S,
                   help="clip the gradients' global norm to C (default 1.0; 0 = no clipping)")
    g = p.add_argument_group("along the way")
    g.add_argument("--val-every", type=_nonneg_int, metavar="N", default=S,
                   help="validate every N steps (default: every epoch; 0: only at the end)")
    g.add_argument("--patience", type=_positive_int, metavar="N", default=S,
                   help="early stop after N validations without a better perplexity")
    g.add_argument("--sample-every", type=_nonneg_int, metavar="N", default=S,
                   help="sample preview every N steps (default: with each validation; 0: never)")
    g.add_argument("--sample-prefix", metavar="TEXT", default=S, help="prefix of the previews")
    g.add_argument("--sample-length", type=_positive_int, metavar="N", default=S, help="tokens per preview (default 100)")
    g.add_argument("--sample-temperature", type=_finite_float, metavar="T", default=S, help="default 0.8")
    g.add_argument("--checkpoint-every", type=_nonneg_int, metavar="N", default=S,
                   help="write the checkpoint every N steps (default 200; 0: only at the end)")
    g.add_argument("--log-every", type=_positive_int, metavar="N", default=S, help="progress every N steps (default 10)")
    g.add_argument("--on-nonfinite", choices=["stop", "skip"], default=S,
                   help="on a NaN/Inf loss: stop (default) or skip the batch")
    g.add_argument("--seed", type=_nonneg_int, metavar="S", default=S, help="seed of everything random (default 0)")
    g = p.add_argument_group("output")
    g.add_argument("--save-dtype", choices=["float16", "float32", "float64"], default=S,
                   help="precision of model.safetensors (e.g. float16 to halve it)")
    g.add_argument("--no-plot", dest="plot", action="store_false", default=S, help="no curve.png")
    g.add_argument("--json", action="store_true", default=S, help="one JSON object per line on stdout")
    g.add_argument("--quiet", action="store_true", default=S, help="no output except errors")
    g.add_argument("--resume", action="store_true", default=S, help="continue the run in --out from its checkpoint")
    g.add_argument("--overwrite", action="store_true", default=S, help="start over even if --out holds a checkpoint")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rnnrs", description="Recurrent language models on the CPU: train, evaluate, generate, "
                     "export, serve, sweep.")
    parser.add_argument("--version", action="version", version=f"rnnrs {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(["train", "evaluate", *COMMANDS]) + "}")
    train = sub.add_parser("train", help="train a language model on a text file",
                           description="Train a character- or word-level language model. "
                                       "`rnnrs train --corpus FILE --out DIR` alone works.")
    _add_train_arguments(train)
    ev = sub.add_parser("evaluate", help="perplexity and bits per token of a model on a text file",
                        description="Perplexity and bits per token of a trained model on a UTF-8 text file.")
    ev.add_argument("--model", metavar="DIR", required=True, help="a run directory or a .safetensors file")
    ev.add_argument("--corpus", metavar="FILE", required=True, help="UTF-8 text file")
    ev.add_argument("--batch-size", type=_positive_int, metavar="B", default=32, help="parallel streams (default 32)")
    ev.add_argument("--seq-len", type=_positive_int, metavar="T", default=64, help="tokens per call (default 64)")
    ev.add_argument("--newlines-as-spaces", action="store_true", default=None,
                    help="replace newlines by spaces (default: as the model was trained)")
    ev.add_argument("--max-chars", type=_positive_int, metavar="N", default=None, help="use the first N characters")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    for name, (_, help_text) in COMMANDS.items():  # parsed by their own modules (see _cmd_external)
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


# ========================================================================================== helpers
def _flag_message(message: str) -> str:
    """``"seq_len: expected ..."`` → ``"--seq-len: expected ..."`` for TrainConfig field errors."""
    from .trainer import TrainConfig
    head, sep, rest = message.partition(":")
    if sep and head in {f.name for f in dataclasses.fields(TrainConfig)}:
        return "--" + head.replace("_", "-") + ":" + rest
    return message


class _Reporter:
    def __init__(self, prog: str, json_mode: bool) -> None:
        self.prog, self.json_mode = prog, json_mode

    def error(self, message: str, status: int) -> int:
        message = " ".join(str(message).split())  # always one line
        if self.json_mode:
            print(json.dumps({"event": "error", "message": message, "exit_status": status}, ensure_ascii=False),
                  flush=True)
        print(f"{self.prog}: error: {message}", file=sys.stderr, flush=True)
        return status


# ============================================================================================ train
def _cmd_train(args: argparse.Namespace) -> int:
    from ._rnnrs import NonFiniteError
    from .checkpoint import CheckpointError
    from .trainer import ConfigError, Trainer, TrainConfig, TrainingError

    opts: Dict[str, Any] = {k: v for k, v in vars(args).items() if k != "command"}
    report = _Reporter("rnnrs train", bool(opts.get("json")))
    if opts.pop("one_hot", False):
        if opts.get("embed"):
            return report.error("--one-hot and --embed: expected at most one of them", 2)
        opts["embed"] = None
    if opts.get("embed") == 0:
        opts["embed"] = None
    if opts.get("clip") == 0:
        opts["clip"] = None
    resume = bool(opts.pop("resume", False))
    out = opts.pop("out")
    if not resume and "corpus" not in opts:
        return report.error("--corpus: required to start a new run (see rnnrs train --help)", 2)
    if isinstance(opts.get("corpus"), list) and len(opts["corpus"]) == 1:
        opts["corpus"] = opts["corpus"][0]
    try:
        if resume:
            trainer = Trainer.resume(out, **opts)
        else:
            trainer = Trainer(TrainConfig(), out=out, **opts)
        trainer._setup()  # all user errors surface here, before any training
    except (ConfigError, CheckpointError) as e:
        return report.error(_flag_message(str(e)), EXIT_USAGE)
    except OSError as e:
        return report.error(f"{e.filename or out}: {e.strerror or e}", EXIT_USAGE)
    except (ValueError, TypeError) as e:
        return report.error(_flag_message(str(e)), EXIT_USAGE)
    try:
        result = trainer.run()
    except NonFiniteError as e:
        return report.error(str(e), EXIT_FAILED)
    except TrainingError as e:
        return report.error(str(e), EXIT_FAILED)
    except KeyboardInterrupt:
        return report.error("interrupted again: stopped at once; the last complete checkpoint in "
                            f"{out} is kept (continue with --resume)", EXIT_SIGINT)
    summary = result.summary
    if trainer.output_closed:  # stdout's reader went away: say so where it can still be read
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return report.error(f"the output was closed (broken pipe): stopped at step {summary['steps']}; the "
                            f"checkpoint in {out} is kept (continue with --resume)", EXIT_SIGPIPE)
    if summary["status"] == "interrupted":
        return EXIT_SIGTERM if summary.get("signal") == "SIGTERM" else EXIT_SIGINT
    return EXIT_OK


# ========================================================================================= evaluate
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError, load_model
    from .trainer import ConfigError, evaluate_ids, prepare_text, read_corpus

    report = _Reporter("rnnrs evaluate", args.json)
    t0 = time.perf_counter()
    try:
        model, tok, info = load_model(args.model)
    except CheckpointError as e:
        return report.error(str(e), EXIT_USAGE)
    except OSError as e:
        return report.error(f"--model {args.model}: {e.strerror or e}", EXIT_USAGE)
    if tok is None:
        return report.error(f"--model {args.model}: expected a model saved with its tokenizer, got none", EXIT_USAGE)
    newlines = args.newlines_as_spaces
    if newlines is None:
        newlines = bool(info.get("newlines_as_spaces", False))
    try:
        text = prepare_text(read_corpus(args.corpus), newlines, args.max_chars)
    except ConfigError as e:
        return report.error(str(e), EXIT_USAGE)
    ids = tok.encode(text)
    if ids.size < 2:
        return report.error(f"--corpus {args.corpus}: expected at least 2 tokens, got {ids.size}", EXIT_USAGE)
    loss, count = evaluate_ids(model, ids, args.batch_size, args.seq_len)
    unknown = int(np.count_nonzero(ids == 0)) if tok.vocab.idx_to_token[0] == "<unk>" else 0
    result = {
        "event": "evaluate", "model": os.fspath(args.model), "corpus": os.fspath(args.corpus),
        "level": tok.level, "tokens": int(ids.size), "tokens_evaluated": int(count), "unknown_tokens": unknown,
        "loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf,
        "bits_per_token": loss / math.log(2),
        # (per character of the text, so that char, word and BPE models compare)
        "bits_per_char": loss * ids.size / (len(text) * math.log(2)), "wall_time_s": time.perf_counter() - t0,
    }
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.items()},
                         ensure_ascii=False), flush=True)
    else:
        unk = f" ({unknown:,} unknown, {100.0 * unknown / ids.size:.2f}%)" if unknown else ""
        unit = {"char": "character", "word": "word"}.get(tok.level, "token")
        per_char = "" if tok.level == "char" else f" ({result['bits_per_char']:.4f} bits per character)"
        print(f"{args.corpus}: perplexity {result['perplexity']:.4f}, {result['bits_per_token']:.4f} bits per "
              f"{unit}{per_char}, cross-entropy {loss:.4f} nats per token; "
              f"{count:,} of {ids.size:,} tokens evaluated{unk} in {result['wall_time_s']:.2f}s")
    return EXIT_OK


# ================================================================= commands in their own modules
# name -> (module, help). Each module defines ``add_arguments(parser)`` and ``run(args) -> int`` and
# is imported only when its command runs, so optional extras (serve, ray, onnx) stay optional: a
# module whose extra is missing raises ImportError naming the ``pip install`` to run.
COMMANDS: Dict[str, Tuple[str, str]] = {
    "generate": (".generate", "generate text with a trained (or the built-in) model"),
    "export": (".onnx_export", "export a model to ONNX"),
    "tune": (".tune", "hyper-parameter sweeps on Ray Tune"),
    "serve": (".serve", "serve a model over an OpenAI-compatible HTTP API with a web page"),
}


def _cmd_external(name: str, argv: Sequence[str]) -> int:
    import importlib
    module, help_text = COMMANDS[name]
    prog = f"rnnrs {name}"
    try:
        mod = importlib.import_module(module, __package__)
    except ImportError as e:
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    parser = _Parser(prog=prog, description=help_text[0].upper() + help_text[1:] + ".")
    mod.add_arguments(parser)
    args = parser.parse_args(list(argv))
    return int(mod.run(args) or 0)


# ============================================================================================= main
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in COMMANDS:
            return _cmd_external(argv[0], argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return _cmd_train(args) if args.command == "train" else _cmd_evaluate(args)
    except UsageError as e:
        prog = "rnnrs" if not argv or argv[0] not in ("train", "evaluate", *COMMANDS) else f"rnnrs {argv[0]}"
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C before training started (or after it ended)
        print("rnnrs: interrupted", file=sys.stderr, flush=True)
        return EXIT_SIGINT
    except SystemExit as e:  # --help and --version
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)
    except BrokenPipeError:  # e.g. `rnnrs train ... --json | head -1`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED

