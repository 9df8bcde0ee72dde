"""Tests for rnnrs.tokenizer (pure Python + numpy; runs without the compiled extension)."""

import collections
import json
import os
import random
import re
import time
import unicodedata

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st


import rnnrs.tokenizer as tk  # noqa: E402
Vocab, CharTokenizer, WordTokenizer = tk.Vocab, tk.CharTokenizer, tk.WordTokenizer

FAST = settings(max_examples=40, deadline=None)

# ---------------------------------------------------------------- strategies

ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
COMBINING = st.characters(min_codepoint=0x0300, max_codepoint=0x036F)
EMOJI = st.sampled_from(
    ["😀", "🎉", "👍🏽", "👨\u200d👩\u200d👧", "🇨🇳", "❤️", "🫠", "e\u0301", "ก\u0e34"]
)
SPACE = st.sampled_from([" ", "  ", "\n", "\t", "\u3000", "\r\n"])
ANY_CHAR = st.characters(codec="utf-8")  # valid Unicode: no lone surrogates (plain characters() can draw them)
PIECE = st.one_of(ASCII, CJK, COMBINING, EMOJI, SPACE, ANY_CHAR)
TEXT = st.lists(PIECE, max_size=60).map("".join)
WORD = st.lists(st.one_of(ASCII, CJK, COMBINING, EMOJI), min_size=1, max_size=6).map(
    lambda cs: "".join(cs)).filter(lambda w: w.split() == [w])
TOKEN = st.one_of(WORD, st.sampled_from(list("abcAB中文😀")))

BOOK_LINE = "The Time Machine, by H. G. Wells [1898]"


def book_preprocess(line):
    return re.sub("[^A-Za-z]+", " ", line).strip().lower()


# ---------------------------------------------------------------- char level


@FAST
@given(TEXT)
def test_char_roundtrip_unicode(s):
    assume(s)
    tok = CharTokenizer().fit(s)
    ids = tok.encode(s)
    assert ids.dtype == np.int64 and ids.ndim == 1 and len(ids) == len(s)
    assert (ids > 0).all()
    assert tok.decode(ids) == s
    assert tok.decode(ids.tolist()) == s
    assert tok.tokenize(s) == list(s)


@FAST
@given(TEXT, TEXT)
def test_char_unknowns_map_to_zero(corpus, other):
    assume(corpus)
    tok = CharTokenizer().fit(corpus)
    ids = tok.encode(other)
    known = set(corpus)
    assert [i == 0 for i in ids.tolist()] == [c not in known for c in other]
    # in-vocabulary characters keep their own id
    for c, i in zip(other, ids.tolist()):
        if c in known:
            assert tok.vocab.idx_to_token[i] == c


def test_char_specific_scripts_roundtrip():
    s = "我爱你，中国！🎉 naïve cafe\u0301 👨\u200d👩\u200d👧 🇨🇳\n第二行"
    tok = CharTokenizer().fit(s)
    assert tok.decode(tok.encode(s)) == s
    # code points, not grapheme clusters
    assert len(tok.tokenize("👨\u200d👩\u200d👧")) == 5
    assert tok.tokenize("e\u0301") == ["e", "\u0301"]
    assert tok.encode("Z").tolist() == [0]
    assert tok.decode([0]) == "<unk>"


def test_char_encode_empty_and_decode_empty():
    tok = CharTokenizer().fit("abc")
    out = tok.encode("")
    assert out.dtype == np.int64 and out.shape == (0,)
    assert tok.decode([]) == ""
    assert tok.decode(np.array([], dtype=np.int64)) == ""


def test_reserved_tokens_decode_literally_and_are_not_produced_by_char_encode():
    tok = CharTokenizer().fit("ab<", reserved_tokens=["<pad>", "<eos>"])
    assert tok.vocab.idx_to_token[:3] == ["<unk>", "<pad>", "<eos>"]
    assert tok.encode("<pad>").tolist() == [tok.vocab["<"], 0, tok.vocab["a"], 0, 0]
    assert tok.decode([1, 3]) == "<pad>" + tok.vocab.idx_to_token[3]


def test_decode_accepts_various_integer_arrays():
    tok = CharTokenizer().fit("hello")
    ids = tok.encode("hello")
    for arr in (ids, ids.astype(np.int32), ids.astype(np.uint8), list(ids.tolist()), tuple(ids.tolist())):
        assert tok.decode(arr) == "hello"


# ---------------------------------------------------------------- book preprocessing


