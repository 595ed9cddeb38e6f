//! The CUDA backend's operations against the CPU backend's (whose semantics are the reference)
//! through the `Backend` trait, on random inputs: products with a matrix's bias, the rotary
//! embedding with frequency factors and YaRN, per-head q/k norms fused with it, soft-capped attention, logit soft-capping, and
//! mixture-of-experts routing, expert products and their combination, each at decode and
//! prompt batch sizes (the GPU takes a different path for each). Compared by the normalized
//! error ‖gpu − cpu‖ / ‖cpu‖; the CPU runs at exact f32 precision.
//!
//! Without a CUDA driver or GPU each test prints a note and returns, unless
//! `FERROLM_REQUIRE_GPU=1` (set by `cargo xtask test-gpu`), which makes that a failure.
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use ferrolm_gguf::{GgmlType, TensorView};
use ferrolm_transformer::cuda::WeightType;
use ferrolm_transformer::{
    AttentionParams, Backend, Batch, CpuBackend, CpuOptions, CudaBackend, CudaOptions, Glu,
    KvLayout, MoeRouting, Precision, Rope, RopeStyle, TransformerError,
};
use half::{bf16, f16};

/// Products whose activations the GPU rounds to int8 (decode) or f16 (prompts), against exact
/// f32 ones: the int8 rounding costs about 0.5%.
const PRODUCT_TOL: f64 = 2e-2;

