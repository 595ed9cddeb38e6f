//! Mutation testing: bytes of valid GGUF files flipped, overwritten,
//! truncated and spliced must give `Ok` or an error, never a panic or a hang.
//!
//! The number of inputs is `GGUF_MUTATION_CASES` (default 3000); the seed of
//! the run is `GGUF_MUTATION_SEED` (default fixed).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferrolm_gguf::{GgmlType, Gguf, GgufFile, GgufWriter, OwnedArray, OwnedMetadataValue, keys};

/// splitmix64: small, seedable, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small file using every metadata value type, nested arrays and several tensor types.
fn small_seed() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata(keys::general::ARCHITECTURE, "llama");
    w.add_metadata("llama.context_length", 128u32);
    w.add_metadata("t.u8", 1u8);
    w.add_metadata("t.i8", -1i8);
    w.add_metadata("t.u16", 2u16);
    w.add_metadata("t.i16", -2i16);
    w.add_metadata("t.i32", -3i32);
    w.add_metadata("t.u64", 4u64);
    w.add_metadata("t.i64", -5i64);
    w.add_metadata("t.f32", 0.5f32);
    w.add_metadata("t.f64", 0.25f64);
    w.add_metadata("t.bool", true);
    w.add_metadata(
        keys::tokenizer::TOKENS,
        OwnedArray::String(vec!["<s>".into(), "a".into(), "é".into()]),
    );
    w.add_metadata(
        keys::tokenizer::SCORES,
        OwnedArray::F32(vec![0.0, -1.0, -2.0]),
    );
    w.add_metadata(keys::tokenizer::TOKEN_TYPE, OwnedArray::I32(vec![3, 1, 1]));
    w.add_metadata(
        "t.nested",
        OwnedMetadataValue::Array(OwnedArray::Array(vec![
            OwnedArray::U8(vec![1, 2]),
            OwnedArray::Array(vec![OwnedArray::Bool(vec![true, false])]),
        ])),
    );
    w.add_tensor("f32", &[4, 2], GgmlType::F32, vec![1; 32])
        .unwrap();
    w.add_tensor("q8", &[32], GgmlType::Q8_0, vec![2; 34])
        .unwrap();
    w.add_tensor("q4k", &[256], GgmlType::Q4K, vec![3; 144])
        .unwrap();
    w.add_tensor("i8", &[1, 1, 1, 3], GgmlType::I8, vec![4; 3])
        .unwrap();
    let mut bytes = Vec::new();
    w.write_to(&mut bytes).unwrap();
    bytes
}