def test_letters_only_lower_matches_book_on_time_machine_line():
    assert book_preprocess(BOOK_LINE) == "the time machine by h g wells"
    tok = CharTokenizer(letters_only=True, lower=True)
    assert tok.normalize(BOOK_LINE) == book_preprocess(BOOK_LINE)
    assert tok.tokenize(BOOK_LINE) == list("the time machine by h g wells")
    w = WordTokenizer(letters_only=True, lower=True)
    assert w.tokenize(BOOK_LINE) == ["the", "time", "machine", "by", "h", "g", "wells"]
    tok.fit(BOOK_LINE)
    assert tok.decode(tok.encode(BOOK_LINE)) == "the time machine by h g wells"
    assert tok.vocab.token_freqs[0] == (" ", 6)


def test_letters_only_and_lower_are_independent():
    assert CharTokenizer(letters_only=True).normalize(BOOK_LINE) == "The Time Machine by H G Wells"
    assert CharTokenizer(lower=True).normalize(BOOK_LINE) == BOOK_LINE.lower()
    assert CharTokenizer().normalize(BOOK_LINE) == BOOK_LINE


@FAST
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=80))
def test_letters_only_equals_book_regex_on_ascii(s):
    assert CharTokenizer(letters_only=True, lower=True).normalize(s) == book_preprocess(s)
    assert CharTokenizer(letters_only=True).normalize(s) == re.sub("[^A-Za-z]+", " ", s).strip()


def test_letters_only_unicode_rule():
    n = CharTokenizer(letters_only=True).normalize
    assert n("我爱你，世界！123 😀 naïve_x") == "我爱你 世界 naïve x"
    assert n("cafe\u0301!") == "cafe\u0301"  # combining marks are kept
    assert n("ＡＢＣ１２３ｄ") == "ＡＢＣ ｄ"  # full-width letters kept, full-width digits dropped
    assert n("  \n\t ") == ""
    assert CharTokenizer(letters_only=True, lower=True).normalize("ÄÖÜ Straße") == "äöü straße"


@FAST
@given(TEXT)
def test_letters_only_invariants(s):
    out = CharTokenizer(letters_only=True).normalize(s)
    assert out == out.strip(" ") and "  " not in out
    for ch in out:
        assert ch == " " or ch.isalpha() or unicodedata.category(ch)[0] == "M"
    # exactly the letters/marks of the input, in order
    keep = [c for c in s if c.isalpha() or unicodedata.category(c)[0] == "M"]
    assert out.replace(" ", "") == "".join(keep)


# ---------------------------------------------------------------- word level


def test_word_level_basics():
    text = "the cat  sat\non the\tmat\n\nthe end"
    tok = WordTokenizer().fit(text)
    assert tok.level == "word"
    assert tok.tokenize(text) == text.split()
    assert tok.vocab.idx_to_token[:2] == ["<unk>", "the"]
    assert tok.vocab.token_freqs[0] == ("the", 3)
    assert tok.decode(tok.encode(text)) == "the cat sat on the mat the end"
    assert tok.encode("the dog").tolist() == [1, 0]
    assert tok.decode(tok.encode("the dog")) == "the <unk>"


@FAST
@given(st.lists(WORD, min_size=1, max_size=30), st.lists(SPACE, min_size=1, max_size=30))
def test_word_roundtrip_normalises_whitespace(words, spaces):
    text = "".join(w + spaces[i % len(spaces)] for i, w in enumerate(words))
    tok = WordTokenizer().fit(text)
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and len(ids) == len(words)
    assert tok.decode(ids) == " ".join(words)


def test_word_lower_and_letters_only():
    tok = WordTokenizer(lower=True, letters_only=True).fit("Hello, WORLD! hello world 42")
    assert tok.vocab.token_freqs == [("hello", 2), ("world", 2)]
    assert tok.tokenize("Chinese：中文歌词，很好") == ["chinese", "中文歌词", "很好"]


# ---------------------------------------------------------------- Vocab


def test_vocab_order_ties_by_code_point():
    toks = ["b", "a", "😀", "中", "B", "a", "b", "中", "😀", "B"]
    v = Vocab(toks)
    assert v.idx_to_token == ["<unk>", "B", "a", "b", "中", "😀"]
    assert v.token_freqs == [("B", 2), ("a", 2), ("b", 2), ("中", 2), ("😀", 2)]
    v2 = Vocab(["x", "y", "y", "z", "z", "z"])
    assert v2.idx_to_token == ["<unk>", "z", "y", "x"]