fn require_gpu() -> bool {
    std::env::var("FERROLM_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// A CUDA backend, or `None` (after a note) on a machine without a GPU.
fn gpu() -> Option<CudaBackend> {
    match CudaBackend::with_options(&CudaOptions::default()) {
        Ok(b) => Some(b),
        Err(e @ TransformerError::DeviceUnavailable { .. }) if !require_gpu() => {
            eprintln!("note: no CUDA GPU here ({e}); GPU test skipped");
            None
        }
        Err(e) => panic!("CUDA backend failed: {e}"),
    }
}

fn cpu() -> CpuBackend {
    CpuBackend::new(CpuOptions {
        threads: 2,
        precision: Precision::F32,
    })
    .unwrap()
}

/// xorshift64*: reproducible inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }
}

/// ‖out − reference‖ / ‖reference‖ in f64; a non-finite value anywhere gives infinity.
fn nerr(out: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(out.len(), reference.len());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&o, &r) in out.iter().zip(reference) {
        if !o.is_finite() || !r.is_finite() {
            return f64::INFINITY;
        }
        num += (f64::from(o) - f64::from(r)).powi(2);
        den += f64::from(r).powi(2);
    }
    assert!(den > 0.0, "reference is all zeros");
    (num / den).sqrt()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A tensor of the file as the loader hands it over: `dims` in ggml order.
fn view<'a>(name: &'a str, ty: GgmlType, dims: &[usize], data: &'a [u8]) -> TensorView<'a> {
    TensorView {
        name,
        dims: dims.iter().map(|&d| d as u64).collect(),
        ty,
        data,
    }
}

/// Random weights of `ty`: rows × cols values of about ±`gain`/√cols (block scales set so).
fn random_weights(rng: &mut Rng, ty: WeightType, rows: usize, cols: usize) -> Vec<u8> {
    let s = 1.0 / (cols as f32).sqrt();
    match ty {
        WeightType::F32 => return f32_bytes(&rng.vec(rows * cols, s)),
        WeightType::F16 => {
            return (0..rows * cols)
                .flat_map(|_| f16::from_f32(rng.f32() * s).to_le_bytes())
                .collect();
        }
        WeightType::Bf16 => {
            return (0..rows * cols)
                .flat_map(|_| bf16::from_f32(rng.f32() * s).to_le_bytes())
                .collect();
        }
        _ => {}
    }
    let mut bytes: Vec<u8> = (0..rows * ty.row_bytes(cols).unwrap())
        .map(|_| (rng.next_u64() >> 56) as u8)
        .collect();
    for b in bytes.chunks_exact_mut(ty.block_bytes()) {
        let mut put =
            |at: usize, v: f32| b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
        match ty {
            WeightType::Q4_0 => put(0, s / 4.6),
            WeightType::Q4_1 => {
                put(0, s / 4.6);
                put(2, -7.5 * s / 4.6);
            }
            WeightType::Q5_0 => put(0, s / 9.2),
            WeightType::Q8_0 => put(0, s / 74.0),
            WeightType::Q4K => {
                put(0, s / (31.0 * 4.6));
                put(2, 7.5 * s / (31.0 * 4.6));
            }
            WeightType::Q6K => put(208, s / (8.0 * 18.5)),
            // Random bits elsewhere: 5-bit values (std 9.2), 6-bit sub-block scales and
            // minimums (about 31), Q3_K's scales - 32 (rms 18.5) times values in -4..3 (std
            // 2.3), Q2_K's 4-bit scales and minimums times values in 0..3, IQ4 levels (rms 65).
            WeightType::Q5_1 => {
                put(0, s / 9.2);
                put(2, -15.5 * s / 9.2);
            }
            WeightType::Q5K => {
                put(0, s / (31.0 * 9.2));
                put(2, 15.5 * s / (31.0 * 9.2));
            }
            WeightType::Q3K => put(108, s / (18.5 * 2.3)),
            WeightType::Q2K => {
                put(80, s / (7.5 * 1.1));
                put(82, 1.5 * s / (7.5 * 1.1));
            }
            WeightType::Iq4Nl => put(0, s / 65.0),
            WeightType::Iq4Xs => put(0, s / (18.5 * 65.0)),
            WeightType::F32 | WeightType::F16 | WeightType::Bf16 => unreachable!(),
        }
    }
    bytes
}

/// Makes the weights of rows `rows` (whole blocks) NaN, so that a product that reads them shows.
fn poison_rows(ty: WeightType, bytes: &mut [u8], cols: usize, rows: std::ops::Range<usize>) {
    let rb = ty.row_bytes(cols).unwrap();
    let region = &mut bytes[rows.start * rb..rows.end * rb];
    let nan16 = f16::NAN.to_le_bytes();
    match ty {
        WeightType::F32 => {
            for v in region.chunks_exact_mut(4) {
                v.copy_from_slice(&f32::NAN.to_le_bytes());
            }
        }
        WeightType::F16 => {
            for v in region.chunks_exact_mut(2) {
                v.copy_from_slice(&nan16);
            }
        }
        WeightType::Bf16 => {
            for v in region.chunks_exact_mut(2) {
                v.copy_from_slice(&bf16::NAN.to_le_bytes());
            }
        }
        _ => {
            // The offset of the f16 super-scale d.
            let at = match ty {
                WeightType::Q6K => 208,
                WeightType::Q3K => 108,
                WeightType::Q2K => 80,
                _ => 0,
            };
            for b in region.chunks_exact_mut(ty.block_bytes()) {
                b[at..at + 2].copy_from_slice(&nan16);
            }
        }
    }
}

/// What a test needs beyond the trait: putting host values into a buffer.
trait Load<'w>: Backend<'w> {
    /// A buffer of `rows × cols` holding `values`.
    fn load(&self, values: &[f32], rows: usize, cols: usize) -> Self::Buffer;
}

impl Load<'_> for CpuBackend {
    fn load(&self, values: &[f32], rows: usize, cols: usize) -> Self::Buffer {
        // The CPU backend's buffers are filled through an embedding lookup of an f32 table.
        let bytes = f32_bytes(values);
        let table = self
            .matrix(&view("values", GgmlType::F32, &[cols, rows], &bytes), None)
            .unwrap();
        let mut out = Backend::buffer(self, rows, cols).unwrap();
        let ids: Vec<u32> = (0..rows as u32).collect();
        self.embed(&table, &ids, 1.0, &mut out).unwrap();
        out
    }
}

impl Load<'_> for CudaBackend {
    fn load(&self, values: &[f32], rows: usize, cols: usize) -> Self::Buffer {
        let mut out = Backend::buffer(self, rows, cols).unwrap();
        self.write(&mut out, values).unwrap();
        out
    }
}

fn read<'w, B: Backend<'w>>(b: &B, x: &B::Buffer, n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    b.read(x, &mut out).unwrap();
    out
}

