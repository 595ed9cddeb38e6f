//! Every CUDA kernel against a CPU reference on random inputs, compared by the normalized error
//! ‖out − ref‖ / ‖ref‖, plus the matvec bandwidth on Llama-3-8B shapes.
//!
//! Without a CUDA driver or GPU each test prints a note and returns, unless
//! `FERROLM_REQUIRE_GPU=1` (set by `cargo xtask test-gpu`), which makes that a failure.
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use cudarc::driver::CudaSlice;
use ferrolm_transformer::backend::argmax_row;
use ferrolm_transformer::cuda::{
    AttentionParams, AttentionWorkspace, CudaDevice, CudaError, PagedKvLayer, Q8Activations,
    QuantMatrix, QueryBatch, RopeParams, WeightType, compile_ptx, time_copy, time_matvec, time_op,
};
use half::{bf16, f16};

type Reference = Box<dyn Fn(f32, f32) -> f64>;

fn require_gpu() -> bool {
    std::env::var("FERROLM_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// The shared device, or `None` (after a note) on a machine without a GPU.
fn device() -> Option<&'static CudaDevice> {
    static DEV: OnceLock<Result<CudaDevice, String>> = OnceLock::new();
    let dev = DEV.get_or_init(|| match CudaDevice::new() {
        Ok(d) => {
            eprintln!("CUDA device: {} ({})", d.name(), d.arch());
            Ok(d)
        }
        Err(e) if e.is_no_gpu() && !require_gpu() => Err(e.to_string()),
        Err(e) => panic!("CUDA device failed: {e}"),
    });
    match dev {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("note: no CUDA GPU here ({e}); GPU test skipped");
            None
        }
    }
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
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

/// ‖out − ref‖ / ‖ref‖ in f64; NaN anywhere gives infinity.
fn nerr(out: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len());
    let mut num = 0.0;
    let mut den = 0.0;
    for (&o, &r) in out.iter().zip(reference) {
        if !o.is_finite() {
            return f64::INFINITY;
        }
        num += (f64::from(o) - r).powi(2);
        den += r * r;
    }
    assert!(den > 0.0, "reference is all zeros");
    (num / den).sqrt()
}

fn upload<T: cudarc::driver::DeviceRepr>(dev: &CudaDevice, v: &[T]) -> CudaSlice<T> {
    dev.stream().clone_htod(v).unwrap()
}

fn download<T: cudarc::driver::DeviceRepr + Default + Clone>(
    dev: &CudaDevice,
    v: &CudaSlice<T>,
) -> Vec<T> {
    dev.stream().clone_dtoh(v).unwrap()
}

/// A device buffer filled with NaN so that any element a kernel fails to write shows.
fn poisoned(dev: &CudaDevice, n: usize) -> CudaSlice<f32> {
    upload(dev, &vec![f32::NAN; n])
}