@FAST
@given(st.lists(TOKEN, max_size=60), st.randoms(use_true_random=False))
def test_vocab_deterministic_in_any_input_order(tokens, rnd):
    shuffled = list(tokens)
    rnd.shuffle(shuffled)
    v1, v2 = Vocab(tokens), Vocab(shuffled)
    v3 = Vocab(collections.Counter(shuffled))
    assert v1 == v2 == v3
    assert v1.idx_to_token == v2.idx_to_token == v3.idx_to_token
    # canonical order: count descending then code point
    keys = [(-c, t) for t, c in v1.token_freqs]
    assert keys == sorted(keys)
    assert len(v1) == 1 + len(set(tokens) - {"<unk>"})


@FAST
@given(st.lists(TOKEN, max_size=60), st.integers(0, 4), st.integers(1, 12),
       st.lists(st.sampled_from(["<pad>", "<bos>", "<eos>", "a", "中"]), unique=True, max_size=3))
def test_vocab_min_freq_max_size_reserved(tokens, min_freq, extra, reserved):
    counts = collections.Counter(tokens)
    max_size = 1 + len(reserved) + extra
    v = Vocab(tokens, min_freq=min_freq, reserved_tokens=reserved, max_size=max_size)
    assert v.idx_to_token[0] == "<unk>" and v.unk == 0 and v["<unk>"] == 0
    assert v.idx_to_token[1:1 + len(reserved)] == reserved
    assert v.reserved_tokens == reserved
    assert len(v) <= max_size
    rest = v.idx_to_token[1 + len(reserved):]
    assert [t for t, _ in v.token_freqs] == rest
    for t, c in v.token_freqs:
        assert c == counts[t] and c >= min_freq and t not in reserved
    eligible = sorted(((-c, t) for t, c in counts.items()
                       if c >= min_freq and t not in reserved and t != "<unk>"))
    assert [t for _, t in eligible[:max_size - 1 - len(reserved)]] == rest


def test_vocab_mapping_api():
    v = Vocab(list("hello world"), reserved_tokens=["<pad>"])
    assert v.idx_to_token[:3] == ["<unk>", "<pad>", "l"]
    assert v["l"] == 2 and v["?"] == 0 and v[["l", "?"]] == [2, 0]
    assert "l" in v and "?" not in v and "<unk>" in v and 3 not in v
    ids = v.to_ids(list("hol?"))
    assert ids.dtype == np.int64 and ids.tolist() == [v["h"], v["o"], v["l"], 0]
    assert v.to_tokens(ids) == ["h", "o", "l", "<unk>"]
    assert v.to_tokens(2) == "l" and v.to_tokens(np.int64(2)) == "l"
    assert v.token_to_idx["l"] == 2 and len(v.token_to_idx) == len(v)
    # returned containers are copies: mutating them does not corrupt the vocab
    v.idx_to_token.append("zzz")
    v.token_to_idx["zzz"] = 99
    assert "zzz" not in v and len(v) == len(set("hello world")) + 2
    assert "Vocab(size=" in repr(v)


def test_vocab_d2l_style_nested_lists_and_counter():
    lines = [["the", "time"], ["the", "machine"]]
    v = Vocab(lines)
    assert v.idx_to_token == ["<unk>", "the", "machine", "time"]
    assert Vocab(collections.Counter({"the": 2, "machine": 1, "time": 1})) == v
    assert len(Vocab()) == 1 and Vocab().idx_to_token == ["<unk>"]


def test_vocab_unk_and_reserved_in_input_are_not_duplicated():
    v = Vocab(["<unk>", "<pad>", "a", "a"], reserved_tokens=["<pad>"])
    assert v.idx_to_token == ["<unk>", "<pad>", "a"]
    assert v.token_freqs == [("a", 2)]