/// `matmul`, `matmul_many` and `matmul_add` of `n` rows of `x` with the matrices `ws` (each of
/// `rows[m]` rows, with their biases): every output, then the residual.
fn products<'w, B: Load<'w>>(
    b: &B,
    ws: &[(TensorView<'w>, TensorView<'w>)],
    x: &[f32],
    n: usize,
    residual: &[f32],
) -> Vec<Vec<f32>> {
    let cols = x.len() / n;
    let ms: Vec<B::Matrix> = ws
        .iter()
        .map(|(w, bias)| b.matrix(w, Some(bias)).unwrap())
        .collect();
    let rows: Vec<usize> = ws.iter().map(|(w, _)| w.n_rows() as usize).collect();
    let xb = b.load(x, n, cols);
    let mut prepared = b.prepared(32, cols).unwrap();
    b.prepare(&xb, &mut prepared).unwrap();
    let mut results = Vec::new();
    let mut outs: Vec<B::Buffer> = rows.iter().map(|&r| b.buffer(n, r).unwrap()).collect();
    b.matmul(&ms[0], &prepared, &mut outs[0]).unwrap();
    results.push(read(b, &outs[0], n * rows[0]));
    let refs: Vec<&B::Matrix> = ms.iter().collect();
    let mut out_refs: Vec<&mut B::Buffer> = outs.iter_mut().collect();
    b.matmul_many(&refs, &prepared, &mut out_refs).unwrap();
    for (o, &r) in outs.iter().zip(&rows) {
        results.push(read(b, o, n * r));
    }
    let mut res = b.load(residual, n, rows[0]);
    b.matmul_add(&ms[0], &prepared, &mut outs[0], &mut res)
        .unwrap();
    results.push(read(b, &outs[0], n * rows[0]));
    results.push(read(b, &res, n * rows[0]));
    results
}

#[test]
fn products_add_the_matrix_bias_at_decode_and_prompt_sizes() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(1);
    let cols = 256;
    // Query, key and value widths of a Qwen2 layer, cut down; rows that leave a block of warps
    // partly empty.
    let rows = [96usize, 35, 35];
    for ty in [
        WeightType::Q4_0,
        WeightType::Q8_0,
        WeightType::Q4K,
        WeightType::Q6K,
        WeightType::F32,
        WeightType::F16,
        WeightType::Bf16,
        WeightType::Q5_1,
        WeightType::Q2K,
        WeightType::Q3K,
        WeightType::Q5K,
        WeightType::Iq4Nl,
        WeightType::Iq4Xs,
    ] {
        let data: Vec<(Vec<u8>, Vec<u8>)> = rows
            .iter()
            .map(|&r| {
                let w = random_weights(&mut rng, ty, r, cols);
                (w, f32_bytes(&rng.vec(r, 2.0)))
            })
            .collect();
        let ws: Vec<(TensorView<'_>, TensorView<'_>)> = data
            .iter()
            .zip(&rows)
            .map(|((w, bias), &r)| {
                (
                    view("w", ty.to_ggml(), &[cols, r], w),
                    view("b", GgmlType::F32, &[r], bias),
                )
            })
            .collect();
        // 1 and 3 rows take the mat-vec kernels, 20 the tensor cores.
        for n in [1usize, 3, 20] {
            let x = rng.vec(n * cols, 1.0);
            let residual = rng.vec(n * rows[0], 1.0);
            let want = products(&c, &ws, &x, n, &residual);
            let got = products(&g, &ws, &x, n, &residual);
            let what = ["matmul", "matmul_many q", "matmul_many k", "matmul_many v"];
            let what = what
                .iter()
                .chain(&["matmul_add output", "matmul_add residual"]);
            for ((w, g), name) in want.iter().zip(&got).zip(what) {
                let e = nerr(g, w);
                assert!(e < PRODUCT_TOL, "{ty:?} {name}, {n} rows: error {e}");
            }
        }
    }
}