/// Random blocks of `ty` whose f16 scale fields hold small finite values (for F32, F16 and
/// BF16, random values in [-0.5, 0.5)); the sub-block scales and minimums stay random bits, as
/// every bit pattern of theirs is a valid small integer.
fn random_weights(rng: &mut Rng, ty: WeightType, rows: usize, cols: usize) -> Vec<u8> {
    match ty {
        WeightType::F32 => {
            return (0..rows * cols)
                .flat_map(|_| (rng.f32() * 0.5).to_le_bytes())
                .collect();
        }
        WeightType::F16 => {
            return (0..rows * cols)
                .flat_map(|_| f16::from_f32(rng.f32() * 0.5).to_le_bytes())
                .collect();
        }
        WeightType::Bf16 => {
            return (0..rows * cols)
                .flat_map(|_| bf16::from_f32(rng.f32() * 0.5).to_le_bytes())
                .collect();
        }
        _ => {}
    }
    let bs = ty.block_bytes();
    let mut bytes = rng.bytes(rows * ty.row_bytes(cols).unwrap());
    let scale_offsets: &[usize] = match ty {
        WeightType::F32 | WeightType::F16 | WeightType::Bf16 => &[],
        WeightType::Q4_0
        | WeightType::Q5_0
        | WeightType::Q8_0
        | WeightType::Iq4Nl
        | WeightType::Iq4Xs => &[0],
        WeightType::Q4_1 | WeightType::Q5_1 | WeightType::Q4K | WeightType::Q5K => &[0, 2],
        WeightType::Q2K => &[80, 82],
        WeightType::Q3K => &[108],
        WeightType::Q6K => &[208],
    };
    for block in bytes.chunks_exact_mut(bs) {
        for &o in scale_offsets {
            let v = f16::from_f32(rng.f32() * 0.02);
            block[o..o + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    bytes
}

fn dequantize(ty: WeightType, bytes: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    let rb = ty.row_bytes(cols).unwrap();
    let mut out = vec![0.0f32; rows * cols];
    for (r, o) in out.chunks_exact_mut(cols).enumerate() {
        ferrolm_quant::dequantize_row(ty.to_ggml(), &bytes[r * rb..(r + 1) * rb], o).unwrap();
    }
    out
}

/// The int8 quantization of activations, as the kernel defines it.
fn quantize_q8_reference(x: &[f32]) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(x.len());
    let mut ds = Vec::with_capacity(x.len() / 16);
    for g in x.chunks_exact(32) {
        let amax = g.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let mut sum = 0i32;
        for &v in g {
            let qi = if amax == 0.0 {
                0
            } else {
                (v / d).round() as i32
            };
            sum += qi;
            q.push(qi as i8);
        }
        ds.push(d);
        ds.push(d * sum as f32);
    }
    (q, ds)
}

fn matvec_reference(w: &[f32], x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..rows)
        .map(|r| {
            w[r * cols..(r + 1) * cols]
                .iter()
                .zip(x)
                .map(|(&a, &b)| f64::from(a) * b)
                .sum()
        })
        .collect()
}

#[test]
fn missing_gpu_is_a_typed_error_not_a_panic() {
    match CudaDevice::new() {
        Ok(dev) => {
            assert!(dev.arch().starts_with("sm_"));
            let (free, total) = dev.memory_info().unwrap();
            assert!(free > 0 && free <= total);
        }
        Err(e) => {
            assert!(e.is_no_gpu(), "unexpected error without a GPU: {e}");
            assert!(!require_gpu(), "FERROLM_REQUIRE_GPU=1 but: {e}");
            assert!(matches!(
                e,
                CudaError::DriverNotFound | CudaError::NoDevice { .. }
            ));
        }
    }
}

#[test]
fn every_module_compiles_for_hopper_with_nvrtc() {
    for module in ferrolm_kernels::MODULES {
        match compile_ptx(module, "sm_90") {
            Ok(ptx) => {
                for k in module.kernels {
                    assert!(
                        ptx.contains(&format!(".entry {k}(")),
                        "{k} missing from the PTX of {}",
                        module.name
                    );
                }
            }
            Err(CudaError::NvrtcNotFound) if !require_gpu() => {
                eprintln!("note: NVRTC not found; compile test skipped");
                return;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn kernel_cache_is_reused() {
    let Some(_) = device() else { return };
    let dir = std::env::temp_dir().join(format!("ferrolm-kcache-{}", std::process::id()));
    let m = ferrolm_kernels::module("rmsnorm").unwrap();
    let a = ferrolm_transformer::cuda::module_ptx(m, "sm_90", Some(&dir)).unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 1);
    let path = files[0].as_ref().unwrap().path();
    assert!(path.to_string_lossy().contains("sm_90"));
    std::fs::write(&path, format!("{a}// cached")).unwrap();
    let b = ferrolm_transformer::cuda::module_ptx(m, "sm_90", Some(&dir)).unwrap();
    assert!(b.ends_with("// cached"), "the cached file was not used");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn quantize_q8_matches_reference() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(1);
    let n = 4096 + 96;
    let x = rng.vec(n);
    let mut act = Q8Activations::new(dev, n).unwrap();
    dev.quantize_q8(&upload(dev, &x), &mut act).unwrap();
    let (q, ds) = act.download(dev).unwrap();
    let (rq, rds) = quantize_q8_reference(&x);
    let mismatches = q.iter().zip(&rq).filter(|(a, b)| a != b).count();
    assert!(mismatches <= n / 1000, "{mismatches} int8 values differ");
    let e = nerr(&ds, &rds.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
    assert!(e < 1e-3, "scales: {e}");
}

fn check_matvec(dev: &CudaDevice, ty: WeightType, rows: usize, cols: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let bytes = random_weights(&mut rng, ty, rows, cols);
    let w = QuantMatrix::upload(dev, ty, rows, cols, &bytes).unwrap();
    let x = rng.vec(cols);
    let mut act = Q8Activations::new(dev, cols).unwrap();
    dev.quantize_q8(&upload(dev, &x), &mut act).unwrap();
    let mut y = poisoned(dev, rows);
    dev.matvec(&w, &act, &mut y, false).unwrap();
    let out = download(dev, &y);

    let wf = dequantize(ty, &bytes, rows, cols);
    // Exact path: the same int8 activations the kernel used (float weights take the f32
    // activations instead), so only summation order differs.
    let (q, ds) = act.download(dev).unwrap();
    let xq: Vec<f64> = if ty.is_float() {
        act.download_values(dev)
            .unwrap()
            .iter()
            .map(|&v| f64::from(v))
            .collect()
    } else {
        q.iter()
            .enumerate()
            .map(|(i, &v)| f64::from(v) * f64::from(ds[i / 32 * 2]))
            .collect()
    };
    let exact = matvec_reference(&wf, &xq, rows, cols);
    let e = nerr(&out, &exact);
    assert!(
        e < 1e-5,
        "{ty:?} {rows}x{cols}: error {e} against the int8 reference"
    );
    // Against the unquantized activations: the int8 rounding costs about 0.5%.
    let xf: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let full = matvec_reference(&wf, &xf, rows, cols);
    let e = nerr(&out, &full);
    assert!(
        e < 2e-2,
        "{ty:?} {rows}x{cols}: error {e} against the f32 reference"
    );

    // y += W x
    let r = rng.vec(rows);
    let mut y2 = upload(dev, &r);
    dev.matvec(&w, &act, &mut y2, true).unwrap();
    let out2 = download(dev, &y2);
    let want: Vec<f64> = exact
        .iter()
        .zip(&r)
        .map(|(a, &b)| a + f64::from(b))
        .collect();
    let e = nerr(&out2, &want);
    assert!(e < 1e-5, "{ty:?} accumulate: {e}");
}

#[test]
fn matvec_matches_reference_for_every_type_and_awkward_shapes() {
    let Some(dev) = device() else { return };
    // Shapes: one partial window, several windows with a partial last one, rows that do not
    // fill the last block of warps, rows whose byte length is not a multiple of 16, and more
    // rows than the GPU runs at once.
    for (i, ty) in WeightType::ALL.into_iter().enumerate() {
        let seed = 100 + i as u64;
        if ty.block_elems() == 32 {
            check_matvec(dev, ty, 1003, 576, seed);
            check_matvec(dev, ty, 130, 32 * (64 + 5), seed + 10);
            check_matvec(dev, ty, 64, 640, seed + 20);
        } else {
            check_matvec(dev, ty, 1003, 768, seed);
            check_matvec(dev, ty, 130, 256 * 19, seed + 10);
        }
        check_matvec(dev, ty, 256, 4096, seed + 30);
        // A grid of thousands of blocks, more than the GPU holds at once.
        check_matvec(dev, ty, 20_011, 512, seed + 40);
    }
}

#[test]
fn get_rows_and_f16_dequantization_match_reference() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(7);
    for ty in WeightType::ALL {
        let (rows, cols) = (300, if ty.block_elems() == 32 { 576 } else { 768 });
        let bytes = random_weights(&mut rng, ty, rows, cols);
        let w = QuantMatrix::upload(dev, ty, rows, cols, &bytes).unwrap();
        let wf = dequantize(ty, &bytes, rows, cols);
        let ids: Vec<i32> = vec![5, 299, 0, 5, 123, 300, -1];
        let mut out = poisoned(dev, ids.len() * cols);
        dev.get_rows(&w, &upload(dev, &ids), ids.len(), 1.5, &mut out)
            .unwrap();
        let out = download(dev, &out);
        for (r, &id) in ids.iter().enumerate() {
            let got = &out[r * cols..(r + 1) * cols];
            if (0..rows as i32).contains(&id) {
                let want: Vec<f64> = wf[id as usize * cols..(id as usize + 1) * cols]
                    .iter()
                    .map(|&v| f64::from(v) * 1.5)
                    .collect();
                assert!(nerr(got, &want) < 1e-6, "{ty:?} row {id}");
            } else {
                assert!(
                    got.iter().all(|&v| v == 0.0),
                    "{ty:?}: id {id} outside the table must read as zeros"
                );
            }
        }
        let (row0, n) = (17, 200);
        let mut h = dev.stream().alloc_zeros::<u16>(n * cols).unwrap();
        dev.dequantize_rows_f16(&w, row0, n, &mut h).unwrap();
        let h: Vec<f32> = download(dev, &h)
            .into_iter()
            .map(|b| f16::from_bits(b).to_f32())
            .collect();
        let want: Vec<f64> = wf[row0 * cols..(row0 + n) * cols]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let e = nerr(&h, &want);
        assert!(e < 1e-3, "{ty:?} f16: {e}");
        assert!(
            dev.dequantize_rows_f16(
                &w,
                200,
                101,
                &mut dev.stream().alloc_zeros::<u16>(101 * cols).unwrap()
            )
            .is_err()
        );
    }
}

#[test]
fn rmsnorm_matches_reference() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(3);
    for (rows, n) in [(7usize, 576usize), (36, 64), (2, 4096)] {
        let x: Vec<f32> = rng.vec(rows * n).iter().map(|v| v * 3.0).collect();
        let w = rng.vec(n);
        let mut y = poisoned(dev, rows * n);
        dev.rmsnorm(&upload(dev, &x), &upload(dev, &w), &mut y, rows, n, 1e-6)
            .unwrap();
        let mut want = Vec::with_capacity(rows * n);
        for row in x.chunks_exact(n) {
            let ms = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n as f64;
            let r = 1.0 / (ms + 1e-6).sqrt();
            want.extend(
                row.iter()
                    .zip(&w)
                    .map(|(&v, &g)| f64::from(v) * r * f64::from(g)),
            );
        }
        let e = nerr(&download(dev, &y), &want);
        assert!(e < 1e-5, "rmsnorm {rows}x{n}: {e}");
    }
}

/// The rotation of pair `i` at position `p` in f64, as the CPU backend's `rope_angles` defines
/// it: (cos, sin).
fn rope_reference(p: i32, i: usize, params: &RopeParams, factor: Option<f32>) -> (f64, f64) {
    let extrap = f64::from(p) * f64::from(params.base).powf(-2.0 * i as f64 / params.n_rot as f64)
        / factor.map_or(1.0, f64::from);
    let interp = f64::from(params.freq_scale) * extrap;
    let theta = if params.ext_factor == 0.0 {
        interp
    } else {
        let [lo, hi] = params.corr_dims.map(f64::from);
        let y = (i as f64 - lo) / (hi - lo).max(0.001);
        let mix = (1.0 - y.clamp(0.0, 1.0)) * f64::from(params.ext_factor);
        interp * (1.0 - mix) + extrap * mix
    };
    let m = f64::from(params.mscale);
    (theta.cos() * m, theta.sin() * m)
}

#[test]
fn rope_matches_reference_in_both_layouts_with_factors_and_yarn() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(4);
    let (n_tok, n_heads, head_dim) = (5, 6, 128);
    for (neox, n_rot, factors, yarn) in [
        (false, 128, false, false),
        (true, 128, false, false),
        (true, 64, true, false),
        (false, 128, true, false),
        (true, 128, false, true),
        (false, 96, true, true),
    ] {
        let x = rng.vec(n_tok * n_heads * head_dim);
        let pos: Vec<i32> = (0..n_tok).map(|_| rng.below(4096) as i32).collect();
        let ff: Vec<f32> = (0..n_rot / 2)
            .map(|_| 1.0 + rng.f32().abs() * 7.0)
            .collect();
        let mut p = RopeParams {
            n_rot,
            ..RopeParams::plain(n_heads, head_dim, 500_000.0, neox)
        };
        if yarn {
            // Qwen2's YaRN by 4: the first pairs keep their angle, the last are interpolated.
            p.freq_scale = 0.25;
            p.ext_factor = 1.0;
            p.corr_dims = [9.0, 23.5];
            p.mscale = 1.1386;
        }
        let mut xd = upload(dev, &x);
        let ffd = upload(dev, &ff);
        let factors_arg: Option<&dyn cudarc::driver::DevicePtr<f32>> =
            if factors { Some(&ffd) } else { None };
        dev.rope(&mut xd, &upload(dev, &pos), factors_arg, n_tok, &p)
            .unwrap();
        let mut want: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        for (t, &ps) in pos.iter().enumerate() {
            for h in 0..n_heads {
                let base = (t * n_heads + h) * head_dim;
                for (i, &factor) in ff.iter().enumerate() {
                    let (c, sn) = rope_reference(ps, i, &p, factors.then_some(factor));
                    let (ia, ib) = if neox {
                        (i, i + n_rot / 2)
                    } else {
                        (2 * i, 2 * i + 1)
                    };
                    let (a, b) = (f64::from(x[base + ia]), f64::from(x[base + ib]));
                    want[base + ia] = a * c - b * sn;
                    want[base + ib] = a * sn + b * c;
                }
            }
        }
        let e = nerr(&download(dev, &xd), &want);
        assert!(
            e < 1e-4,
            "rope neox={neox} n_rot={n_rot} factors={factors} yarn={yarn}: {e}"
        );
    }
}

#[test]
fn elementwise_ops_match_reference() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(5);
    let n = 14336 + 7;
    let a: Vec<f32> = rng.vec(n).iter().map(|v| v * 4.0).collect();
    let b = rng.vec(n);
    let (da, db) = (upload(dev, &a), upload(dev, &b));
    let f = |v: f32| f64::from(v);
    let silu = |x: f64| x / (1.0 + (-x).exp());
    let gelu = |x: f64| {
        0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
    };
    let cases: [(&str, Reference); 4] = [
        ("add", Box::new(move |x, y| f(x) + f(y))),
        ("mul", Box::new(move |x, y| f(x) * f(y))),
        ("swiglu", Box::new(move |x, y| silu(f(x)) * f(y))),
        ("geglu", Box::new(move |x, y| gelu(f(x)) * f(y))),
    ];
    for (name, reference) in cases {
        let mut y = poisoned(dev, n);
        match name {
            "add" => dev.add(&da, &db, &mut y, n),
            "mul" => dev.mul(&da, &db, &mut y, n),
            "swiglu" => dev.swiglu(&da, &db, &mut y, n),
            _ => dev.geglu(&da, &db, &mut y, n),
        }
        .unwrap();
        let want: Vec<f64> = a.iter().zip(&b).map(|(&x, &y)| reference(x, y)).collect();
        let e = nerr(&download(dev, &y), &want);
        assert!(e < 1e-6, "{name}: {e}");
    }
    let mut y = upload(dev, &a);
    dev.add_assign(&mut y, &db, n).unwrap();
    let want: Vec<f64> = a.iter().zip(&b).map(|(&x, &y)| f(x) + f(y)).collect();
    assert!(nerr(&download(dev, &y), &want) < 1e-7);
    let mut y = poisoned(dev, n);
    dev.scale(&da, 0.125, &mut y, n).unwrap();
    let want: Vec<f64> = a.iter().map(|&x| f(x) * 0.125).collect();
    assert!(nerr(&download(dev, &y), &want) < 1e-7);
    assert!(matches!(
        dev.add(&da, &db, &mut poisoned(dev, n - 1), n),
        Err(CudaError::Shape { .. })
    ));
}

#[test]
fn argmax_finds_the_first_largest_value() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(6);
    let n = 262_144;
    let rows = 4;
    let mut x = rng.vec(rows * n);
    x[n + 77] = 5.0;
    x[n + 70_000] = 5.0; // tie: the lower index wins
    x[2 * n + n - 1] = 9.0;
    x[2 * n + 3] = f32::NAN;
    // Nothing selectable: -inf everywhere but one NaN.
    x[3 * n..].fill(f32::NEG_INFINITY);
    x[3 * n + 5] = f32::NAN;
    let mut out = upload(dev, &[-7i32; 4]);
    dev.argmax(&upload(dev, &x), rows, n, &mut out).unwrap();
    let got = download(dev, &out);
    let first = x[..n]
        .iter()
        .enumerate()
        .fold(
            (0, f32::MIN),
            |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
        )
        .0;
    assert_eq!(got, vec![first as i32, 77, n as i32 - 1, -1]);
    // The host's rule, which the CPU backend and the greedy sampler follow, agrees.
    let host: Vec<Option<u32>> = x.chunks_exact(n).map(argmax_row).collect();
    assert_eq!(
        host,
        vec![Some(first as u32), Some(77), Some(n as u32 - 1), None]
    );

    // Rows whose length is not a multiple of four (rows after the first are not 16-byte
    // aligned, so they take the scalar loop), with ties and the maximum in the last element.
    for n in [49_155usize, 1001] {
        let rows = 3;
        let mut x = rng.vec(rows * n);
        x[3] = 7.0;
        x[n - 2] = 7.0;
        x[n + n / 2] = 8.0;
        x[n + n / 2 + 1] = 8.0;
        x[3 * n - 1] = 9.0;
        let mut out = upload(dev, &[-7i32; 3]);
        dev.argmax(&upload(dev, &x), rows, n, &mut out).unwrap();
        let want: Vec<i32> = x
            .chunks_exact(n)
            .map(|r| argmax_row(r).map_or(-1, |i| i as i32))
            .collect();
        assert_eq!(download(dev, &out), want, "rows of {n}");
        assert_eq!(want, vec![3, (n / 2) as i32, n as i32 - 1]);
    }
}