@pytest.mark.parametrize("kwargs, exc, fragment", [
    (dict(tokens_or_counter="hello"), TypeError, "list(text)"),
    (dict(tokens_or_counter=[1, 2]), TypeError, "int"),
    (dict(tokens_or_counter=5), TypeError, "int"),
    (dict(tokens_or_counter=["a", ""]), ValueError, "non-empty"),
    (dict(tokens_or_counter={"a": -1}), ValueError, "-1"),
    (dict(tokens_or_counter={"a": 1.5}), TypeError, "float"),
    (dict(tokens_or_counter=["a"], reserved_tokens=["<unk>"]), ValueError, "<unk>"),
    (dict(tokens_or_counter=["a"], reserved_tokens=["<p>", "<p>"]), ValueError, "duplicates"),
    (dict(tokens_or_counter=["a"], reserved_tokens="<pad>"), TypeError, "single str"),
    (dict(tokens_or_counter=["a"], reserved_tokens=["<p>"], max_size=1), ValueError, ">= 1 + len"),
    (dict(tokens_or_counter=["a"], min_freq=-1), ValueError, "min_freq"),
    (dict(tokens_or_counter=["a"], min_freq=1.0), TypeError, "min_freq"),
    (dict(tokens_or_counter=["a", "\ud800"]), ValueError, "surrogate"),
])
def test_vocab_bad_arguments(kwargs, exc, fragment):
    with pytest.raises(exc, match=re.escape(fragment)):
        Vocab(**kwargs)


def test_vocab_to_tokens_out_of_range():
    v = Vocab(list("abc"))
    with pytest.raises(ValueError, match=r"token id 4 .*size 4"):
        v.to_tokens([1, 4])
    with pytest.raises(ValueError, match=r"token id -1"):
        v.to_tokens(-1)
    with pytest.raises(TypeError, match="str"):
        v.to_ids("abc")


# ---------------------------------------------------------------- JSON / files


@FAST
@given(st.lists(TOKEN, max_size=40),
       st.lists(st.sampled_from(["<pad>", "<bos>", "中"]), unique=True, max_size=2))
def test_vocab_json_roundtrip(tokens, reserved):
    v = Vocab(tokens, reserved_tokens=reserved)
    s = v.to_json()
    obj = json.loads(s)
    assert obj["format"] == "rnnrs-vocab" and obj["version"] == 1
    v2 = Vocab.from_json(s)
    assert v2 == v and v2.idx_to_token == v.idx_to_token and v2.token_freqs == v.token_freqs
    assert Vocab.from_json(s.encode("utf-8")) == v


def test_vocab_save_load_file_is_utf8_and_atomic(tmp_path):
    v = Vocab(list("我爱你 我爱😀 abc"), reserved_tokens=["<pad>"])
    path = tmp_path / "vocab.json"
    v.save(path)
    raw = path.read_bytes().decode("utf-8")
    assert "我" in raw and "😀" in raw  # not \u-escaped
    assert Vocab.load(path) == v
    assert Vocab.load(str(path)) == v
    # overwrite in place; no temporary files left behind
    v2 = Vocab(list("xyz"))
    v2.save(str(path))
    assert Vocab.load(path) == v2
    assert sorted(os.listdir(tmp_path)) == ["vocab.json"]


def _good_vocab_obj():
    return json.loads(Vocab(["a", "b", "b"], reserved_tokens=["<pad>"]).to_json())


def _mutate(fn):
    obj = _good_vocab_obj()
    fn(obj)
    return json.dumps(obj)


BAD_VOCABS = {
    "not json": ("{not json", "not valid JSON"),
    "array": ("[1, 2]", "must be an object"),
    "wrong format": (_mutate(lambda o: o.update(format="rnnrs-tokenizer")), "format"),
    "no format": (_mutate(lambda o: o.pop("format")), "format"),
    "wrong version": (_mutate(lambda o: o.update(version=2)), "version"),
    "string version": (_mutate(lambda o: o.update(version="1")), "version"),
    "missing field": (_mutate(lambda o: o.pop("idx_to_token")), "idx_to_token"),
    "field not list": (_mutate(lambda o: o.update(token_freqs={})), "token_freqs"),
    "unk not first": (_mutate(lambda o: o["idx_to_token"].reverse()), "idx_to_token[0]"),
    "empty itt": (_mutate(lambda o: o.update(idx_to_token=[])), "idx_to_token[0]"),
    "non-str token": (_mutate(lambda o: o["idx_to_token"].append(3)), "idx_to_token[4]"),
    "duplicate": (_mutate(lambda o: o["idx_to_token"].append("a")), "duplicate"),
    "reserved mismatch": (_mutate(lambda o: o.update(reserved_tokens=["<bos>"])), "reserved_tokens"),
    "freqs mismatch": (_mutate(lambda o: o["token_freqs"].pop()), "token_freqs"),
    "negative count": (_mutate(lambda o: o["token_freqs"][0].__setitem__(1, -3)), "token_freqs[0]"),
    "float count": (_mutate(lambda o: o["token_freqs"][0].__setitem__(1, 2.5)), "token_freqs[0]"),
    "bad pair": (_mutate(lambda o: o["token_freqs"].__setitem__(0, ["b"])), "token_freqs[0]"),
    "order": (_mutate(lambda o: o.update(idx_to_token=["<unk>", "<pad>", "a", "b"],
                                          token_freqs=[["a", 1], ["b", 2]])), "canonical order"),
    "surrogate": ('{"format": "rnnrs-vocab", "version": 1, "reserved_tokens": [], '
                  '"idx_to_token": ["<unk>", "\\ud800"], "token_freqs": [["\\ud800", 1]]}',
                  "surrogate"),
}