/// A product with an f32 matrix after each way of preparing its input: float weights take
/// the f32 values the preparation kept, so the GPU equals the exact CPU product.
fn float_products<'w, B: Load<'w>>(
    b: &B,
    w: &TensorView<'w>,
    norm: &TensorView<'w>,
    x: &[f32],
    y: &[f32],
    n: usize,
) -> Vec<Vec<f32>> {
    let cols = x.len() / n;
    let m = b.matrix(w, None).unwrap();
    let rows = w.n_rows() as usize;
    let norm = b.vector(norm).unwrap();
    let xb = b.load(x, n, cols);
    let mut p = b.prepared(n, cols).unwrap();
    let mut out = b.buffer(n, rows).unwrap();
    let mut results = Vec::new();
    b.prepare(&xb, &mut p).unwrap();
    b.matmul(&m, &p, &mut out).unwrap();
    results.push(read(b, &out, n * rows));
    let mut xn = b.buffer(n, cols).unwrap();
    b.rms_norm_prepare(&xb, &norm, 1e-6, &mut xn, &mut p)
        .unwrap();
    b.matmul(&m, &p, &mut out).unwrap();
    results.push(read(b, &out, n * rows));
    let mut gate = b.load(x, n, cols);
    let up = b.load(y, n, cols);
    b.glu_prepare(&mut gate, &up, Glu::Silu, &mut p).unwrap();
    b.matmul(&m, &p, &mut out).unwrap();
    results.push(read(b, &out, n * rows));
    results
}

#[test]
fn float_weights_take_the_f32_activations_on_every_preparation() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(2);
    let (rows, cols) = (60, 512);
    let w = random_weights(&mut rng, WeightType::F32, rows, cols);
    let wv = view("router", GgmlType::F32, &[cols, rows], &w);
    let norm = f32_bytes(&rng.vec(cols, 1.0));
    let nv = view("norm", GgmlType::F32, &[cols], &norm);
    for n in [1usize, 4] {
        let x = rng.vec(n * cols, 3.0);
        let y = rng.vec(n * cols, 1.0);
        let want = float_products(&c, &wv, &nv, &x, &y, n);
        let got = float_products(&g, &wv, &nv, &x, &y, n);
        for ((w, g), what) in
            want.iter()
                .zip(&got)
                .zip(["prepare", "rms_norm_prepare", "glu_prepare"])
        {
            let e = nerr(g, w);
            assert!(e < 1e-5, "{what}, {n} rows: error {e}");
        }
    }
}

/// `rope` of `x` and `rope_qk` of `x` and `k` at `positions`.
#[allow(clippy::too_many_arguments)]
fn rotated<'w, B: Load<'w>>(
    b: &B,
    x: &[f32],
    k: &[f32],
    head_dim: usize,
    positions: &[u32],
    rope: &Rope,
    factors: Option<&TensorView<'w>>,
) -> Vec<Vec<f32>> {
    let n = positions.len();
    let (qc, kc) = (x.len() / n, k.len() / n);
    let factors = factors.map(|f| b.vector(f).unwrap());
    let mut xb = b.load(x, n, qc);
    b.rope(&mut xb, head_dim, positions, rope, factors.as_ref())
        .unwrap();
    let mut qb = b.load(x, n, qc);
    let mut kb = b.load(k, n, kc);
    b.rope_qk(
        &mut qb,
        &mut kb,
        head_dim,
        positions,
        rope,
        factors.as_ref(),
    )
    .unwrap();
    vec![
        read(b, &xb, x.len()),
        read(b, &qb, x.len()),
        read(b, &kb, k.len()),
    ]
}