struct AttnCase {
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    window: usize,
    softcap: f32,
    lens: Vec<usize>,
    n_splits: usize,
}

/// Appends random K/V for every position of every sequence through `kv_append` (blocks of the
/// sequences interleaved in a shuffled pool), checks the cache, then runs decode attention
/// (the last position of each sequence) and causal prompt attention (every position of the
/// first sequence) against an f64 reference over the f16-rounded cache.
fn check_attention(dev: &CudaDevice, c: &AttnCase, seed: u64) {
    let mut rng = Rng::new(seed);
    let (hd, nkv, nh) = (c.head_dim, c.n_kv_heads, c.n_heads);
    let block_size = 16;
    let max_blocks = c.lens.iter().max().unwrap().div_ceil(block_size);
    let n_blocks = max_blocks * c.lens.len() + 3;
    let mut pool: Vec<i32> = (0..n_blocks as i32).collect();
    for i in (1..pool.len()).rev() {
        pool.swap(i, rng.below(i + 1));
    }
    let mut table = vec![-1i32; c.lens.len() * max_blocks];
    let mut next = 0;
    for (s, &len) in c.lens.iter().enumerate() {
        for b in 0..len.div_ceil(block_size) {
            table[s * max_blocks + b] = pool[next];
            next += 1;
        }
    }
    let table_d = upload(dev, &table);
    let mut layer = PagedKvLayer::new(dev, n_blocks, block_size, nkv, hd).unwrap();

    // Host copies, already rounded to f16: k[s][t][h][d].
    let mut kh = Vec::new();
    let mut vh = Vec::new();
    for (s, &len) in c.lens.iter().enumerate() {
        let k: Vec<f32> = rng.vec(len * nkv * hd).iter().map(|v| v * 2.0).collect();
        let v = rng.vec(len * nkv * hd);
        let q_seq = vec![s as i32; len];
        let pos: Vec<i32> = (0..len as i32).collect();
        let (q_seq_d, pos_d) = (upload(dev, &q_seq), upload(dev, &pos));
        let batch = QueryBatch {
            n_queries: len,
            q_seq: &q_seq_d,
            pos: &pos_d,
            block_table: &table_d,
            max_blocks,
        };
        dev.kv_append(&mut layer, &upload(dev, &k), &upload(dev, &v), &batch)
            .unwrap();
        kh.push(
            k.iter()
                .map(|&x| f16::from_f32(x).to_f32())
                .collect::<Vec<_>>(),
        );
        vh.push(
            v.iter()
                .map(|&x| f16::from_f32(x).to_f32())
                .collect::<Vec<_>>(),
        );
    }
    let (kc, vc) = layer.download(dev).unwrap();
    for (s, &len) in c.lens.iter().enumerate() {
        for t in 0..len {
            let blk = table[s * max_blocks + t / block_size] as usize;
            for h in 0..nkv {
                let off = ((blk * nkv + h) * block_size + t % block_size) * hd;
                for d in 0..hd {
                    let i = (t * nkv + h) * hd + d;
                    assert_eq!(
                        f16::from_bits(kc[off + d]).to_f32(),
                        kh[s][i],
                        "k cache s{s} t{t} h{h} d{d}"
                    );
                    assert_eq!(
                        f16::from_bits(vc[off + d]).to_f32(),
                        vh[s][i],
                        "v cache s{s} t{t} h{h} d{d}"
                    );
                }
            }
        }
    }

    let scale = 1.0 / (hd as f32).sqrt();
    let params = AttentionParams {
        n_heads: nh,
        n_kv_heads: nkv,
        head_dim: hd,
        scale,
        window: c.window,
        softcap: c.softcap,
    };
    let cap = f64::from(c.softcap);
    let reference = |s: usize, pos: usize, q: &[f32]| -> Vec<f64> {
        let mut out = vec![0.0f64; nh * hd];
        let start = if c.window > 0 {
            (pos + 1).saturating_sub(c.window)
        } else {
            0
        };
        for h in 0..nh {
            let kvh = h / (nh / nkv);
            let qh = &q[h * hd..(h + 1) * hd];
            let scores: Vec<f64> = (start..=pos)
                .map(|t| {
                    let k = &kh[s][(t * nkv + kvh) * hd..(t * nkv + kvh + 1) * hd];
                    qh.iter()
                        .zip(k)
                        .map(|(&a, &b)| f64::from(a * scale) * f64::from(b))
                        .sum()
                })
                .map(|s: f64| if cap > 0.0 { cap * (s / cap).tanh() } else { s })
                .collect();
            let m = scores.iter().fold(f64::MIN, |a, &b| a.max(b));
            let w: Vec<f64> = scores.iter().map(|&x| (x - m).exp()).collect();
            let z: f64 = w.iter().sum();
            for (j, t) in (start..=pos).enumerate() {
                let v = &vh[s][(t * nkv + kvh) * hd..(t * nkv + kvh + 1) * hd];
                for d in 0..hd {
                    out[h * hd + d] += w[j] / z * f64::from(v[d]);
                }
            }
        }
        out
    };

    // Decode: one query per sequence at its last position.
    let nq = c.lens.len();
    let q = rng.vec(nq * nh * hd);
    let q_seq: Vec<i32> = (0..nq as i32).collect();
    let pos: Vec<i32> = c.lens.iter().map(|&l| l as i32 - 1).collect();
    let (q_seq_d, pos_d) = (upload(dev, &q_seq), upload(dev, &pos));
    let batch = QueryBatch {
        n_queries: nq,
        q_seq: &q_seq_d,
        pos: &pos_d,
        block_table: &table_d,
        max_blocks,
    };
    let mut ws = AttentionWorkspace::new(dev, nq, nh, hd, c.n_splits).unwrap();
    let mut out = poisoned(dev, nq * nh * hd);
    // Decode also quantizes its output in the combining launch: it must equal quantize_q8.
    let mut fused_q8 = Q8Activations::new(dev, nq * nh * hd).unwrap();
    dev.attention(
        &layer,
        &upload(dev, &q),
        &mut out,
        Some(&mut fused_q8),
        &params,
        &batch,
        c.n_splits,
        &mut ws,
    )
    .unwrap();
    let mut separate_q8 = Q8Activations::new(dev, nq * nh * hd).unwrap();
    dev.quantize_q8(&out, &mut separate_q8).unwrap();
    assert_eq!(
        fused_q8.download(dev).unwrap(),
        separate_q8.download(dev).unwrap(),
        "decode d{hd}: quantized attention output"
    );
    let out = download(dev, &out);
    for s in 0..nq {
        let want = reference(s, c.lens[s] - 1, &q[s * nh * hd..(s + 1) * nh * hd]);
        let e = nerr(&out[s * nh * hd..(s + 1) * nh * hd], &want);
        assert!(
            e < 1e-4,
            "decode d{hd} g{} window {} softcap {} seq {s}: {e}",
            nh / nkv,
            c.window,
            c.softcap
        );
    }

    // Prompt: every position of sequence 0, causal.
    let len = c.lens[0];
    let q = rng.vec(len * nh * hd);
    let (q_seq_d, pos_d) = (
        upload(dev, &vec![0i32; len]),
        upload(dev, &(0..len as i32).collect::<Vec<_>>()),
    );
    let batch = QueryBatch {
        n_queries: len,
        q_seq: &q_seq_d,
        pos: &pos_d,
        block_table: &table_d,
        max_blocks,
    };
    let mut ws = AttentionWorkspace::new(dev, len, nh, hd, 1).unwrap();
    let mut out = poisoned(dev, len * nh * hd);
    dev.attention(
        &layer,
        &upload(dev, &q),
        &mut out,
        None,
        &params,
        &batch,
        1,
        &mut ws,
    )
    .unwrap();
    let out = download(dev, &out);
    let mut want = Vec::with_capacity(len * nh * hd);
    for t in 0..len {
        want.extend(reference(0, t, &q[t * nh * hd..(t + 1) * nh * hd]));
    }
    let e = nerr(&out, &want);
    assert!(
        e < 1e-4,
        "prompt d{hd} window {} softcap {}: {e}",
        c.window,
        c.softcap
    );
}