@pytest.mark.parametrize("name", sorted(BAD_VOCABS))
def test_vocab_corrupt_json_raises_value_error(name):
    text, fragment = BAD_VOCABS[name]
    with pytest.raises(ValueError, match=re.escape(fragment)):
        Vocab.from_json(text)


def test_vocab_load_rejects_bad_files(tmp_path):
    p = tmp_path / "v.json"
    p.write_bytes(b"\xff\xfe garbage")
    with pytest.raises(ValueError, match="UTF-8"):
        Vocab.load(p)
    p.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="JSON"):
        Vocab.load(p)
    with pytest.raises(TypeError):
        Vocab.from_json(123)
    with pytest.raises(FileNotFoundError):
        Vocab.load(tmp_path / "missing.json")


@pytest.mark.parametrize("cls", [CharTokenizer, WordTokenizer])
@pytest.mark.parametrize("lower", [False, True])
@pytest.mark.parametrize("letters_only", [False, True])
def test_tokenizer_save_load_roundtrip(tmp_path, cls, lower, letters_only):
    text = "Hello 世界, hello WORLD! 😀 naïve"
    tok = cls(lower=lower, letters_only=letters_only).fit(text, reserved_tokens=["<pad>"])
    path = tmp_path / "tok.json"
    tok.save(path)
    obj = json.loads(path.read_text(encoding="utf-8"))
    assert obj["format"] == "rnnrs-tokenizer" and obj["version"] == 1
    assert obj["level"] == tok.level and obj["vocab"]["format"] == "rnnrs-vocab"
    for loaded in (tk.load_tokenizer(path), cls.load(path), cls.from_json(tok.to_json()),
                   tk.tokenizer_from_json(tok.to_json())):
        assert type(loaded) is cls and loaded == tok
        assert loaded.lower == lower and loaded.letters_only == letters_only
        assert loaded.encode(text).tolist() == tok.encode(text).tolist()
    assert os.listdir(tmp_path) == ["tok.json"]


def test_tokenizer_load_wrong_class_and_corrupt(tmp_path):
    w = WordTokenizer().fit("a b")
    with pytest.raises(ValueError, match="level 'word'"):
        CharTokenizer.from_json(w.to_json())
    assert type(tk.tokenizer_from_json(w.to_json())) is WordTokenizer
    obj = json.loads(w.to_json())
    for mutate, fragment in [
        (lambda o: o.update(level="byte"), "level"),
        (lambda o: o.update(lower="yes"), "lower"),
        (lambda o: o.pop("letters_only"), "letters_only"),
        (lambda o: o.pop("vocab"), "vocab"),
        (lambda o: o.update(format="rnnrs-vocab"), "format"),
        (lambda o: o.update(version=0), "version"),
        (lambda o: o["vocab"].update(version=7), "version"),
    ]:
        bad = json.loads(json.dumps(obj))
        mutate(bad)
        with pytest.raises(ValueError, match=fragment):
            tk.tokenizer_from_json(json.dumps(bad))
    # a vocab file is not a tokenizer file
    with pytest.raises(ValueError, match="format"):
        tk.tokenizer_from_json(w.vocab.to_json())


def test_unfitted_tokenizer_roundtrip_and_errors(tmp_path):
    tok = CharTokenizer(lower=True)
    tok.save(tmp_path / "t.json")
    back = tk.load_tokenizer(tmp_path / "t.json")
    assert back == tok and back.vocab is None
    with pytest.raises(RuntimeError, match="fit"):
        tok.encode("abc")
    with pytest.raises(RuntimeError, match="fit"):
        tok.decode([0])
    assert tok.tokenize("AB") == ["a", "b"]  # tokenize needs no vocab
    with_vocab = CharTokenizer(vocab=Vocab(list("ab")))
    assert with_vocab.encode("abc").tolist() == [1, 2, 0]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls", [CharTokenizer, WordTokenizer])