#[test]
fn rope_with_factors_and_yarn_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(3);
    let head_dim = 64;
    let yarn = |rope: Rope| Rope {
        freq_scale: 0.25,
        ext_factor: 1.0,
        corr_dims: [5.0, 17.5],
        mscale: 1.1386,
        ..rope
    };
    let cases = [
        (
            "plain halves",
            Rope::plain(10_000.0, 64, RopeStyle::Halves),
            false,
        ),
        (
            "factors adjacent",
            Rope::plain(500_000.0, 64, RopeStyle::Adjacent),
            true,
        ),
        (
            "factors, 32 of 64 rotated",
            Rope::plain(10_000.0, 32, RopeStyle::Halves),
            true,
        ),
        (
            "yarn halves",
            yarn(Rope::plain(1_000_000.0, 64, RopeStyle::Halves)),
            false,
        ),
        (
            "yarn and factors adjacent",
            yarn(Rope::plain(10_000.0, 64, RopeStyle::Adjacent)),
            true,
        ),
    ];
    for (what, rope, with_factors) in cases {
        let ff: Vec<f32> = (0..rope.n_rot / 2)
            .map(|i| 1.0 + 7.0 * i as f32 / (rope.n_rot / 2) as f32 + 0.1 * rng.f32())
            .collect();
        let ff_bytes = f32_bytes(&ff);
        let fv = view("rope_freqs", GgmlType::F32, &[ff.len()], &ff_bytes);
        let factors = with_factors.then_some(&fv);
        for n in [1usize, 13] {
            let positions: Vec<u32> = (0..n).map(|_| rng.below(2048) as u32).collect();
            let x = rng.vec(n * 4 * head_dim, 1.0);
            let k = rng.vec(n * 2 * head_dim, 1.0);
            let want = rotated(&c, &x, &k, head_dim, &positions, &rope, factors);
            let got = rotated(&g, &x, &k, head_dim, &positions, &rope, factors);
            for ((w, g), op) in want
                .iter()
                .zip(&got)
                .zip(["rope", "rope_qk q", "rope_qk k"])
            {
                let e = nerr(g, w);
                assert!(e < 1e-4, "{what}, {n} rows, {op}: error {e}");
            }
        }
    }
}

/// `qk_norm_rope` of queries `q` and keys `k` at `positions`: the normalised, rotated queries
/// and keys.
#[allow(clippy::too_many_arguments)]
fn normed_rotated<'w, B: Load<'w>>(
    b: &B,
    q: &[f32],
    k: &[f32],
    norms: (&TensorView<'w>, &TensorView<'w>),
    head_dim: usize,
    positions: &[u32],
    rope: &Rope,
    factors: Option<&TensorView<'w>>,
) -> Vec<Vec<f32>> {
    let n = positions.len();
    let factors = factors.map(|f| b.vector(f).unwrap());
    let (q_norm, k_norm) = (b.vector(norms.0).unwrap(), b.vector(norms.1).unwrap());
    let mut qb = b.load(q, n, q.len() / n);
    let mut kb = b.load(k, n, k.len() / n);
    b.qk_norm_rope(
        &mut qb,
        &mut kb,
        &q_norm,
        &k_norm,
        1e-6,
        head_dim,
        positions,
        rope,
        factors.as_ref(),
    )
    .unwrap();
    vec![read(b, &qb, q.len()), read(b, &kb, k.len())]
}

/// The fused per-head q/k norm and rotation (Qwen 3) against the CPU's norm then rotation, at
/// decode and prompt sizes, with heads of 64 and 128 (partly rotated, with frequency factors).
#[test]
fn qk_norm_rope_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(11);
    let cases = [
        (128, Rope::plain(1_000_000.0, 128, RopeStyle::Halves), false),
        (64, Rope::plain(10_000.0, 64, RopeStyle::Adjacent), false),
        (128, Rope::plain(500_000.0, 64, RopeStyle::Halves), true),
    ];
    for (head_dim, rope, with_factors) in cases {
        let qn = rng
            .vec(head_dim, 0.5)
            .iter()
            .map(|v| v + 1.0)
            .collect::<Vec<_>>();
        let kn = rng
            .vec(head_dim, 0.5)
            .iter()
            .map(|v| v + 1.0)
            .collect::<Vec<_>>();
        let ff: Vec<f32> = (0..rope.n_rot / 2).map(|i| 1.0 + 0.5 * i as f32).collect();
        let (qn_b, kn_b, ff_b) = (f32_bytes(&qn), f32_bytes(&kn), f32_bytes(&ff));
        let qv = view("attn_q_norm", GgmlType::F32, &[head_dim], &qn_b);
        let kv = view("attn_k_norm", GgmlType::F32, &[head_dim], &kn_b);
        let fv = view("rope_freqs", GgmlType::F32, &[ff.len()], &ff_b);
        let factors = with_factors.then_some(&fv);
        for n in [1usize, 13] {
            let positions: Vec<u32> = (0..n).map(|_| rng.below(4096) as u32).collect();
            // Heads of very different sizes, so a norm applied to the wrong rows shows.
            let q: Vec<f32> = (0..n * 4 * head_dim)
                .map(|i| rng.f32() * (1.0 + 9.0 * ((i / head_dim) % 3) as f32))
                .collect();
            let k = rng.vec(n * 2 * head_dim, 3.0);
            let want = normed_rotated(&c, &q, &k, (&qv, &kv), head_dim, &positions, &rope, factors);
            let got = normed_rotated(&g, &q, &k, (&qv, &kv), head_dim, &positions, &rope, factors);
            for ((w, g), what) in want.iter().zip(&got).zip(["q", "k"]) {
                let e = nerr(g, w);
                assert!(e < 1e-4, "head_dim {head_dim}, {n} rows, {what}: error {e}");
            }
        }
    }
}