/// The header region (metadata and tensor table, no weights) of the real SmolLM2 model.
fn smollm2_header_seed() -> Vec<u8> {
    let dir = match std::env::var_os("FERROLM_HOME") {
        Some(home) => PathBuf::from(home).join("models"),
        None => dirs::cache_dir().unwrap().join("ferrolm").join("models"),
    };
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask fetch-models`",
        path.display()
    );
    let file = GgufFile::open(&path).unwrap();
    let end = file.gguf().unwrap().data_offset() as usize;
    file.bytes()[..end].to_vec()
}

/// Values that tend to hit edge cases when written over a count, length or offset.
const INTERESTING: [u64; 12] = [
    0,
    1,
    2,
    4,
    31,
    32,
    0x7F,
    0xFF,
    0xFFFF_FFFF,
    1 << 62,
    i64::MAX as u64,
    u64::MAX,
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 if len >= 8 => {
                // Overwrite an aligned-ish word with an interesting value.
                let i = rng.below(len - 7);
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let width = [1, 2, 4, 8][rng.below(4)];
                input[i..i + width].copy_from_slice(&v.to_le_bytes()[..width]);
            }
            3 => input.truncate(rng.below(len + 1)),
            4 if len > 0 => {
                let start = rng.below(len);
                let end = (start + rng.below(64)).min(len);
                input.drain(start..end);
            }
            5 => {
                // Splice in a chunk of another seed.
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                let n = rng.below(64).min(other.len() - from);
                let at = rng.below(len + 1);
                input.splice(at..at, other[from..from + n].iter().copied());
            }
            6 if len > 0 => {
                // Duplicate a chunk of the input in place.
                let from = rng.below(len);
                let n = rng.below(32).min(len - from);
                let chunk = input[from..from + n].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, chunk);
            }
            _ => {
                let at = rng.below(len + 1);
                let n = rng.below(16);
                input.splice(at..at, (0..n).map(|_| rng.next() as u8));
            }
        }
    }
}

/// Everything a caller might do after a successful parse.
fn exercise(g: &Gguf<'_>) -> usize {
    let mut touched = 0;
    for (k, v) in g.metadata() {
        touched += k.len() + v.to_string().len();
        let _ = g.get_u32(k);
        let _ = g.get_f32(k);
        let _ = g.get_str(k);
    }
    for t in g.tensor_views() {
        touched += t.data.len() + t.row(0).map_or(0, <[u8]>::len);
        assert_eq!(
            t.data.len() as u64,
            g.tensors()
                .iter()
                .find(|i| i.name == t.name)
                .unwrap()
                .n_bytes()
        );
    }
    let _ = g.arch_key(keys::ArchKey::ContextLength);
    touched
}

/// A hang would stall this test (and CI's time limit catches it); the slowest
/// input is reported rather than asserted on, since tests never assert on time.
#[test]
fn mutated_files_never_panic_or_hang() {
    let cases = env_u64("GGUF_MUTATION_CASES", 3000);
    let mut rng = Rng(env_u64("GGUF_MUTATION_SEED", 0x5EED_6667));
    let seeds = vec![small_seed(), smollm2_header_seed()];
    let (mut ok, mut errors) = (0u64, 0u64);
    // (time, case, input length) of the slowest input.
    let mut slowest = (Duration::ZERO, 0, 0);
    let mut input = Vec::new();
    for case in 0..cases {
        // The large seed is slow to parse; use it for one input in 64.
        let seed = if rng.below(64) == 0 {
            &seeds[1]
        } else {
            &seeds[0]
        };
        input.clear();
        input.extend_from_slice(seed);
        mutate(&mut rng, &seeds, &mut input);
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(|| match Gguf::parse(&input) {
            Ok(g) => Ok(exercise(&g)),
            Err(e) => Err(e.to_string()),
        });
        let took = started.elapsed();
        slowest = slowest.max((took, case, input.len()));
        let Ok(outcome) = outcome else {
            panic!("case {case} panicked; input of {} bytes", input.len());
        };
        match outcome {
            Ok(_) => ok += 1,
            Err(msg) => {
                assert!(
                    !msg.is_empty() && !msg.contains('\n'),
                    "case {case}: {msg:?}"
                );
                errors += 1;
            }
        }
    }
    eprintln!(
        "{cases} mutated inputs: {ok} parsed, {errors} rejected; slowest: case {} ({} bytes) in {:?}",
        slowest.1, slowest.2, slowest.0
    );
    assert_eq!(ok + errors, cases);
    // Mutations must exercise both outcomes, or the test checks little.
    if cases >= 1000 {
        assert!(
            ok > cases / 100 && errors > cases / 100,
            "ok {ok} errors {errors}"
        );
    }
}

#[test]
fn every_prefix_of_the_real_header_is_rejected_cleanly() {
    let header = smollm2_header_seed();
    let step = (header.len() / 200).max(1);
    for len in (0..header.len()).step_by(step).chain([header.len() - 1]) {
        let e = Gguf::parse(&header[..len]).unwrap_err();
        assert!(!e.to_string().contains('\n'));
    }
}

proptest::proptest! {
    /// Random bytes after a plausible header: counts small enough that the
    /// parser goes deep into the random part.
    #[test]
    fn random_bytes_after_a_valid_header_never_panic(
        version in 2u32..=3,
        n_tensors in 0u64..4,
        n_kv in 0u64..4,
        tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
    ) {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&n_tensors.to_le_bytes());
        bytes.extend_from_slice(&n_kv.to_le_bytes());
        bytes.extend_from_slice(&tail);
        match Gguf::parse(&bytes) {
            Ok(g) => {
                exercise(&g);
            }
            Err(e) => proptest::prop_assert!(!e.to_string().contains('\n')),
        }
    }
}