#[test]
fn paged_attention_matches_reference() {
    let Some(dev) = device() else { return };
    let cases = [
        // SmolLM2-135M: 9 query heads over 3 kv heads of 64.
        AttnCase {
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            window: 0,
            softcap: 0.0,
            lens: vec![100, 37],
            n_splits: 4,
        },
        // Llama 3 8B: 32 over 8 of 128, long context, many splits.
        AttnCase {
            n_heads: 32,
            n_kv_heads: 8,
            head_dim: 128,
            window: 0,
            softcap: 0.0,
            lens: vec![700, 1],
            n_splits: 16,
        },
        // Gemma 3 270M: 4 over 1 of 256, sliding window.
        AttnCase {
            n_heads: 4,
            n_kv_heads: 1,
            head_dim: 256,
            window: 48,
            softcap: 0.0,
            lens: vec![130, 20],
            n_splits: 3,
        },
        // Eight query heads per kv head.
        AttnCase {
            n_heads: 16,
            n_kv_heads: 2,
            head_dim: 128,
            window: 0,
            softcap: 0.0,
            lens: vec![65],
            n_splits: 2,
        },
        // Gemma 2: soft-capped scores (a cap small enough to bend them), with and without a
        // window.
        AttnCase {
            n_heads: 8,
            n_kv_heads: 4,
            head_dim: 256,
            window: 0,
            softcap: 0.5,
            lens: vec![90, 33],
            n_splits: 5,
        },
        AttnCase {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 64,
            window: 20,
            softcap: 0.3,
            lens: vec![77, 5],
            n_splits: 4,
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        check_attention(dev, c, 40 + i as u64);
    }
}

/// A token step (quantize, matvec, argmax) captured once as a graph and replayed with new
/// inputs written into the same device buffers.
#[test]
fn captured_graph_replays_with_new_inputs() {
    let Some(_) = device() else { return };
    // A device of its own: capture takes over its stream, which other tests must not share.
    let dev = CudaDevice::new().unwrap();
    let mut rng = Rng::new(12);
    let (rows, cols) = (3000, 1024);
    let bytes = random_weights(&mut rng, WeightType::Q4K, rows, cols);
    let w = QuantMatrix::upload(&dev, WeightType::Q4K, rows, cols, &bytes).unwrap();
    let wf = dequantize(WeightType::Q4K, &bytes, rows, cols);
    let mut x = dev.stream().alloc_zeros::<f32>(cols).unwrap();
    let mut act = Q8Activations::new(&dev, cols).unwrap();
    let mut y = dev.stream().alloc_zeros::<f32>(rows).unwrap();
    let mut best = dev.stream().alloc_zeros::<i32>(1).unwrap();
    let graph = dev
        .capture(|d| {
            d.quantize_q8(&x, &mut act)?;
            d.matvec(&w, &act, &mut y, false)?;
            d.argmax(&y, 1, rows, &mut best)
        })
        .unwrap();
    for step in 0..4 {
        let xv = rng.vec(cols);
        dev.stream().memcpy_htod(&xv, &mut x).unwrap();
        graph.launch().unwrap();
        let got = download(&dev, &best)[0];
        let yv = download(&dev, &y);
        let (q, ds) = act.download(&dev).unwrap();
        let xq: Vec<f64> = q
            .iter()
            .enumerate()
            .map(|(i, &v)| f64::from(v) * f64::from(ds[i / 32 * 2]))
            .collect();
        let want = matvec_reference(&wf, &xq, rows, cols);
        assert!(nerr(&yv, &want) < 1e-5, "step {step}");
        let top = yv
            .iter()
            .enumerate()
            .fold(0, |b, (i, &v)| if v > yv[b] { i } else { b });
        assert_eq!(got as usize, top, "step {step}");
    }
    let failed = dev.capture(|d| d.add(&x, &x, &mut y, rows + 1));
    assert!(failed.is_err());
    dev.synchronize().unwrap();
}

#[test]
fn prompt_matmul_on_tensor_cores_matches_reference() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(11);
    for ty in [
        WeightType::Q4K,
        WeightType::Q8_0,
        WeightType::Q6K,
        WeightType::Bf16,
        WeightType::Q5_1,
        WeightType::Q2K,
        WeightType::Q3K,
        WeightType::Q5K,
        WeightType::Iq4Nl,
        WeightType::Iq4Xs,
    ] {
        let (rows, cols, n) = (1000, 768, 37);
        let bytes = random_weights(&mut rng, ty, rows, cols);
        let w = QuantMatrix::upload(dev, ty, rows, cols, &bytes).unwrap();
        let x = rng.vec(n * cols);
        let mut xh = dev.stream().alloc_zeros::<u16>(n * cols).unwrap();
        dev.convert_f16(&upload(dev, &x), &mut xh, n * cols)
            .unwrap();
        let xh_host = download(dev, &xh);
        for (a, &b) in x.iter().zip(&xh_host) {
            assert_eq!(f16::from_f32(*a).to_bits(), b, "f16 conversion of {a}");
        }
        // A scratch of 300 rows: four slabs, the last one partial.
        let mut scratch = dev.stream().alloc_zeros::<u16>(300 * cols).unwrap();
        let mut out = poisoned(dev, n * rows);
        dev.matmul(&w, &xh, n, &mut out, &mut scratch).unwrap();
        let wf: Vec<f64> = dequantize(ty, &bytes, rows, cols)
            .into_iter()
            .map(|v| f64::from(f16::from_f32(v).to_f32()))
            .collect();
        let xf: Vec<f64> = xh_host
            .iter()
            .map(|&b| f64::from(f16::from_bits(b).to_f32()))
            .collect();
        let mut want = vec![0.0; n * rows];
        for t in 0..n {
            for r in 0..rows {
                want[t * rows + r] = (0..cols).map(|k| wf[r * cols + k] * xf[t * cols + k]).sum();
            }
        }
        let e = nerr(&download(dev, &out), &want);
        assert!(e < 1e-4, "{ty:?} matmul: {e}");
    }
}

