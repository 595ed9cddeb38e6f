//! The fused decode kernels (RMSNorm + int8 quantization, gated activation + quantization, the
//! rotary embedding of queries and keys together, mat-vec + residual add) against CPU
//! references on random inputs, compared by ‖out − ref‖ / ‖ref‖.
//!
//! Without a CUDA driver or GPU each test prints a note and returns, unless
//! `FERROLM_REQUIRE_GPU=1`.
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::sync::OnceLock;

use cudarc::driver::CudaSlice;
use ferrolm_transformer::cuda::{CudaDevice, Q8Activations, QuantMatrix, RopeParams, WeightType};
use half::f16;

fn device() -> Option<&'static CudaDevice> {
    static DEV: OnceLock<Option<CudaDevice>> = OnceLock::new();
    DEV.get_or_init(|| match CudaDevice::new() {
        Ok(d) => Some(d),
        Err(e) if e.is_no_gpu() && std::env::var("FERROLM_REQUIRE_GPU").as_deref() != Ok("1") => {
            eprintln!("note: no CUDA GPU here ({e}); GPU test skipped");
            None
        }
        Err(e) => panic!("CUDA device failed: {e}"),
    })
    .as_ref()
}

struct Rng(u64);

impl Rng {
    fn f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((v >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }
}

fn upload<T: cudarc::driver::DeviceRepr>(dev: &CudaDevice, v: &[T]) -> CudaSlice<T> {
    dev.stream().clone_htod(v).unwrap()
}

fn download(dev: &CudaDevice, v: &CudaSlice<f32>) -> Vec<f32> {
    dev.stream().clone_dtoh(v).unwrap()
}

fn nerr(out: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len());
    let (mut num, mut den) = (0.0, 0.0);
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

/// Checks int8 activations against the quantization of `x` (d = max|x| / 127 per 32 values).
fn check_quantized(dev: &CudaDevice, act: &Q8Activations, x: &[f32], what: &str) {
    let (q, ds) = act.download(dev).unwrap();
    let mut bad = 0;
    let mut scales = Vec::new();
    for (g, group) in x.chunks_exact(32).enumerate() {
        let amax = group.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let mut sum = 0i32;
        for (i, &v) in group.iter().enumerate() {
            let want = if amax == 0.0 {
                0
            } else {
                (v / d).round() as i32
            };
            sum += want;
            bad += usize::from(i32::from(q[g * 32 + i]) != want);
        }
        scales.push(f64::from(d));
        scales.push(f64::from(d) * f64::from(sum));
    }
    assert!(bad <= x.len() / 500, "{what}: {bad} int8 values differ");
    let e = nerr(&ds[..scales.len()], &scales);
    assert!(e < 1e-4, "{what}: scales differ by {e}");
}

#[test]
fn rmsnorm_q8_normalizes_and_quantizes() {
    let Some(dev) = device() else { return };
    let mut rng = Rng(11);
    // 4096 and 1056 spread a row over several blocks, the last one of 1056 holding one group.
    for (rows, n) in [(1usize, 576usize), (3, 4096), (8, 640), (2, 1056)] {
        let x = rng.vec(rows * n, 3.0);
        let w = rng.vec(n, 1.0);
        let mut y = upload(dev, &vec![f32::NAN; rows * n]);
        let mut act = Q8Activations::new(dev, rows * n).unwrap();
        dev.rmsnorm_q8(
            &upload(dev, &x),
            &upload(dev, &w),
            &mut y,
            &mut act,
            rows,
            n,
            1e-6,
        )
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
        let got = download(dev, &y);
        let e = nerr(&got, &want);
        assert!(e < 1e-5, "rmsnorm_q8 {rows}x{n}: {e}");
        check_quantized(dev, &act, &got, "rmsnorm_q8");
    }
}

#[test]
fn glu_q8_activates_and_quantizes() {
    let Some(dev) = device() else { return };
    let mut rng = Rng(12);
    for (gelu, n) in [(false, 1536usize), (true, 2048), (false, 14336)] {
        let gate = rng.vec(n, 4.0);
        let up = rng.vec(n, 2.0);
        let mut g = upload(dev, &gate);
        let mut act = Q8Activations::new(dev, n).unwrap();
        dev.glu_q8(&mut g, &upload(dev, &up), &mut act, n, gelu)
            .unwrap();
        let want: Vec<f64> = gate
            .iter()
            .zip(&up)
            .map(|(&a, &u)| {
                let a = f64::from(a);
                let act = if gelu {
                    let k = (2.0 / std::f64::consts::PI).sqrt();
                    0.5 * a * (1.0 + (k * (a + 0.044_715 * a * a * a)).tanh())
                } else {
                    a / (1.0 + (-a).exp())
                };
                act * f64::from(u)
            })
            .collect();
        let got = download(dev, &g);
        let e = nerr(&got, &want);
        assert!(e < 1e-5, "glu_q8 gelu={gelu}: {e}");
        check_quantized(dev, &act, &got, "glu_q8");
    }
}

#[test]
fn rope_qk_rotates_queries_and_keys() {
    let Some(dev) = device() else { return };
    let mut rng = Rng(13);
    let (n_tok, nq, nk, head_dim) = (3, 9, 3, 64);
    for neox in [false, true] {
        let q = rng.vec(n_tok * nq * head_dim, 1.0);
        let k = rng.vec(n_tok * nk * head_dim, 1.0);
        let pos = [0i32, 17, 4095];
        let p = RopeParams::plain(nq, head_dim, 10_000.0, neox);
        let (mut qd, mut kd) = (upload(dev, &q), upload(dev, &k));
        dev.rope_qk(
            &mut qd,
            &mut kd,
            &upload(dev, &pos),
            None,
            n_tok,
            nq,
            nk,
            &p,
        )
        .unwrap();
        let rotate = |x: &[f32], heads: usize| {
            let mut out: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
            for (t, &ps) in pos.iter().enumerate() {
                for h in 0..heads {
                    let base = (t * heads + h) * head_dim;
                    for i in 0..head_dim / 2 {
                        let theta =
                            f64::from(ps) * 10_000f64.powf(-2.0 * i as f64 / head_dim as f64);
                        let (ia, ib) = if neox {
                            (i, i + head_dim / 2)
                        } else {
                            (2 * i, 2 * i + 1)
                        };
                        let (a, b) = (f64::from(x[base + ia]), f64::from(x[base + ib]));
                        out[base + ia] = a * theta.cos() - b * theta.sin();
                        out[base + ib] = a * theta.sin() + b * theta.cos();
                    }
                }
            }
            out
        };
        let eq = nerr(&download(dev, &qd), &rotate(&q, nq));
        let ek = nerr(&download(dev, &kd), &rotate(&k, nk));
        assert!(
            eq < 1e-4 && ek < 1e-4,
            "rope_qk neox={neox}: q {eq}, k {ek}"
        );
    }
}

#[test]
fn matvec_add_writes_the_product_and_adds_it_to_the_residual() {
    let Some(dev) = device() else { return };
    let mut rng = Rng(14);
    let (rows, cols, n_vec) = (300usize, 512usize, 2usize);
    for ty in [WeightType::Q4_0, WeightType::Q8_0, WeightType::Q4K] {
        let rb = ty.row_bytes(cols).unwrap();
        let mut bytes: Vec<u8> = (0..rows * rb)
            .map(|_| ((rng.f32() + 1.0) * 127.9) as u8)
            .collect();
        for b in bytes.chunks_exact_mut(ty.block_bytes()) {
            b[0..2].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
            if ty == WeightType::Q4K {
                b[2..4].copy_from_slice(&f16::from_f32(0.002).to_le_bytes());
            }
        }
        let mut w = vec![0.0f32; rows * cols];
        for (r, row) in w.chunks_exact_mut(cols).enumerate() {
            ferrolm_quant::dequantize_row(ty.to_ggml(), &bytes[r * rb..(r + 1) * rb], row).unwrap();
        }
        let m = QuantMatrix::upload(dev, ty, rows, cols, &bytes).unwrap();
        let x = rng.vec(n_vec * cols, 1.0);
        let residual = rng.vec(n_vec * rows, 1.0);
        let mut act = Q8Activations::new(dev, n_vec * cols).unwrap();
        dev.quantize_q8(&upload(dev, &x), &mut act).unwrap();
        let mut y = upload(dev, &vec![f32::NAN; n_vec * rows]);
        let mut res = upload(dev, &residual);
        dev.matvec_add(&m, &act, n_vec, &mut y, &mut res).unwrap();
        let mut product = Vec::with_capacity(n_vec * rows);
        for v in 0..n_vec {
            let xv = &x[v * cols..(v + 1) * cols];
            for row in w.chunks_exact(cols) {
                product.push(
                    row.iter()
                        .zip(xv)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum::<f64>(),
                );
            }
        }
        let summed: Vec<f64> = product
            .iter()
            .zip(&residual)
            .map(|(p, &r)| p + f64::from(r))
            .collect();
        let (ey, er) = (
            nerr(&download(dev, &y), &product),
            nerr(&download(dev, &res), &summed),
        );
        assert!(
            ey < 2e-2 && er < 2e-2,
            "{ty:?}: product {ey}, residual {er}"
        );
    }
}

#[test]
fn matvec_many_equals_one_matvec_per_matrix() {
    let Some(dev) = device() else { return };
    let mut rng = Rng(15);
    let cols = 640usize;
    // Row counts that do not fill a block of warps, so a block straddles two matrices.
    let shapes = [vec![301usize, 97, 97], vec![150, 403]];
    for ty in [WeightType::Q4_1, WeightType::Q5_0, WeightType::Q8_0] {
        for rows in &shapes {
            for n_vec in [1usize, 3] {
                let rb = ty.row_bytes(cols).unwrap();
                let mats: Vec<QuantMatrix> = rows
                    .iter()
                    .map(|&r| {
                        let mut bytes: Vec<u8> = (0..r * rb)
                            .map(|_| ((rng.f32() + 1.0) * 127.9) as u8)
                            .collect();
                        for b in bytes.chunks_exact_mut(ty.block_bytes()) {
                            b[0..2].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
                            if ty == WeightType::Q4_1 {
                                b[2..4].copy_from_slice(&f16::from_f32(-0.05).to_le_bytes());
                            }
                        }
                        QuantMatrix::upload(dev, ty, r, cols, &bytes).unwrap()
                    })
                    .collect();
                let x = rng.vec(n_vec * cols, 1.0);
                let mut act = Q8Activations::new(dev, n_vec * cols).unwrap();
                dev.quantize_q8(&upload(dev, &x), &mut act).unwrap();
                let mut fused: Vec<CudaSlice<f32>> = rows
                    .iter()
                    .map(|&r| upload(dev, &vec![f32::NAN; n_vec * r]))
                    .collect();
                let refs: Vec<&QuantMatrix> = mats.iter().collect();
                let mut outs: Vec<&mut CudaSlice<f32>> = fused.iter_mut().collect();
                dev.matvec_many(&refs, &act, n_vec, &mut outs).unwrap();
                for (m, (w, got)) in mats.iter().zip(&fused).enumerate() {
                    let mut want = upload(dev, &vec![f32::NAN; n_vec * w.rows()]);
                    dev.matvec_batch(w, &act, n_vec, &mut want, false).unwrap();
                    let (got, want) = (download(dev, got), download(dev, &want));
                    assert!(
                        got.iter().all(|v| v.is_finite()),
                        "{ty:?} matrix {m}: unwritten output"
                    );
                    assert_eq!(got, want, "{ty:?} rows {rows:?} matrix {m} n_vec {n_vec}");
                }
            }
        }
        // Matrices of different widths are refused rather than misread.
        let other = QuantMatrix::upload(
            dev,
            ty,
            4,
            cols * 2,
            &vec![0u8; 4 * ty.row_bytes(cols * 2).unwrap()],
        )
        .unwrap();
        let first = QuantMatrix::upload(
            dev,
            ty,
            4,
            cols,
            &vec![0u8; 4 * ty.row_bytes(cols).unwrap()],
        )
        .unwrap();
        let act = Q8Activations::new(dev, 2 * cols).unwrap();
        let (mut a, mut b) = (upload(dev, &[0.0f32; 4]), upload(dev, &[0.0f32; 4]));
        assert!(
            dev.matvec_many(&[&first, &other], &act, 1, &mut [&mut a, &mut b])
                .is_err()
        );
    }
}
