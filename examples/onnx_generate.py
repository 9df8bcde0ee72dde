"""Greedy lyrics from an exported model, with only onnxruntime and NumPy (see docs/onnx.md):

    python -m rnnrs export --onnx lyrics.onnx
    python examples/onnx_generate.py lyrics.onnx 明月 100
"""
import json
import sys

import numpy as np
import onnxruntime as ort

path, prefix = sys.argv[1], sys.argv[2]
length = int(sys.argv[3]) if len(sys.argv) > 3 else 100
tokens = json.load(open(path[:-5] + ".tokenizer.json", encoding="utf-8"))["vocab"]["idx_to_token"]
index = {t: i for i, t in enumerate(tokens)}
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
states = session.get_inputs()[1:]  # h0 (and c0): (layers, batch, hidden)
state = {s.name: np.zeros((s.shape[0], 1, s.shape[2]), np.float32) for s in states}
ids = np.array([[index[c]] for c in prefix if c in index] or [[index["\n"]]], np.int64)  # (T, 1): one token per character
text = prefix
for _ in range(length):
    logits, *new_state = session.run(None, {"ids": ids, **state})
    ids = np.array([[int(np.argmax(logits[-1, 0]))]], np.int64)  # greedy; sampling: see docs/onnx.md
    state = dict(zip(state, new_state))
    text += tokens[ids[0, 0]]
print(text)