/// Runs the batches of `inputs` (queries, keys, values) of one sequence through
/// `attention_prepare`, each followed by a product with `wo` of the prepared output: the
/// attention output and the product of every batch.
fn attention_trace<'w, B: Load<'w>>(
    b: &B,
    p: &AttentionParams,
    wo: &TensorView<'w>,
    inputs: &[(Vec<f32>, Vec<f32>, Vec<f32>)],
) -> Vec<Vec<f32>> {
    let (q_dim, kv_dim) = (p.n_head * p.head_dim, p.n_head_kv * p.head_dim);
    let layout = KvLayout {
        n_layer: 1,
        n_head_kv: p.n_head_kv,
        head_dim: p.head_dim,
        n_ctx: 256,
        n_seq: 1,
    };
    let mut kv = b.kv_cache(layout).unwrap();
    let wo = b.matrix(wo, None).unwrap();
    let mut results = Vec::new();
    let mut pos = 0u32;
    for (q, k, v) in inputs {
        let n = q.len() / q_dim;
        let tokens = vec![0u32; n];
        let positions: Vec<u32> = (pos..pos + n as u32).collect();
        let batch = Batch {
            tokens: &tokens,
            positions: &positions,
            seqs: &vec![0; n],
            outputs: &[n - 1],
        };
        b.kv_reserve(&mut kv, &batch).unwrap();
        let (qb, kb, vb) = (
            b.load(q, n, q_dim),
            b.load(k, n, kv_dim),
            b.load(v, n, kv_dim),
        );
        let mut out = b.buffer(n, q_dim).unwrap();
        let mut prepared = b.prepared(n, q_dim).unwrap();
        b.attention_prepare(
            &mut kv,
            0,
            &batch,
            &qb,
            &kb,
            &vb,
            p,
            &mut out,
            &mut prepared,
        )
        .unwrap();
        results.push(read(b, &out, n * q_dim));
        let mut proj = b.buffer(n, WO_ROWS).unwrap();
        b.matmul(&wo, &prepared, &mut proj).unwrap();
        results.push(read(b, &proj, n * WO_ROWS));
        pos += n as u32;
    }
    results
}

/// Outputs of the projection that follows attention in its test.
const WO_ROWS: usize = 40;

#[test]
fn attention_with_softcap_matches_cpu_at_decode_and_prompt_sizes() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(4);
    for (head_dim, window, softcap) in [
        (64usize, None, Some(0.5f32)),
        (64, Some(16), Some(0.5)),
        (128, Some(9), None),
        (256, None, Some(2.0)),
    ] {
        let p = AttentionParams {
            n_head: 4,
            n_head_kv: 2,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
            window,
            softcap,
        };
        let (q_dim, kv_dim) = (p.n_head * head_dim, p.n_head_kv * head_dim);
        let w = random_weights(&mut rng, WeightType::F32, WO_ROWS, q_dim);
        let wo = view("wo", GgmlType::F32, &[q_dim, WO_ROWS], &w);
        // A prompt of 40 (one query per block of the GPU), then decode steps of 1 and 3 tokens
        // (each query's positions split over blocks).
        let inputs: Vec<_> = [40usize, 1, 1, 3]
            .iter()
            .map(|&n| {
                (
                    rng.vec(n * q_dim, 2.0),
                    rng.vec(n * kv_dim, 2.0),
                    rng.vec(n * kv_dim, 1.0),
                )
            })
            .collect();
        let want = attention_trace(&c, &p, &wo, &inputs);
        let got = attention_trace(&g, &p, &wo, &inputs);
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            // Keys and values are f16 on the GPU.
            let e = nerr(g, w);
            let what = if i % 2 == 0 {
                "attention"
            } else {
                "output projection"
            };
            assert!(
                e < 5e-3,
                "d{head_dim} window {window:?} softcap {softcap:?}, batch {}: {what} error {e}",
                i / 2
            );
        }
    }
}

