//! Fuzzing `rnnrs::io::from_safetensors`: random bytes, mutated valid files (the seed corpus in
//! `tests/fuzz_corpus/` plus files built here) and rewritten headers must give `Ok` with consistent
//! tensors or `Err(Error::Format)` — never a panic, an abort, a huge allocation or a hang.
//!
//! Bounded and deterministic: `RNNRS_FUZZ_ITERS` iterations per target (default 20 000) from a fixed
//! seed (`RNNRS_FUZZ_SEED`, default 0x5EED). Every iteration runs under `catch_unwind`, and a failure
//! prints the seed and iteration to replay it.

use rnnrs::io::{from_safetensors, to_safetensors, RawTensor, MAX_HEADER_BYTES};
use rnnrs::Error;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Iterations per fuzz target.
fn iterations() -> usize {
    std::env::var("RNNRS_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000)
}

fn seed() -> u64 {
    std::env::var("RNNRS_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5EED)
}

/// SplitMix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        rnnrs::rng::mix(self.0)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz_corpus")
}

/// The seed corpus (if present) and a few valid files built here.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir(corpus_dir()) {
        let mut paths: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if p.extension().is_some_and(|e| e == "safetensors") {
                out.push(std::fs::read(&p).expect("readable corpus file"));
            }
        }
    }
    let meta: BTreeMap<String, String> = [("format", "rnnrs"), ("version", "1"), ("config", "{\"a\": [1, 2]}")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let t = |name: &str, dtype: &str, shape: Vec<usize>, item: usize| RawTensor {
        name: name.into(),
        dtype: dtype.into(),
        data: (0..shape.iter().product::<usize>() * item).map(|i| i as u8).collect(),
        shape,
    };
    for tensors in [
        vec![t("w", "F32", vec![3, 4], 4), t("b", "F64", vec![4], 8)],
        vec![t("scalar", "I64", vec![], 8), t("empty", "F16", vec![0, 5], 2), t("bytes", "U8", vec![7], 1)],
        vec![],
    ] {
        out.push(to_safetensors(&tensors, &meta).expect("valid tensors"));
    }
    out
}

/// `from_safetensors` must not panic, must finish quickly, and an `Ok` must be self-consistent.
fn check(data: &[u8], what: &str) {
    let t0 = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(|| from_safetensors(data, "fuzz.safetensors")));
    let elapsed = t0.elapsed();
    assert!(elapsed < Duration::from_secs(5), "{what}: took {elapsed:?} on {} bytes", data.len());
    match r {
        Err(_) => panic!("{what}: from_safetensors panicked on {} bytes: {:02x?}", data.len(), &data[..data.len().min(64)]),
        Ok(Err(Error::Format { path, reason })) => {
            assert_eq!(path, "fuzz.safetensors");
            assert!(!reason.is_empty(), "{what}: empty reason");
        }
        Ok(Err(e)) => panic!("{what}: expected Error::Format, got {e:?}"),
        Ok(Ok((tensors, _meta))) => {
            let mut total = 0usize;
            for t in &tensors {
                let item = match t.dtype.as_str() {
                    "U8" => 1,
                    "F16" => 2,
                    "F32" | "I32" => 4,
                    "F64" | "I64" => 8,
                    other => panic!("{what}: unexpected dtype {other}"),
                };
                let n = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).expect("shape product fits");
                assert_eq!(t.data.len(), n * item, "{what}: tensor {:?} has inconsistent data", t.name);
                total += t.data.len();
            }
            assert!(total <= data.len(), "{what}: more tensor bytes than file bytes");
            assert!(tensors.windows(2).all(|w| w[0].name < w[1].name), "{what}: names not sorted and unique");
        }
    }
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(6) {
        let len = data.len();
        match rng.below(8) {
            0 | 1 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            3 => data.truncate(rng.below(len + 1)),
            4 if len > 0 => {
                let i = rng.below(len);
                let n = (1 + rng.below(64)).min(len - i);
                data.drain(i..i + n);
            }
            5 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(32);
                let extra = rng.bytes(n);
                data.splice(i..i, extra);
            }
            6 if len >= 8 => {
                // rewrite the header length: near the truth, past the end, or absurd
                let truth = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
                let n = match rng.below(4) {
                    0 => truth.wrapping_add(rng.below(16) as u64).wrapping_sub(8),
                    1 => len as u64 + rng.below(1000) as u64,
                    2 => MAX_HEADER_BYTES as u64 + rng.below(3) as u64,
                    _ => rng.next(),
                };
                data[..8].copy_from_slice(&n.to_le_bytes());
            }
            _ => {
                // overwrite a run with bytes that matter to JSON
                let tokens: &[&[u8]] = &[b"\"", b"{", b"}", b"[", b"]", b",", b":", b"-1", b"1e999", b"null", b"\\u0000", b"18446744073709551615"];
                if len > 8 {
                    let i = 8 + rng.below(len - 8);
                    let tok = rng.pick(tokens);
                    let end = (i + tok.len()).min(len);
                    data[i..end].copy_from_slice(&tok[..end - i]);
                }
            }
        }
    }
}

