//! Matrix products over the real models' weight tensors, at both
//! precisions, against f64 sums of the scalar-decoded weights.

use std::path::PathBuf;

use ferrolm_gguf::{GgufFile, TensorView};
use ferrolm_quant::{GgmlType, MatScratch, Precision, QMatrix, dequantize_row};

fn model_path(file: &str) -> PathBuf {
    let dir = match std::env::var_os("FERROLM_HOME") {
        Some(home) => PathBuf::from(home).join("models"),
        None => dirs::cache_dir()
            .expect("a cache directory")
            .join("ferrolm/models"),
    };
    let path = dir.join(file);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask fetch-models` first",
        path.display()
    );
    path
}

/// A deterministic input with a few large outliers, as real activations have.
fn input(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let v = ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32
                / (1 << 24) as f32
                - 0.5;
            if i % 97 == 3 { v * 40.0 } else { v }
        })
        .collect()
}

/// Checks rows `0..check` of `Y = X Wᵀ` for `n` inputs against f64 arithmetic.
fn check(t: &TensorView<'_>, n: usize, check: usize) {
    let (rows, cols) = (t.n_rows() as usize, t.row_len() as usize);
    let m = QMatrix::new(t.ty, rows, cols, t.data).expect("a supported weight matrix");
    let x = input(n * cols, rows as u32);
    let mut w = vec![0.0f32; cols];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("pool");
    for precision in [Precision::Q8, Precision::Q16, Precision::F32] {
        let mut y = vec![0.0f32; n * rows];
        let mut scratch = MatScratch::new(precision);
        pool.install(|| m.matmul(&x, n, &mut y, &mut scratch))
            .expect("matmul");
        let (mut err2, mut ref2) = (0.0f64, 0.0f64);
        for r in 0..check.min(rows) {
            dequantize_row(t.ty, t.row(r).expect("row"), &mut w).expect("decode");
            for c in 0..n {
                let exact: f64 = w
                    .iter()
                    .zip(&x[c * cols..])
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                err2 += (f64::from(y[c * rows + r]) - exact).powi(2);
                ref2 += exact * exact;
            }
        }
        let rel = (err2 / ref2).sqrt();
        // Q8 errors are those of 8-bit activations; the residual plane
        // must bring them down by orders of magnitude.
        let limit = match precision {
            Precision::Q8 => 2e-2,
            Precision::Q16 => 1e-4,
            Precision::F32 => 1e-6,
        };
        assert!(
            rel < limit,
            "{} ({}) {precision:?}: relative error {rel:e}",
            t.name,
            t.ty
        );
        if precision == Precision::Q8 {
            assert!(
                rel > 1e-4,
                "{}: the 8-bit path should differ from the exact one",
                t.name
            );
        }
    }
}

fn check_model(file: &str, names: &[&str], types: &[GgmlType]) {
    let file = GgufFile::open(model_path(file)).expect("model opens");
    let gguf = file.gguf().expect("model parses");
    let mut seen = Vec::new();
    for name in names {
        let t = gguf.tensor(name).unwrap_or_else(|| panic!("tensor {name}"));
        let big = t.n_rows() > 10_000;
        check(
            &t,
            if big { 1 } else { 5 },
            if big { 512 } else { usize::MAX },
        );
        seen.push(t.ty);
    }
    for ty in types {
        assert!(seen.contains(ty), "{ty} not covered");
    }
}

#[test]
fn smollm2_matrices_match_exact_products() {
    check_model(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        &[
            "blk.0.attn_q.weight",
            "blk.0.attn_k.weight",
            "blk.3.ffn_down.weight",
            "token_embd.weight",
        ],
        &[GgmlType::Q4_1, GgmlType::Q8_0],
    );
}

#[test]
fn gemma3_matrices_match_exact_products() {
    check_model(
        "gemma-3-270m-q4_k_m.gguf",
        &[
            "blk.0.attn_q.weight",
            "blk.0.attn_v.weight",
            "blk.0.ffn_down.weight",
            "blk.1.ffn_down.weight",
            "blk.2.attn_output.weight",
            "token_embd.weight",
        ],
        &[GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K],
    );
}