fn capped<'w, B: Load<'w>>(b: &B, x: &[f32], rows: usize, cap: f32) -> Vec<f32> {
    let mut buf = b.load(x, rows, x.len() / rows);
    b.softcap(&mut buf, cap).unwrap();
    read(b, &buf, x.len())
}

#[test]
fn softcap_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(5);
    let rows = 3;
    let x = rng.vec(rows * 1000, 80.0);
    let want = capped(&c, &x, rows, 30.0);
    let got = capped(&g, &x, rows, 30.0);
    let e = nerr(&got, &want);
    assert!(e < 1e-6, "softcap: error {e}");
    assert!(got.iter().all(|v| v.abs() <= 30.0));
}

fn routed<'w, B: Load<'w>>(b: &B, logits: &[f32], rows: usize, r: &MoeRouting) -> Vec<f32> {
    let n_expert = logits.len() / rows;
    let lb = b.load(logits, rows, n_expert);
    let mut choice = b.buffer(rows, 2 * r.n_used).unwrap();
    b.moe_route(&lb, r, &mut choice).unwrap();
    read(b, &choice, rows * 2 * r.n_used)
}

#[test]
fn moe_route_picks_the_cpu_experts_and_weights() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(6);
    for (n_expert, n_used, norm_weights, weights_scale) in [
        (4usize, 2usize, true, 1.0f32),
        (8, 2, false, 1.0),
        (60, 4, true, 2.5),
        (128, 8, true, 1.0),
        (256, 8, false, 16.0),
        (3, 1, false, 1.0),
    ] {
        let r = MoeRouting {
            n_used,
            norm_weights,
            weights_scale,
        };
        for rows in [1usize, 5, 40] {
            let mut logits = rng.vec(rows * n_expert, 3.0);
            // Ties: the lower index goes first.
            let row = &mut logits[..n_expert];
            row[n_expert - 1] = 9.0;
            row[n_expert / 2] = 9.0;
            let want = routed(&c, &logits, rows, &r);
            let got = routed(&g, &logits, rows, &r);
            for (t, (w, g)) in want
                .chunks_exact(2 * n_used)
                .zip(got.chunks_exact(2 * n_used))
                .enumerate()
            {
                let what = format!("{n_used} of {n_expert}, row {t} of {rows}");
                assert_eq!(&g[..n_used], &w[..n_used], "{what}: experts");
                for (a, b) in g[n_used..].iter().zip(&w[n_used..]) {
                    assert!(
                        (a - b).abs() <= 1e-6 * weights_scale,
                        "{what}: weights {g:?} vs {w:?}"
                    );
                }
            }
            assert_eq!(
                want[0] as usize,
                n_expert / 2,
                "tie broken towards the lower index"
            );
        }
    }
}

/// The chosen experts' products: `x_rows` rows of `x` (one per token or one per slot).
fn expert_products<'w, B: Load<'w>>(
    b: &B,
    experts: &TensorView<'w>,
    n_expert: usize,
    choice: &[f32],
    k: usize,
    x: &[f32],
    x_rows: usize,
) -> Vec<f32> {
    let n = choice.len() / (2 * k);
    let cols = x.len() / x_rows;
    let rows = experts.n_rows() as usize / n_expert;
    let m = b.matrix(experts, None).unwrap();
    let cb = b.load(choice, n, 2 * k);
    let xb = b.load(x, x_rows, cols);
    let mut p = b.prepared(x_rows, cols).unwrap();
    b.prepare(&xb, &mut p).unwrap();
    let mut out = b.buffer(n * k, rows).unwrap();
    b.matmul_experts(&m, n_expert, &cb, &p, &mut out).unwrap();
    read(b, &out, n * k * rows)
}