/// Products of float weights with f32 inputs (the expert router): decode-sized batches on the
/// mat-vec kernel, larger F32 ones on cuBLAS in f32, more than a launch's 65 535 vectors in
/// several launches; all within f32 rounding of the f64 product.
#[test]
fn f32_input_products_match_reference() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(23);
    for (ty, rows, cols, n) in [
        (WeightType::F32, 60, 2048, 1),
        (WeightType::F32, 60, 2048, 8),
        (WeightType::F32, 128, 2048, 9),
        (WeightType::F32, 8, 4096, 300),
        (WeightType::F16, 60, 2048, 5),
        (WeightType::F16, 60, 2048, 40),
        (WeightType::F16, 4, 64, 70_000),
        (WeightType::Bf16, 60, 2048, 5),
        (WeightType::Bf16, 60, 2048, 40),
    ] {
        let bytes = random_weights(&mut rng, ty, rows, cols);
        let w = QuantMatrix::upload(dev, ty, rows, cols, &bytes).unwrap();
        let x = rng.vec(n * cols);
        let mut out = poisoned(dev, n * rows);
        dev.matmul_f32_input(&w, &upload(dev, &x), n, &mut out)
            .unwrap();
        let wf = dequantize(ty, &bytes, rows, cols);
        let mut want = Vec::with_capacity(n * rows);
        for xt in x.chunks_exact(cols) {
            let xt: Vec<f64> = xt.iter().map(|&v| f64::from(v)).collect();
            want.extend(matvec_reference(&wf, &xt, rows, cols));
        }
        let e = nerr(&download(dev, &out), &want);
        assert!(e < 1e-6, "{ty:?} {rows}x{cols}, {n} vectors: {e}");
    }
    let q = random_weights(&mut rng, WeightType::Q8_0, 4, 64);
    let w = QuantMatrix::upload(dev, WeightType::Q8_0, 4, 64, &q).unwrap();
    let mut out = poisoned(dev, 4);
    assert!(
        dev.matmul_f32_input(&w, &upload(dev, &[0.5f32; 64]), 1, &mut out)
            .is_err(),
        "quantized weights need int8 activations"
    );
}