def test_bad_input_types_and_values(cls):
    tok = cls().fit("a b c")
    for bad in (b"abc", None, 3, ["a", "b"]):
        for method in (tok.encode, tok.tokenize, tok.normalize, cls().fit):
            with pytest.raises(TypeError, match=type(bad).__name__):
                method(bad)
    with pytest.raises(ValueError, match="empty"):
        cls().fit("")
    with pytest.raises(ValueError, match="no tokens"):
        cls(letters_only=True).fit("123 !!! 456")
    with pytest.raises(ValueError, match="surrogate"):
        tok.encode("a\udc80b")
    with pytest.raises(ValueError, match="surrogate"):
        cls().fit("a\udc80b")
    n = len(tok.vocab)
    with pytest.raises(ValueError, match=rf"token id {n} is out of range .*size {n}"):
        tok.decode([1, n])
    with pytest.raises(ValueError, match=r"token id -2 is out of range"):
        tok.decode(np.array([-2]))
    with pytest.raises(TypeError, match="float"):
        tok.decode([1.0, 2.0])
    with pytest.raises(ValueError, match="1-D"):
        tok.decode([[1, 2]])
    with pytest.raises(TypeError, match="vocab"):
        cls(vocab={"a": 1})
    with pytest.raises(TypeError, match="lower"):
        cls(lower=1)


def test_fit_options_passed_to_vocab():
    tok = CharTokenizer().fit("aaabbc", min_freq=2, reserved_tokens=["<pad>"], max_size=3)
    assert tok.vocab.idx_to_token == ["<unk>", "<pad>", "a"]
    assert tok.encode("abc").tolist() == [2, 0, 0]


def test_tokenizer_equality_and_repr():
    a = CharTokenizer().fit("abc")
    b = CharTokenizer().fit("cba")
    assert a == b
    assert a != CharTokenizer(lower=True).fit("abc")
    assert a != WordTokenizer().fit("abc")
    assert "CharTokenizer(vocab_size=4" in repr(a)


# ---------------------------------------------------------------- speed (measurement only)


def _synthetic_corpus(n_bytes, seed=0):
    rnd = random.Random(seed)
    words = ["the", "time", "machine", "traveller", "love", "you", "baby", "night", "Hello,"]
    cjk = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    emoji = ["😀", "🎉", "👍🏽", "👨\u200d👩\u200d👧", "🇨🇳", "❤️"]
    parts, size = [], 0
    while size < n_bytes:
        r = rnd.random()
        if r < 0.5:
            p = rnd.choice(words) + rnd.choice([" ", " ", ", ", ".\n"])
        elif r < 0.95:
            p = "".join(rnd.choices(cjk, k=rnd.randint(1, 6))) + rnd.choice(["，", "。\n", " "])
        else:
            p = rnd.choice(emoji) + " "
        parts.append(p)
        size += len(p.encode("utf-8"))
    return "".join(parts)


def test_encode_speed_5mb_measurement(capsys):
    """Prints encode timings for a 5 MB mixed Chinese/ASCII/emoji text (not asserted)."""
    text = _synthetic_corpus(5_000_000)
    lines = [f"5 MB corpus: {len(text.encode('utf-8'))} bytes, {len(text)} code points"]
    for cls, kwargs in [(CharTokenizer, {}), (CharTokenizer, dict(lower=True, letters_only=True)),
                        (WordTokenizer, {}), (WordTokenizer, dict(lower=True, letters_only=True))]:
        t0 = time.perf_counter()
        tok = cls(**kwargs).fit(text)
        t1 = time.perf_counter()
        ids = tok.encode(text)
        t2 = time.perf_counter()
        out = tok.decode(ids)
        t3 = time.perf_counter()
        if not kwargs:
            expect = text if cls is CharTokenizer else " ".join(text.split())
            assert out == expect
        lines.append(f"{cls.__name__}{kwargs or ''}: vocab={len(tok.vocab)} tokens={len(ids)} "
                     f"fit={t1 - t0:.3f}s encode={t2 - t1:.3f}s decode={t3 - t2:.3f}s")
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def test_pickle_and_deepcopy():
    import copy
    import pickle
    tok = CharTokenizer(lower=True).fit("我爱你 ABC")
    tok.encode("abc")  # populate the internal lookup cache
    for clone in (pickle.loads(pickle.dumps(tok)), copy.deepcopy(tok)):
        assert clone == tok and clone.encode("爱a?").tolist() == tok.encode("爱a?").tolist()