#[test]
fn random_bytes_are_rejected_or_parsed_consistently() {
    let mut rng = Rng(seed());
    for it in 0..iterations() {
        let n = rng.below(512);
        let mut data = rng.bytes(n);
        if n >= 8 && rng.below(2) == 0 {
            let h = rng.below(n - 7) as u64; // a plausible header length
            data[..8].copy_from_slice(&h.to_le_bytes());
        }
        check(&data, &format!("random bytes, seed {:#x} iteration {it}", seed()));
    }
}

#[test]
fn mutated_valid_files_are_rejected_or_parsed_consistently() {
    let seeds = seeds();
    assert!(seeds.len() >= 3);
    for s in &seeds {
        let (tensors, _) = from_safetensors(s, "seed").expect("seed files are valid");
        assert!(tensors.iter().all(|t| !t.name.is_empty()));
    }
    let mut rng = Rng(seed() ^ 1);
    for it in 0..iterations() {
        let mut data = rng.pick(&seeds).clone();
        mutate(&mut rng, &mut data);
        check(&data, &format!("mutation, seed {:#x} iteration {it}", seed()));
    }
}

/// Replace the JSON header by a rewritten one (entries with wrong dtypes, shapes and offsets,
/// metadata of the wrong types, deep nesting) and keep the data section.
#[test]
fn rewritten_headers_are_rejected_or_parsed_consistently() {
    let seeds = seeds();
    let mut rng = Rng(seed() ^ 2);
    let dims = ["0", "1", "3", "-1", "1.5", "\"2\"", "4294967296", "9223372036854775807", "18446744073709551615", "null"];
    let dtypes = ["\"F32\"", "\"F64\"", "\"F16\"", "\"BF16\"", "\"I8\"", "\"BOOL\"", "\"U8\"", "\"I64\"", "\"X\"", "7", "null"];
    let offsets = ["0", "4", "12", "100000", "18446744073709551615", "-4", "1.0"];
    let values = ["\"s\"", "1", "null", "[]", "{}", "true", "{\"a\": {\"b\": [1, 2]}}"];
    for it in 0..iterations() {
        let base = rng.pick(&seeds);
        let n = u64::from_le_bytes(base[..8].try_into().expect("8 bytes")) as usize;
        let body = &base[8 + n..];
        let mut entries = Vec::new();
        for k in 0..rng.below(4) {
            let shape: Vec<&str> = (0..rng.below(4)).map(|_| *rng.pick(&dims)).collect();
            let (a, b) = (*rng.pick(&offsets), *rng.pick(&offsets));
            entries.push(format!(
                "\"t{k}\": {{\"dtype\": {}, \"shape\": [{}], \"data_offsets\": [{a}, {b}]}}",
                rng.pick(&dtypes),
                shape.join(", ")
            ));
        }
        match rng.below(5) {
            0 => entries.push(format!("\"__metadata__\": {{\"format\": {}}}", rng.pick(&values))),
            1 => entries.push(format!("\"__metadata__\": {}", rng.pick(&values))),
            2 => {
                let depth = 1 + rng.below(5000);
                entries.push(format!("\"deep\": {}{}", "[".repeat(depth), "]".repeat(depth)));
            }
            3 => entries.push("\"t0\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}".into()),
            _ => {}
        }
        let header = format!("{{{}}}{}", entries.join(", "), " ".repeat(rng.below(8)));
        let mut data = (header.len() as u64).to_le_bytes().to_vec();
        data.extend_from_slice(header.as_bytes());
        data.extend_from_slice(&body[..rng.below(body.len() + 1)]);
        check(&data, &format!("rewritten header, seed {:#x} iteration {it}: {header:.200}", seed()));
    }
}

#[test]
fn oversized_headers_are_rejected_before_parsing() {
    for n in [MAX_HEADER_BYTES as u64 + 1, u32::MAX as u64, u64::MAX, u64::MAX / 2] {
        let mut data = n.to_le_bytes().to_vec();
        data.extend_from_slice(b"{}");
        match from_safetensors(&data, "big") {
            Err(Error::Format { reason, .. }) => assert!(reason.contains("exceeds the limit") || reason.contains("not a valid"), "{reason}"),
            other => panic!("expected a format error, got {other:?}"),
        }
    }
    // a header at the limit made of valid JSON and whitespace is accepted
    let mut header = b"{}".to_vec();
    header.resize(MAX_HEADER_BYTES, b' ');
    let mut data = (header.len() as u64).to_le_bytes().to_vec();
    data.extend_from_slice(&header);
    let (tensors, meta) = from_safetensors(&data, "padded").expect("a padded empty header is valid");
    assert!(tensors.is_empty() && meta.is_empty());
}

#[test]
fn every_truncation_of_a_valid_file_is_rejected() {
    for s in seeds() {
        for cut in 0..s.len() {
            if s.len() > 4096 && cut % 7 != 0 && cut > 64 {
                continue;
            }
            assert!(from_safetensors(&s[..cut], "cut").is_err(), "a file cut at {cut} of {} bytes was accepted", s.len());
        }
    }
}