/// Llama-3-8B feed-forward shapes: correctness at full size, then the achieved bandwidth with
/// CUDA events over 8 rotating copies of the weights (more than the 60 MB L2 holds).
#[test]
fn matvec_at_8b_shapes_is_correct_and_reports_bandwidth() {
    let Some(dev) = device() else { return };
    let mut rng = Rng::new(99);
    let mut report = Vec::new();
    for ty in [
        WeightType::Q4_0,
        WeightType::Q8_0,
        WeightType::Q4K,
        WeightType::Q6K,
    ] {
        for (rows, cols) in [(14336, 4096), (4096, 14336)] {
            let copies: Vec<(Vec<u8>, QuantMatrix)> = (0..8)
                .map(|_| {
                    let b = random_weights(&mut rng, ty, rows, cols);
                    let m = QuantMatrix::upload(dev, ty, rows, cols, &b).unwrap();
                    (b, m)
                })
                .collect();
            let x = rng.vec(cols);
            let mut act = Q8Activations::new(dev, cols).unwrap();
            dev.quantize_q8(&upload(dev, &x), &mut act).unwrap();
            let mut y = poisoned(dev, rows);
            dev.matvec(&copies[3].1, &act, &mut y, false).unwrap();
            let (q, ds) = act.download(dev).unwrap();
            let xq: Vec<f64> = q
                .iter()
                .enumerate()
                .map(|(i, &v)| f64::from(v) * f64::from(ds[i / 32 * 2]))
                .collect();
            let wf = dequantize(ty, &copies[3].0, rows, cols);
            let e = nerr(&download(dev, &y), &matvec_reference(&wf, &xq, rows, cols));
            assert!(e < 1e-5, "{ty:?} {rows}x{cols}: {e}");
            let mats: Vec<QuantMatrix> = copies.into_iter().map(|(_, m)| m).collect();
            let t = time_matvec(dev, &mats, &act, 3000, 200).unwrap();
            report.push(format!(
                "matvec {:<5} {rows:>5}x{cols:<5} {:>6.1} MB  median {:>7.2} us  min {:>7.2} us  {:>6.0} GB/s ({:.0}% of 4250)",
                format!("{ty:?}"),
                t.bytes as f64 / 1e6,
                t.median_us,
                t.min_us,
                t.gb_per_s(),
                t.gb_per_s() / 4250.0 * 100.0
            ));
        }
    }
    let copy = time_copy(dev, 1 << 30, 10).unwrap();
    report.push(format!(
        "copy ceiling: device-to-device 1 GiB, median {:.0} us, {:.0} GB/s (read + write)",
        copy.median_us,
        copy.gb_per_s()
    ));
    // Prefill: 512 tokens through a 14336 x 4096 Q4_K matrix, dequantized in one slab.
    let (rows, cols, n) = (14336, 4096, 512);
    let w = QuantMatrix::upload(
        dev,
        WeightType::Q4K,
        rows,
        cols,
        &random_weights(&mut rng, WeightType::Q4K, rows, cols),
    )
    .unwrap();
    let x = rng.vec(n * cols);
    let mut xh = dev.stream().alloc_zeros::<u16>(n * cols).unwrap();
    dev.convert_f16(&upload(dev, &x), &mut xh, n * cols)
        .unwrap();
    let mut scratch = dev.stream().alloc_zeros::<u16>(rows * cols).unwrap();
    let mut out = poisoned(dev, n * rows);
    let (median, _) = time_op(dev, 20, || dev.matmul(&w, &xh, n, &mut out, &mut scratch)).unwrap();
    let (deq, _) = time_op(dev, 20, || {
        dev.dequantize_rows_f16(&w, 0, rows, &mut scratch)
    })
    .unwrap();
    report.push(format!(
        "prefill matmul Q4K {rows}x{cols} x {n} tokens: {median:.0} us ({:.0} TFLOP/s; dequantization alone {deq:.0} us)",
        2.0 * (rows * cols * n) as f64 / (median * 1e-6) / 1e12
    ));
    for line in &report {
        println!("{line}");
    }
}
