"""Write the seed corpus of the checkpoint fuzzers (``tests/test_fuzz.py``, ``rust/rnnrs/tests/fuzz_io.rs``).

    python tests/fuzz_corpus/make.py          # rewrites the *.safetensors files next to this script

Small, valid files of every kind the loaders accept — a model file with its tokenizer, a float16
one-hot GRU, a model without tokenizer, training checkpoints (Adam with a carried state, SGD with
momentum) — plus a valid safetensors file of another format. The fuzzers mutate them. Everything is
seeded; only the recorded training times differ between two runs. Keep the total under 200 KB.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

#: The text the models are trained on (``Trainer.resume`` needs the same text to continue).
TEXT = "the cat sat on the mat. the dog ate the log. " * 12


def main(out: str = HERE) -> list:
    import rnnrs
    from rnnrs import checkpoint as ck

    tok = rnnrs.CharTokenizer().fit(TEXT)
    v = len(tok.vocab)
    written = []

    def put(name: str, src: str) -> None:
        dst = os.path.join(out, name)
        shutil.copyfile(src, dst)
        written.append(dst)

    with tempfile.TemporaryDirectory() as tmp:
        m = rnnrs.LanguageModel(v, 4, 6, 1, "lstm", seed=1)
        put("model_lstm.safetensors", m.save(os.path.join(tmp, "a"), tok, {"note": "seed corpus"}))

        m = rnnrs.LanguageModel(v, None, 5, 2, "gru", dropout=0.1, seed=2)
        put("model_gru_onehot_f16.safetensors", m.save(os.path.join(tmp, "b"), tok, dtype=np.float16))

        m = rnnrs.LanguageModel(v, 3, 4, 1, "rnn", seed=3, dtype=np.float64)
        put("model_rnn_f64_no_tokenizer.safetensors", m.save(os.path.join(tmp, "c")))

        run = os.path.join(tmp, "run")
        rnnrs.train(TEXT, out=run, steps=4, checkpoint_every=2, embed=4, hidden=6, layers=1, seq_len=6,
                    batch_size=3, sampling="sequential", val_fraction=0.0, quiet=True, plot=False, seed=4)
        put("checkpoint_adam_sequential.safetensors", os.path.join(run, ck.CHECKPOINT_FILE))

        m = rnnrs.LanguageModel(v, 4, 5, 1, "gru", seed=5)
        m.set_optimizer("sgd", 0.1, momentum=0.9)
        ids = tok.encode(TEXT)
        m.train_step(ids[:24].reshape(6, 4), ids[1:25].reshape(6, 4), None, 1.0)
        path = ck.save_checkpoint(os.path.join(tmp, "d"), m, tok, {"step": 1, "note": "sgd"},
                                  {"loss": np.array([2.5])})
        put("checkpoint_sgd.safetensors", path)

        raw = [("weight", "F32", [2, 3], np.arange(6, dtype="<f4").tobytes()),
               ("step", "I64", [], np.array(7, dtype="<i8").tobytes())]
        path = os.path.join(tmp, "other.safetensors")
        with open(path, "wb") as f:
            f.write(rnnrs._rnnrs.safetensors_dumps(raw, {"format": "pt"}))
        put("other_format.safetensors", path)

    total = sum(os.path.getsize(p) for p in written)
    assert total < 200_000, f"seed corpus too large: {total} bytes"
    return written


if __name__ == "__main__":
    files = main(sys.argv[1] if len(sys.argv) > 1 else HERE)
    for p in files:
        print(f"{os.path.getsize(p):8,} {os.path.relpath(p)}")