#[test]
fn matmul_experts_matches_cpu_for_every_weight_type_and_batch() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(7);
    let (n_expert, k, rows, cols) = (6usize, 2usize, 72usize, 256usize);
    for ty in WeightType::ALL {
        let mut w = random_weights(&mut rng, ty, n_expert * rows, cols);
        // No token routes to the last expert, whose weights are NaN: a product that read them
        // would show.
        poison_rows(ty, &mut w, cols, (n_expert - 1) * rows..n_expert * rows);
        let wv = view("ffn_up_exps", ty.to_ggml(), &[cols, n_expert * rows], &w);
        // 1 and 4 tokens take the device-routed mat-vec (4 tokens × 2 slots = 8 rows per slot
        // too); 16 tokens the tensor cores.
        for n in [1usize, 4, 16] {
            let mut choice = vec![0.0f32; n * 2 * k];
            for (t, c) in choice.chunks_exact_mut(2 * k).enumerate() {
                let first = (t * 7 + 2) % (n_expert - 1);
                c[0] = first as f32;
                c[1] = ((first + 1 + t % 3) % (n_expert - 1)) as f32;
                c[2] = 0.25 + 0.5 * rng.f32().abs();
                c[3] = 1.0 - c[2];
            }
            for per_slot in [false, true] {
                let x_rows = if per_slot { n * k } else { n };
                let x = rng.vec(x_rows * cols, 1.0);
                let want = expert_products(&c, &wv, n_expert, &choice, k, &x, x_rows);
                let got = expert_products(&g, &wv, n_expert, &choice, k, &x, x_rows);
                let e = nerr(&got, &want);
                assert!(
                    e < PRODUCT_TOL,
                    "{ty:?}, {n} tokens, x per {}: error {e}",
                    if per_slot { "slot" } else { "token" }
                );
            }
        }
    }
}

fn combined<'w, B: Load<'w>>(b: &B, choice: &[f32], k: usize, y: &[f32], d: usize) -> Vec<f32> {
    let n = choice.len() / (2 * k);
    let cb = b.load(choice, n, 2 * k);
    let yb = b.load(y, n * k, d);
    let mut out = b.load(&vec![f32::NAN; n * d], n, d);
    b.moe_combine(&cb, &yb, &mut out).unwrap();
    read(b, &out, n * d)
}

#[test]
fn moe_combine_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(8);
    let d = 200;
    for (n, k) in [(1usize, 2usize), (5, 3), (33, 8)] {
        let choice: Vec<f32> = (0..n)
            .flat_map(|_| {
                let mut row: Vec<f32> = (0..k).map(|j| j as f32).collect();
                row.extend((0..k).map(|_| rng.f32().abs()));
                row
            })
            .collect();
        let y = rng.vec(n * k * d, 2.0);
        let want = combined(&c, &choice, k, &y, d);
        let got = combined(&g, &choice, k, &y, d);
        let e = nerr(&got, &want);
        assert!(e < 1e-6, "{n} tokens of {k} experts: error {e}");
    }
}

#[test]
fn kv_layout_is_the_one_the_cache_was_made_with() {
    let Some(g) = gpu() else { return };
    let layout = KvLayout {
        n_layer: 3,
        n_head_kv: 2,
        head_dim: 128,
        n_ctx: 100,
        n_seq: 2,
    };
    let kv = g.kv_cache(layout).unwrap();
    assert_eq!(g.kv_layout(&kv), layout);
}

#[test]
fn a_kv_cache_larger_than_free_device_memory_is_an_error_naming_its_size() {
    let Some(g) = gpu() else { return };
    // 2^30 positions × 32 layers × 8 heads × 128 × (keys, values) × 2 bytes: 16 PiB.
    let layout = KvLayout {
        n_layer: 32,
        n_head_kv: 8,
        head_dim: 128,
        n_ctx: 1 << 30,
        n_seq: 1,
    };
    match g.kv_cache(layout) {
        Err(TransformerError::InsufficientMemory { needed_mib, .. }) => {
            assert!(needed_mib >= ((1u64 << 30) * 32 * 8 * 128 * 2 * 2) >> 20);
        }
        Err(e) => panic!("expected a memory error, got {e}"),
        Ok(_) => panic!("a 16 PiB cache was made"),
    }
}
