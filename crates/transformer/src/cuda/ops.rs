//! Safe wrappers of every kernel: each checks the sizes of the buffers it is given against the
//! kernel's shape contract and then queues the launch on the device's stream.
#![allow(unsafe_code)]

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig};

use super::attention::ATT_WARPS;
use super::launch::{Arg, GemmInput, gemm, launch};
use super::step::Launch;
use super::{
    AttentionParams, AttentionWorkspace, CudaDevice, CudaError, PagedKvLayer, Q8Activations,
    QuantMatrix, QueryBatch, WeightType,
};

/// Rotary embedding settings (the angles as [`crate::config::Rope`] defines them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeParams {
    /// Heads per token in the buffer.
    pub n_heads: usize,
    /// Dimension of each head.
    pub head_dim: usize,
    /// Leading dimensions of each head that are rotated (even, at most `head_dim`).
    pub n_rot: usize,
    /// Frequency base (`rope.freq_base`).
    pub base: f32,
    /// Linear position scale (1 for none).
    pub freq_scale: f32,
    /// YaRN: how much of the unscaled angle the ramp mixes back (0: none).
    pub ext_factor: f32,
    /// YaRN: the pair range over which the ramp goes from the unscaled to the scaled angle.
    pub corr_dims: [f32; 2],
    /// Multiplier on cos and sin (1 for none).
    pub mscale: f32,
    /// NeoX layout (pairs `i, i + n_rot/2`) instead of adjacent pairs.
    pub neox: bool,
}

impl RopeParams {
    /// Plain rotary embedding of `n_heads` heads of `head_dim`, all dimensions rotated: no
    /// scaling.
    pub fn plain(n_heads: usize, head_dim: usize, base: f32, neox: bool) -> Self {
        Self {
            n_heads,
            head_dim,
            n_rot: head_dim,
            base,
            freq_scale: 1.0,
            ext_factor: 0.0,
            corr_dims: [0.0, 0.0],
            mscale: 1.0,
            neox,
        }
    }

    /// The kernels' arguments after the head counts: head_dim, n_rot, base, freq_scale,
    /// ext_factor, the two corr_dims, mscale, neox.
    fn args(&self, op: &'static str) -> Result<[Arg; 9], CudaError> {
        if !self.n_rot.is_multiple_of(2) || self.n_rot > self.head_dim || self.n_rot == 0 {
            return Err(CudaError::Unsupported {
                op,
                what: format!("n_rot {} with head_dim {}", self.n_rot, self.head_dim),
            });
        }
        Ok([
            Arg::I32(dim(op, "head_dim", self.head_dim)?),
            Arg::I32(dim(op, "n_rot", self.n_rot)?),
            Arg::F32(self.base),
            Arg::F32(self.freq_scale),
            Arg::F32(self.ext_factor),
            Arg::F32(self.corr_dims[0]),
            Arg::F32(self.corr_dims[1]),
            Arg::F32(self.mscale),
            Arg::I32(i32::from(self.neox)),
        ])
    }
}

/// Device addresses and sizes of one matvec launch (0 for an absent optional buffer).
#[derive(Debug, Clone, Copy)]
struct MatvecLaunch {
    ty: WeightType,
    w: u64,
    bias: u64,
    rows: usize,
    cols: usize,
    xq: u64,
    xds: u64,
    xf: u64,
    n_vec: usize,
    y: u64,
    residual: u64,
    add_to: u64,
}

/// The block-wide reductions (rmsnorm, argmax) use this many threads.
const REDUCE_THREADS: u32 = 256;
/// Threads of each (token, head) block of `qk_norm_rope_f32`.
const QK_NORM_ROPE_THREADS: u32 = 128;
/// `QK_NORM_ROPE_MAX_HEAD` of `rope.cu`: the largest head `qk_norm_rope_f32` holds.
const QK_NORM_ROPE_MAX_HEAD: usize = 512;
const ARGMAX_THREADS: u32 = 1024;
pub(super) const ELEMENTWISE_THREADS: u32 = 256;
/// Threads per block of `rmsnorm_q8`: one warp per group of 32 values.
const RMSNORM_Q8_THREADS: usize = 1024;
pub(super) const MATVEC_WARPS: usize = 4;
/// Most vectors [`CudaDevice::matmul_f32_input`] multiplies with the mat-vec kernel.
const F32_INPUT_MATVEC_MAX: usize = 8;

pub(super) fn ptr<T>(buf: &impl DevicePtr<T>, stream: &CudaStream) -> u64 {
    buf.device_ptr(stream).0
}

pub(super) fn ptr_mut<T>(buf: &mut impl DevicePtrMut<T>, stream: &CudaStream) -> u64 {
    buf.device_ptr_mut(stream).0
}

/// The address of a matrix's bias, or 0 without one.
fn bias_ptr(w: &QuantMatrix, stream: &CudaStream) -> u64 {
    w.bias().map_or(0, |b| ptr(b, stream))
}

pub(super) fn need(
    op: &'static str,
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), CudaError> {
    if got < expected {
        return Err(CudaError::Shape {
            op,
            what,
            expected,
            got,
        });
    }
    Ok(())
}

pub(super) fn dim(op: &'static str, what: &'static str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Unsupported {
        op,
        what: format!("{what} = {v} does not fit the kernels' 32-bit indices"),
    })
}

pub(super) fn grid_for(n: usize, threads: u32) -> Result<u32, CudaError> {
    u32::try_from(n.div_ceil(threads as usize)).map_err(|_| CudaError::Unsupported {
        op: "launch",
        what: format!("{n} threads"),
    })
}

pub(super) fn cfg(grid: (u32, u32, u32), threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaDevice {
    /// Queues `kernel` (or matches it against the step being replayed). Callers must pass the
    /// kernel's argument list and buffers large enough for what it touches.
    pub(super) fn run(
        &self,
        kernel: &str,
        config: LaunchConfig,
        args: &[Arg],
    ) -> Result<(), CudaError> {
        let (name, f) = self.function(kernel)?;
        if !self.track_launch(name, &config, args)? {
            return Ok(());
        }
        // SAFETY: every caller (below and in `experts`) passes the argument list of `kernel`'s
        // signature in `ferrolm-kernels`, and has checked each buffer's length against what
        // the kernel touches for this configuration.
        unsafe { launch(self.stream(), f, config, args) }
    }

    /// Issues recorded launches again, in order.
    pub(crate) fn relaunch_all(&self, launches: &[Launch]) -> Result<(), CudaError> {
        for l in launches {
            let (_, f) = self.function(l.kernel)?;
            // SAFETY: each launch was first issued through `run`, whose caller checked its
            // arguments; a launch is issued again only right after it was recorded (to capture
            // it into a graph, which runs nothing) or after an identical launch, with the same
            // buffers, passed the same checks in the step being replayed.
            unsafe { launch(self.stream(), f, l.config(), &l.args) }?;
        }
        Ok(())
    }

    /// `out = quantized(x)` for the matvec path (the int8 form and the f32 values); `x` has
    /// `out.len()` values (any number of rows of a length that is a multiple of 32, back to
    /// back).
    pub fn quantize_q8(
        &self,
        x: &impl DevicePtr<f32>,
        out: &mut Q8Activations,
    ) -> Result<(), CudaError> {
        let n = out.len();
        self.quantize_q8_n(x, out, n)
    }

    /// Quantizes the first `n` values of `x` (a multiple of 32) into the start of `out`.
    pub fn quantize_q8_n(
        &self,
        x: &impl DevicePtr<f32>,
        out: &mut Q8Activations,
        n: usize,
    ) -> Result<(), CudaError> {
        need("quantize_q8", "x", n, x.len())?;
        need("quantize_q8", "out", n, out.len())?;
        if !n.is_multiple_of(32) {
            return Err(CudaError::Unsupported {
                op: "quantize_q8",
                what: format!("{n} values is not a multiple of 32"),
            });
        }
        let s = self.stream();
        let args = [
            Arg::Ptr(ptr(x, s)),
            Arg::Ptr(ptr_mut(&mut out.q, s)),
            Arg::Ptr(ptr_mut(&mut out.ds, s)),
            Arg::Ptr(ptr_mut(&mut out.x, s)),
            Arg::I32(dim("quantize_q8", "n", n)?),
        ];
        self.run(
            "quantize_q8",
            cfg(
                (grid_for(n, ELEMENTWISE_THREADS)?, 1, 1),
                ELEMENTWISE_THREADS,
            ),
            &args,
        )
    }

    /// `y = W · x + b` for `W` of `rows × cols` (and its bias `b`, if any) and `x` of `cols`
    /// prepared values; with `accumulate`, `y += W · x + b` (the residual add fused into the
    /// product).
    pub fn matvec(
        &self,
        w: &QuantMatrix,
        x: &Q8Activations,
        y: &mut impl DevicePtrMut<f32>,
        accumulate: bool,
    ) -> Result<(), CudaError> {
        self.matvec_batch(w, x, 1, y, accumulate)
    }

    /// `y[v] = W · x[v]` (or `+=` with `accumulate`) for `n_vec` input vectors stored back to
    /// back in `x` (`cols` values each), writing `n_vec` outputs of `rows` values back to back.
    pub fn matvec_batch(
        &self,
        w: &QuantMatrix,
        x: &Q8Activations,
        n_vec: usize,
        y: &mut impl DevicePtrMut<f32>,
        accumulate: bool,
    ) -> Result<(), CudaError> {
        let m = self.check_matvec(w, x, n_vec, y)?;
        let yp = m.y;
        // SAFETY: check_matvec compared every buffer with the shapes the launch touches.
        unsafe {
            self.matvec_raw(&MatvecLaunch {
                residual: if accumulate { yp } else { 0 },
                ..m
            })
        }
    }

    /// `y[v] = W · x[v] + b` and `add_to[v] += y[v]` in one launch (a product and the residual
    /// connection that consumes it), for `n_vec` vectors as in [`CudaDevice::matvec_batch`].
    pub fn matvec_add(
        &self,
        w: &QuantMatrix,
        x: &Q8Activations,
        n_vec: usize,
        y: &mut impl DevicePtrMut<f32>,
        add_to: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        need("matvec", "add_to", n_vec * w.rows(), add_to.len())?;
        let m = self.check_matvec(w, x, n_vec, y)?;
        let add_to = ptr_mut(add_to, self.stream());
        // SAFETY: check_matvec and the line above compared every buffer with the launch's shapes.
        unsafe { self.matvec_raw(&MatvecLaunch { add_to, ..m }) }
    }

    /// `y[v] = W · x[v] + b` for `n_vec` f32 input vectors of a float matrix (F32, F16, BF16),
    /// from the f32 values themselves: the expert router's logits at full precision.
    /// Decode-sized batches (and F16 and BF16 weights) take the mat-vec kernel, which a step
    /// graph can hold; larger batches of F32 weights one cuBLAS f32 product.
    pub fn matmul_f32_input(
        &self,
        w: &QuantMatrix,
        x: &impl DevicePtr<f32>,
        n_vec: usize,
        y: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        if !w.weight_type().is_float() {
            return Err(CudaError::Unsupported {
                op: "matmul_f32_input",
                what: format!("{:?} weights (F32, F16 or BF16 only)", w.weight_type()),
            });
        }
        let (rows, cols) = (w.rows(), w.cols());
        need("matmul_f32_input", "x", n_vec * cols, x.len())?;
        need("matmul_f32_input", "y", n_vec * rows, y.len())?;
        if n_vec == 0 {
            return Ok(());
        }
        let s = self.stream();
        let (xp, yp, wp) = (ptr(x, s), ptr_mut(y, s), ptr(w.data(), s));
        if n_vec <= F32_INPUT_MATVEC_MAX || w.weight_type() != WeightType::F32 {
            let mut v0 = 0;
            while v0 < n_vec {
                let n = (n_vec - v0).min(65_535);
                // SAFETY: x holds n_vec × cols and y n_vec × rows f32 (checked above), so the
                // vectors from v0 hold n × cols and n × rows; float weights read only xf, so the
                // int8 activations may be absent.
                unsafe {
                    self.matvec_raw(&MatvecLaunch {
                        ty: w.weight_type(),
                        w: wp,
                        bias: bias_ptr(w, s),
                        rows,
                        cols,
                        xq: 0,
                        xds: 0,
                        xf: xp + (v0 * cols * size_of::<f32>()) as u64,
                        n_vec: n,
                        y: yp + (v0 * rows * size_of::<f32>()) as u64,
                        residual: 0,
                        add_to: 0,
                    })?;
                }
                v0 += n;
            }
            return Ok(());
        }
        let blas = self.blas()?;
        // cuBLAS calls cannot be part of a replayed step graph.
        self.untracked_work()?;
        // SAFETY: w holds rows × cols f32 (an F32 matrix), x n_vec × cols and y n_vec × rows
        // (checked above).
        unsafe {
            gemm(
                blas,
                GemmInput::F32,
                wp,
                xp,
                yp,
                dim("matmul_f32_input", "rows", rows)?,
                dim("matmul_f32_input", "n", n_vec)?,
                dim("matmul_f32_input", "cols", cols)?,
                dim("matmul_f32_input", "rows", rows)?,
            )?;
        }
        if let Some(bias) = w.bias() {
            let args = [
                Arg::Ptr(yp),
                Arg::Ptr(ptr(bias, s)),
                Arg::I32(dim("matmul_f32_input", "rows", rows)?),
                Arg::I32(dim("matmul_f32_input", "n", n_vec * rows)?),
            ];
            let grid = grid_for(n_vec * rows, ELEMENTWISE_THREADS)?;
            self.run(
                "add_bias_f32",
                cfg((grid, 1, 1), ELEMENTWISE_THREADS),
                &args,
            )?;
        }
        Ok(())
    }

    /// `ys[m][v] = ws[m] · x[v] + b_m` for two or three matrices of one type and width that share
    /// their input (a layer's query, key and value projections; its gate and up projections),
    /// in one launch, for `n_vec` vectors as in [`CudaDevice::matvec_batch`].
    pub fn matvec_many(
        &self,
        ws: &[&QuantMatrix],
        x: &Q8Activations,
        n_vec: usize,
        ys: &mut [&mut CudaSlice<f32>],
    ) -> Result<(), CudaError> {
        let unsupported = |what: String| CudaError::Unsupported {
            op: "matvec_many",
            what,
        };
        let Some(first) = ws.first() else {
            return Err(unsupported("no matrices".into()));
        };
        if ws.len() > 3 || ws.len() != ys.len() {
            return Err(unsupported(format!(
                "{} matrices and {} outputs (at most three of each, as many outputs as matrices)",
                ws.len(),
                ys.len()
            )));
        }
        if ws
            .iter()
            .any(|w| w.weight_type() != first.weight_type() || w.cols() != first.cols())
        {
            return Err(unsupported("matrices of different types or widths".into()));
        }
        if n_vec == 0 || n_vec > 65_535 {
            return Err(unsupported(format!("{n_vec} input vectors in one launch")));
        }
        need("matvec", "x", n_vec * first.cols(), x.len())?;
        let s = self.stream();
        let mut w_ptrs = [0u64; 3];
        let mut b_ptrs = [0u64; 3];
        let mut y_ptrs = [0u64; 3];
        let mut rows = [0usize; 3];
        for (m, (w, y)) in ws.iter().zip(ys.iter_mut()).enumerate() {
            need("matvec", "y", n_vec * w.rows(), y.len())?;
            w_ptrs[m] = ptr(w.data(), s);
            b_ptrs[m] = bias_ptr(w, s);
            y_ptrs[m] = ptr_mut(*y, s);
            rows[m] = w.rows();
        }
        let args = [
            Arg::Ptr(w_ptrs[0]),
            Arg::Ptr(w_ptrs[1]),
            Arg::Ptr(w_ptrs[2]),
            Arg::Ptr(b_ptrs[0]),
            Arg::Ptr(b_ptrs[1]),
            Arg::Ptr(b_ptrs[2]),
            Arg::Ptr(ptr(&x.q, s)),
            Arg::Ptr(ptr(&x.ds, s)),
            Arg::Ptr(ptr(&x.x, s)),
            Arg::Ptr(y_ptrs[0]),
            Arg::Ptr(y_ptrs[1]),
            Arg::Ptr(y_ptrs[2]),
            Arg::I32(dim("matvec", "rows", rows[0])?),
            Arg::I32(dim("matvec", "rows", rows[1])?),
            Arg::I32(dim("matvec", "rows", rows[2])?),
            Arg::I32(dim("matvec", "cols", first.cols())?),
        ];
        let blocks = grid_for(rows.iter().sum(), MATVEC_WARPS as u32)?;
        #[allow(clippy::cast_possible_truncation)] // n_vec <= 65535, checked above
        let grid = (blocks, n_vec as u32, 1);
        self.run(
            first.weight_type().matvec3_kernel(),
            cfg(grid, (MATVEC_WARPS * 32) as u32),
            &args,
        )
    }

    fn check_matvec(
        &self,
        w: &QuantMatrix,
        x: &Q8Activations,
        n_vec: usize,
        y: &mut impl DevicePtrMut<f32>,
    ) -> Result<MatvecLaunch, CudaError> {
        need("matvec", "x", n_vec * w.cols(), x.len())?;
        need("matvec", "y", n_vec * w.rows(), y.len())?;
        let s = self.stream();
        Ok(MatvecLaunch {
            ty: w.weight_type(),
            w: ptr(w.data(), s),
            bias: bias_ptr(w, s),
            rows: w.rows(),
            cols: w.cols(),
            xq: ptr(&x.q, s),
            xds: ptr(&x.ds, s),
            xf: ptr(&x.x, s),
            n_vec,
            y: ptr_mut(y, s),
            residual: 0,
            add_to: 0,
        })
    }

    /// Launches a matvec from device addresses.
    ///
    /// # Safety
    /// `m.w` must hold a `rows × cols` matrix of `m.ty` (padded to 16 bytes), `m.bias` (when not
    /// 0) `rows` f32, `xq`, `xds` and `xf` `n_vec` prepared vectors of `cols`, and `y`,
    /// `residual` and `add_to` (when not 0) `n_vec × rows` f32 each.
    unsafe fn matvec_raw(&self, m: &MatvecLaunch) -> Result<(), CudaError> {
        if m.n_vec == 0 || m.n_vec > 65_535 {
            return Err(CudaError::Unsupported {
                op: "matvec",
                what: format!("{} input vectors in one launch", m.n_vec),
            });
        }
        let args = [
            Arg::Ptr(m.w),
            Arg::Ptr(m.xq),
            Arg::Ptr(m.xds),
            Arg::Ptr(m.xf),
            Arg::Ptr(m.bias),
            Arg::Ptr(m.residual),
            Arg::Ptr(m.y),
            Arg::Ptr(m.add_to),
            Arg::I32(dim("matvec", "rows", m.rows)?),
            Arg::I32(dim("matvec", "cols", m.cols)?),
        ];
        let blocks = grid_for(m.rows, MATVEC_WARPS as u32)?;
        #[allow(clippy::cast_possible_truncation)] // n_vec <= 65535, checked above
        let grid = (blocks, m.n_vec as u32, 1);
        self.run(
            m.ty.matvec_kernel(),
            cfg(grid, (MATVEC_WARPS * 32) as u32),
            &args,
        )
    }

    /// `y = rms_norm(x) · w` over `rows` rows of `n` (a multiple of 32) and `y` quantized into
    /// `out`, in one launch (`x` and `y` are distinct buffers).
    pub fn rmsnorm_q8(
        &self,
        x: &impl DevicePtr<f32>,
        w: &impl DevicePtr<f32>,
        y: &mut impl DevicePtrMut<f32>,
        out: &mut Q8Activations,
        rows: usize,
        n: usize,
        eps: f32,
    ) -> Result<(), CudaError> {
        need("rmsnorm_q8", "x", rows * n, x.len())?;
        need("rmsnorm_q8", "w", n, w.len())?;
        need("rmsnorm_q8", "y", rows * n, y.len())?;
        need("rmsnorm_q8", "out", rows * n, out.len())?;
        let s = self.stream();
        let (xp, wp, yp) = (ptr(x, s), ptr(w, s), ptr_mut(y, s));
        let q = [
            ptr_mut(&mut out.q, s),
            ptr_mut(&mut out.ds, s),
            ptr_mut(&mut out.x, s),
        ];
        // SAFETY: the sizes were checked above.
        unsafe { self.rmsnorm_q8_raw(xp, wp, yp, q, rows, n, eps) }
    }

    /// # Safety
    /// `x` and `y` must hold `rows × n` f32, `w` `n` f32, and `q` the addresses of `rows × n`
    /// int8, `rows × n / 16` f32 and `rows × n` f32.
    #[allow(clippy::too_many_arguments)]
    unsafe fn rmsnorm_q8_raw(
        &self,
        x: u64,
        w: u64,
        y: u64,
        [q, ds, xf]: [u64; 3],
        rows: usize,
        n: usize,
        eps: f32,
    ) -> Result<(), CudaError> {
        if !n.is_multiple_of(32) || n == 0 {
            return Err(CudaError::Unsupported {
                op: "rmsnorm_q8",
                what: format!("rows of {n} values (a positive multiple of 32 is needed)"),
            });
        }
        let args = [
            Arg::Ptr(x),
            Arg::Ptr(w),
            Arg::Ptr(y),
            Arg::Ptr(q),
            Arg::Ptr(ds),
            Arg::Ptr(xf),
            Arg::I32(dim("rmsnorm_q8", "n", n)?),
            Arg::F32(eps),
        ];
        let too_many = |what: &str| CudaError::Unsupported {
            op: "rmsnorm_q8",
            what: format!("{rows} rows of {n} values: too many {what} for one launch"),
        };
        // One warp per group of 32; every block of a row reduces the whole row first.
        let threads = n.min(RMSNORM_Q8_THREADS);
        let groups = u32::try_from(n.div_ceil(threads)).map_err(|_| too_many("groups"))?;
        let rows = u32::try_from(rows)
            .ok()
            .filter(|&r| r <= 65_535)
            .ok_or_else(|| too_many("rows"))?;
        #[allow(clippy::cast_possible_truncation)] // at most RMSNORM_Q8_THREADS
        self.run("rmsnorm_q8", cfg((groups, rows, 1), threads as u32), &args)
    }

    /// `gate = act(gate) · up` over `n` values (a multiple of 32) and the result quantized into
    /// `out`, in one launch (SiLU, or GELU-tanh with `gelu`).
    pub fn glu_q8(
        &self,
        gate: &mut impl DevicePtrMut<f32>,
        up: &impl DevicePtr<f32>,
        out: &mut Q8Activations,
        n: usize,
        gelu: bool,
    ) -> Result<(), CudaError> {
        need("glu_q8", "gate", n, gate.len())?;
        need("glu_q8", "up", n, up.len())?;
        need("glu_q8", "out", n, out.len())?;
        let s = self.stream();
        let (g, u) = (ptr_mut(gate, s), ptr(up, s));
        let q = [
            ptr_mut(&mut out.q, s),
            ptr_mut(&mut out.ds, s),
            ptr_mut(&mut out.x, s),
        ];
        // SAFETY: the sizes were checked above.
        unsafe { self.glu_q8_raw(g, u, q, n, gelu) }
    }

    /// # Safety
    /// `gate` and `up` must hold `n` f32, and `q` the addresses of `n` int8, `n / 16` f32 and
    /// `n` f32.
    unsafe fn glu_q8_raw(
        &self,
        gate: u64,
        up: u64,
        [q, ds, xf]: [u64; 3],
        n: usize,
        gelu: bool,
    ) -> Result<(), CudaError> {
        if !n.is_multiple_of(32) {
            return Err(CudaError::Unsupported {
                op: "glu_q8",
                what: format!("{n} values is not a multiple of 32"),
            });
        }
        let args = [
            Arg::Ptr(gate),
            Arg::Ptr(up),
            Arg::Ptr(q),
            Arg::Ptr(ds),
            Arg::Ptr(xf),
            Arg::I32(dim("glu_q8", "n", n)?),
            Arg::I32(i32::from(gelu)),
        ];
        self.run(
            "glu_q8",
            cfg(
                (grid_for(n, ELEMENTWISE_THREADS)?, 1, 1),
                ELEMENTWISE_THREADS,
            ),
            &args,
        )
    }

    /// Rotary embedding of queries `q` (`[n_tok][n_q][head_dim]`) and keys `k`
    /// (`[n_tok][n_k][head_dim]`) in one launch, as [`CudaDevice::rope`] does to each;
    /// `p.n_heads` is not used.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_qk(
        &self,
        q: &mut impl DevicePtrMut<f32>,
        k: &mut impl DevicePtrMut<f32>,
        pos: &impl DevicePtr<i32>,
        freq_factors: Option<&dyn DevicePtr<f32>>,
        n_tok: usize,
        n_q: usize,
        n_k: usize,
        p: &RopeParams,
    ) -> Result<(), CudaError> {
        need("rope_qk", "q", n_tok * n_q * p.head_dim, q.len())?;
        need("rope_qk", "k", n_tok * n_k * p.head_dim, k.len())?;
        need("rope_qk", "pos", n_tok, pos.len())?;
        let s = self.stream();
        let ff = match freq_factors {
            Some(f) => {
                need("rope_qk", "freq_factors", p.n_rot / 2, f.len())?;
                f.device_ptr(s).0
            }
            None => 0,
        };
        let mut args = vec![
            Arg::Ptr(ptr_mut(q, s)),
            Arg::Ptr(ptr_mut(k, s)),
            Arg::Ptr(ptr(pos, s)),
            Arg::Ptr(ff),
            Arg::I32(dim("rope_qk", "n_tok", n_tok)?),
            Arg::I32(dim("rope_qk", "n_q", n_q)?),
            Arg::I32(dim("rope_qk", "n_k", n_k)?),
        ];
        args.extend(p.args("rope_qk")?);
        let grid = grid_for(n_tok * (n_q + n_k) * p.n_rot / 2, ELEMENTWISE_THREADS)?;
        self.run("rope_qk_f32", cfg((grid, 1, 1), ELEMENTWISE_THREADS), &args)
    }

    /// Per-head RMS norms of queries `q` (`[n_tok][n_q][head_dim]`, weights `q_norm`) and keys
    /// `k` (`[n_tok][n_k][head_dim]`, weights `k_norm`), each `head_dim` long, then their rotary
    /// embedding: [`CudaDevice::rmsnorm_in_place`] on rows of `head_dim` and
    /// [`CudaDevice::rope_qk`] in one launch, each head read and written once. `p.n_heads` is not
    /// used.
    #[allow(clippy::too_many_arguments)]
    pub fn qk_norm_rope(
        &self,
        q: &mut impl DevicePtrMut<f32>,
        k: &mut impl DevicePtrMut<f32>,
        q_norm: &impl DevicePtr<f32>,
        k_norm: &impl DevicePtr<f32>,
        eps: f32,
        pos: &impl DevicePtr<i32>,
        freq_factors: Option<&dyn DevicePtr<f32>>,
        n_tok: usize,
        n_q: usize,
        n_k: usize,
        p: &RopeParams,
    ) -> Result<(), CudaError> {
        const OP: &str = "qk_norm_rope";
        if p.head_dim > QK_NORM_ROPE_MAX_HEAD {
            return Err(CudaError::Unsupported {
                op: OP,
                what: format!("head_dim {} (at most {QK_NORM_ROPE_MAX_HEAD})", p.head_dim),
            });
        }
        need(OP, "q", n_tok * n_q * p.head_dim, q.len())?;
        need(OP, "k", n_tok * n_k * p.head_dim, k.len())?;
        need(OP, "q_norm", p.head_dim, q_norm.len())?;
        need(OP, "k_norm", p.head_dim, k_norm.len())?;
        need(OP, "pos", n_tok, pos.len())?;
        let blocks = n_tok * (n_q + n_k);
        if blocks == 0 {
            return Ok(());
        }
        let s = self.stream();
        let ff = match freq_factors {
            Some(f) => {
                need(OP, "freq_factors", p.n_rot / 2, f.len())?;
                f.device_ptr(s).0
            }
            None => 0,
        };
        let mut args = vec![
            Arg::Ptr(ptr_mut(q, s)),
            Arg::Ptr(ptr_mut(k, s)),
            Arg::Ptr(ptr(q_norm, s)),
            Arg::Ptr(ptr(k_norm, s)),
            Arg::F32(eps),
            Arg::Ptr(ptr(pos, s)),
            Arg::Ptr(ff),
            Arg::I32(dim(OP, "n_q", n_q)?),
            Arg::I32(dim(OP, "n_k", n_k)?),
        ];
        args.extend(p.args(OP)?);
        let grid = u32::try_from(blocks).map_err(|_| CudaError::Unsupported {
            op: OP,
            what: format!("{blocks} heads"),
        })?;
        self.run(
            "qk_norm_rope_f32",
            cfg((grid, 1, 1), QK_NORM_ROPE_THREADS),
            &args,
        )
    }

    /// Embedding lookup: `out[r, :] = scale · W[ids[r], :]` for `r < n_ids`, as f32; an id
    /// outside `0..rows` gives a row of zeros.
    pub fn get_rows(
        &self,
        w: &QuantMatrix,
        ids: &impl DevicePtr<i32>,
        n_ids: usize,
        scale: f32,
        out: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        need("get_rows", "ids", n_ids, ids.len())?;
        need("get_rows", "out", n_ids * w.cols(), out.len())?;
        let s = self.stream();
        let args = [
            Arg::Ptr(ptr(w.data(), s)),
            Arg::Ptr(ptr(ids, s)),
            Arg::I32(0),
            Arg::Ptr(ptr_mut(out, s)),
            Arg::I32(dim("get_rows", "n_ids", n_ids)?),
            Arg::I32(dim("get_rows", "cols", w.cols())?),
            Arg::F32(scale),
            Arg::I32(dim("get_rows", "rows", w.rows())?),
        ];
        let kernel = w.weight_type().get_rows_kernel(false);
        let grid = grid_for(n_ids * w.cols() / 32, ELEMENTWISE_THREADS)?;
        self.run(kernel, cfg((grid, 1, 1), ELEMENTWISE_THREADS), &args)
    }

    /// Dequantizes rows `row0 .. row0 + n_rows` of `W` to f16 (bit patterns), row-major, as the
    /// operand of a tensor-core product.
    pub fn dequantize_rows_f16(
        &self,
        w: &QuantMatrix,
        row0: usize,
        n_rows: usize,
        out: &mut impl DevicePtrMut<u16>,
    ) -> Result<(), CudaError> {
        if row0 + n_rows > w.rows() {
            return Err(CudaError::Shape {
                op: "dequantize_rows_f16",
                what: "matrix rows",
                expected: row0 + n_rows,
                got: w.rows(),
            });
        }
        need("dequantize_rows_f16", "out", n_rows * w.cols(), out.len())?;
        let s = self.stream();
        let args = [
            Arg::Ptr(ptr(w.data(), s)),
            Arg::Ptr(0),
            Arg::I32(dim("dequantize_rows_f16", "row0", row0)?),
            Arg::Ptr(ptr_mut(out, s)),
            Arg::I32(dim("dequantize_rows_f16", "n_rows", n_rows)?),
            Arg::I32(dim("dequantize_rows_f16", "cols", w.cols())?),
            Arg::F32(1.0),
            Arg::I32(dim("dequantize_rows_f16", "rows", w.rows())?),
        ];
        let kernel = w.weight_type().get_rows_kernel(true);
        let grid = grid_for(n_rows * w.cols() / 32, ELEMENTWISE_THREADS)?;
        self.run(kernel, cfg((grid, 1, 1), ELEMENTWISE_THREADS), &args)
    }

    /// `y = f16(x)` over `n` values (bit patterns): activations for [`CudaDevice::matmul`].
    pub fn convert_f16(
        &self,
        x: &impl DevicePtr<f32>,
        y: &mut impl DevicePtrMut<u16>,
        n: usize,
    ) -> Result<(), CudaError> {
        need("convert_f16", "x", n, x.len())?;
        need("convert_f16", "y", n, y.len())?;
        let s = self.stream();
        let args = [
            Arg::Ptr(ptr(x, s)),
            Arg::Ptr(ptr_mut(y, s)),
            Arg::I32(dim("convert_f16", "n", n)?),
        ];
        self.run(
            "convert_f32_f16",
            cfg(
                (grid_for(n, ELEMENTWISE_THREADS)?, 1, 1),
                ELEMENTWISE_THREADS,
            ),
            &args,
        )
    }

    /// Prompt-sized product on the tensor cores: `out[t][r] = Σ_k W[r][k] · x[t][k] + b[r]` for
    /// `n` tokens, `x` f16 `[n][cols]`, `out` f32 `[n][rows]` (`b` the matrix's bias, if any).
    /// `W` is dequantized to f16 slab by slab into `scratch` (any size of at least one row;
    /// larger slabs mean fewer, larger products) and multiplied with cuBLAS, so no dequantized
    /// copy of the model is kept.
    pub fn matmul(
        &self,
        w: &QuantMatrix,
        x: &impl DevicePtr<u16>,
        n: usize,
        out: &mut impl DevicePtrMut<f32>,
        scratch: &mut cudarc::driver::CudaSlice<u16>,
    ) -> Result<(), CudaError> {
        let rows = w.rows();
        self.matmul_rows(w, 0, rows, x, n, out, scratch)?;
        match w.bias() {
            Some(bias) if n > 0 => {
                let s = self.stream();
                let args = [
                    Arg::Ptr(ptr_mut(out, s)),
                    Arg::Ptr(ptr(bias, s)),
                    Arg::I32(dim("matmul", "rows", rows)?),
                    Arg::I32(dim("matmul", "n", n * rows)?),
                ];
                let grid = grid_for(n * rows, ELEMENTWISE_THREADS)?;
                self.run(
                    "add_bias_f32",
                    cfg((grid, 1, 1), ELEMENTWISE_THREADS),
                    &args,
                )
            }
            _ => Ok(()),
        }
    }

    /// [`CudaDevice::matmul`] with rows `row0 .. row0 + n_rows` of `W` only (one expert of a
    /// stack), without the bias: `out[t][r] = Σ_k W[row0 + r][k] · x[t][k]`, `out` f32
    /// `[n][n_rows]`.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_rows(
        &self,
        w: &QuantMatrix,
        row0: usize,
        n_rows: usize,
        x: &impl DevicePtr<u16>,
        n: usize,
        out: &mut impl DevicePtrMut<f32>,
        scratch: &mut cudarc::driver::CudaSlice<u16>,
    ) -> Result<(), CudaError> {
        let cols = w.cols();
        if row0 + n_rows > w.rows() {
            return Err(CudaError::Shape {
                op: "matmul",
                what: "matrix rows",
                expected: row0 + n_rows,
                got: w.rows(),
            });
        }
        need("matmul", "x", n * cols, x.len())?;
        need("matmul", "out", n * n_rows, out.len())?;
        need("matmul", "scratch", cols, scratch.len())?;
        if n == 0 || n_rows == 0 {
            return Ok(());
        }
        let blas = self.blas()?;
        // cuBLAS calls cannot be part of a replayed step graph.
        self.untracked_work()?;
        let slab = (scratch.len() / cols).min(n_rows);
        let s = self.stream();
        let xp = ptr(x, s);
        let op = ptr_mut(out, s);
        let mut r0 = 0;
        while r0 < n_rows {
            let m = slab.min(n_rows - r0);
            self.dequantize_rows_f16(w, row0 + r0, m, scratch)?;
            let wp = ptr_mut(scratch, s);
            // SAFETY: scratch holds m × cols f16 values (checked by dequantize_rows_f16), x
            // holds n × cols, and out from column r0 holds (n - 1) · n_rows + m f32 values
            // because out has n × n_rows and r0 + m <= n_rows.
            unsafe {
                gemm(
                    blas,
                    GemmInput::F16,
                    wp,
                    xp,
                    op + (r0 * size_of::<f32>()) as u64,
                    dim("matmul", "rows", m)?,
                    dim("matmul", "n", n)?,
                    dim("matmul", "cols", cols)?,
                    dim("matmul", "rows", n_rows)?,
                )?;
            }
            r0 += m;
        }
        Ok(())
    }

    /// RMSNorm of `rows` rows of `n`: `y = x / sqrt(mean(x²) + eps) · w`, `w` of `n`.
    pub fn rmsnorm(
        &self,
        x: &impl DevicePtr<f32>,
        w: &impl DevicePtr<f32>,
        y: &mut impl DevicePtrMut<f32>,
        rows: usize,
        n: usize,
        eps: f32,
    ) -> Result<(), CudaError> {
        need("rmsnorm", "x", rows * n, x.len())?;
        need("rmsnorm", "w", n, w.len())?;
        need("rmsnorm", "y", rows * n, y.len())?;
        let s = self.stream();
        let (xp, yp) = (ptr(x, s), ptr_mut(y, s));
        self.launch_rmsnorm(xp, ptr(w, s), yp, rows, n, eps)
    }

    /// RMSNorm in place over `rows` runs of `n` values of `x`, each multiplied by `w`.
    pub fn rmsnorm_in_place(
        &self,
        x: &mut impl DevicePtrMut<f32>,
        w: &impl DevicePtr<f32>,
        rows: usize,
        n: usize,
        eps: f32,
    ) -> Result<(), CudaError> {
        need("rmsnorm", "x", rows * n, x.len())?;
        need("rmsnorm", "w", n, w.len())?;
        let s = self.stream();
        let xp = ptr_mut(x, s);
        self.launch_rmsnorm(xp, ptr(w, s), xp, rows, n, eps)
    }

    /// Queues `rmsnorm_f32` on device addresses whose sizes the caller checked (`y` may be
    /// `x`: each block reads its row whole before writing it).
    fn launch_rmsnorm(
        &self,
        x: u64,
        w: u64,
        y: u64,
        rows: usize,
        n: usize,
        eps: f32,
    ) -> Result<(), CudaError> {
        let args = [
            Arg::Ptr(x),
            Arg::Ptr(w),
            Arg::Ptr(y),
            Arg::I32(dim("rmsnorm", "n", n)?),
            Arg::F32(eps),
        ];
        let grid = u32::try_from(rows).map_err(|_| CudaError::Unsupported {
            op: "rmsnorm",
            what: format!("{rows} rows"),
        })?;
        self.run("rmsnorm_f32", cfg((grid, 1, 1), REDUCE_THREADS), &args)
    }

    /// `gate = act(gate) · up` over `n` values, in place: SiLU with `gelu == false`, GELU
    /// (tanh form) otherwise.
    pub fn glu_in_place(
        &self,
        gate: &mut impl DevicePtrMut<f32>,
        up: &impl DevicePtr<f32>,
        n: usize,
        gelu: bool,
    ) -> Result<(), CudaError> {
        need("glu", "gate", n, gate.len())?;
        need("glu", "up", n, up.len())?;
        let s = self.stream();
        let gp = ptr_mut(gate, s);
        let kernel = if gelu { "geglu_f32" } else { "swiglu_f32" };
        self.binary(kernel, gp, ptr(up, s), gp, n)
    }

    /// `out[r, :] = x[idx[r], :]` for `n_rows` rows of `cols` values; every index must be a
    /// row of `x` (`x_rows` of them), which the caller checks on the host.
    pub fn copy_rows(
        &self,
        x: &impl DevicePtr<f32>,
        x_rows: usize,
        idx: &impl DevicePtr<i32>,
        n_rows: usize,
        cols: usize,
        out: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        need("copy_rows", "x", x_rows * cols, x.len())?;
        need("copy_rows", "idx", n_rows, idx.len())?;
        need("copy_rows", "out", n_rows * cols, out.len())?;
        let s = self.stream();
        let args = [
            Arg::Ptr(ptr(x, s)),
            Arg::Ptr(ptr(idx, s)),
            Arg::Ptr(ptr_mut(out, s)),
            Arg::I32(dim("copy_rows", "cols", cols)?),
        ];
        let rows = u32::try_from(n_rows)
            .ok()
            .filter(|&r| r > 0 && r <= 65_535)
            .ok_or_else(|| CudaError::Unsupported {
                op: "copy_rows",
                what: format!("{n_rows} rows"),
            })?;
        let grid = (grid_for(cols, ELEMENTWISE_THREADS)?, rows, 1);
        self.run("copy_rows_f32", cfg(grid, ELEMENTWISE_THREADS), &args)
    }

    /// Rotary embedding in place on `x` = `[n_tok][n_heads][head_dim]`, token `t` at position
    /// `pos[t]`; `freq_factors` (`n_rot / 2` values) divide the pair frequencies (Llama 3,
    /// LongRoPE), and `p` sets the YaRN ramp and the magnitude scale.
    pub fn rope(
        &self,
        x: &mut impl DevicePtrMut<f32>,
        pos: &impl DevicePtr<i32>,
        freq_factors: Option<&dyn DevicePtr<f32>>,
        n_tok: usize,
        p: &RopeParams,
    ) -> Result<(), CudaError> {
        need("rope", "x", n_tok * p.n_heads * p.head_dim, x.len())?;
        need("rope", "pos", n_tok, pos.len())?;
        let s = self.stream();
        let ff = match freq_factors {
            Some(f) => {
                need("rope", "freq_factors", p.n_rot / 2, f.len())?;
                f.device_ptr(s).0
            }
            None => 0,
        };
        let mut args = vec![
            Arg::Ptr(ptr_mut(x, s)),
            Arg::Ptr(ptr(pos, s)),
            Arg::Ptr(ff),
            Arg::I32(dim("rope", "n_tok", n_tok)?),
            Arg::I32(dim("rope", "n_heads", p.n_heads)?),
        ];
        args.extend(p.args("rope")?);
        let grid = grid_for(n_tok * p.n_heads * p.n_rot / 2, ELEMENTWISE_THREADS)?;
        self.run("rope_f32", cfg((grid, 1, 1), ELEMENTWISE_THREADS), &args)
    }

    /// `x = cap · tanh(x / cap)` over `n` values, in place (logit soft-capping).
    pub fn softcap(
        &self,
        x: &mut impl DevicePtrMut<f32>,
        cap: f32,
        n: usize,
    ) -> Result<(), CudaError> {
        need("softcap", "x", n, x.len())?;
        let s = self.stream();
        let args = [
            Arg::Ptr(ptr_mut(x, s)),
            Arg::F32(cap),
            Arg::I32(dim("softcap", "n", n)?),
        ];
        self.run(
            "softcap_f32",
            cfg(
                (grid_for(n, ELEMENTWISE_THREADS)?, 1, 1),
                ELEMENTWISE_THREADS,
            ),
            &args,
        )
    }

    fn binary(
        &self,
        kernel: &'static str,
        a: u64,
        b: u64,
        y: u64,
        n: usize,
    ) -> Result<(), CudaError> {
        let args = [
            Arg::Ptr(a),
            Arg::Ptr(b),
            Arg::Ptr(y),
            Arg::I32(dim(kernel, "n", n)?),
        ];
        self.run(
            kernel,
            cfg(
                (grid_for(n, ELEMENTWISE_THREADS)?, 1, 1),
                ELEMENTWISE_THREADS,
            ),
            &args,
        )
    }

    /// `y = a + b` over `n` values.
    pub fn add(
        &self,
        a: &impl DevicePtr<f32>,
        b: &impl DevicePtr<f32>,
        y: &mut impl DevicePtrMut<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        need("add", "a", n, a.len())?;
        need("add", "b", n, b.len())?;
        need("add", "y", n, y.len())?;
        let s = self.stream();
        self.binary("add_f32", ptr(a, s), ptr(b, s), ptr_mut(y, s), n)
    }

    /// `y += b` over `n` values (the residual connection).
    pub fn add_assign(
        &self,
        y: &mut impl DevicePtrMut<f32>,
        b: &impl DevicePtr<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        need("add_assign", "b", n, b.len())?;
        need("add_assign", "y", n, y.len())?;
        let s = self.stream();
        let yp = ptr_mut(y, s);
        self.binary("add_f32", yp, ptr(b, s), yp, n)
    }

    /// `y = a · b` element-wise over `n` values.
    pub fn mul(
        &self,
        a: &impl DevicePtr<f32>,
        b: &impl DevicePtr<f32>,
        y: &mut impl DevicePtrMut<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        need("mul", "a", n, a.len())?;
        need("mul", "b", n, b.len())?;
        need("mul", "y", n, y.len())?;
        let s = self.stream();
        self.binary("mul_f32", ptr(a, s), ptr(b, s), ptr_mut(y, s), n)
    }

    /// `y = silu(gate) · up` over `n` values (Llama's feed-forward gate).
    pub fn swiglu(
        &self,
        gate: &impl DevicePtr<f32>,
        up: &impl DevicePtr<f32>,
        y: &mut impl DevicePtrMut<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        need("swiglu", "gate", n, gate.len())?;
        need("swiglu", "up", n, up.len())?;
        need("swiglu", "y", n, y.len())?;
        let s = self.stream();
        self.binary("swiglu_f32", ptr(gate, s), ptr(up, s), ptr_mut(y, s), n)
    }

    /// `y = gelu_tanh(gate) · up` over `n` values (Gemma's feed-forward gate).
    pub fn geglu(
        &self,
        gate: &impl DevicePtr<f32>,
        up: &impl DevicePtr<f32>,
        y: &mut impl DevicePtrMut<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        need("geglu", "gate", n, gate.len())?;
        need("geglu", "up", n, up.len())?;
        need("geglu", "y", n, y.len())?;
        let s = self.stream();
        self.binary("geglu_f32", ptr(gate, s), ptr(up, s), ptr_mut(y, s), n)
    }

    /// `y = a · s` over `n` values.
    pub fn scale(
        &self,
        a: &impl DevicePtr<f32>,
        s: f32,
        y: &mut impl DevicePtrMut<f32>,
        n: usize,
    ) -> Result<(), CudaError> {
        need("scale", "a", n, a.len())?;
        need("scale", "y", n, y.len())?;
        let st = self.stream();
        let args = [
            Arg::Ptr(ptr(a, st)),
            Arg::F32(s),
            Arg::Ptr(ptr_mut(y, st)),
            Arg::I32(dim("scale", "n", n)?),
        ];
        self.run(
            "scale_f32",
            cfg(
                (grid_for(n, ELEMENTWISE_THREADS)?, 1, 1),
                ELEMENTWISE_THREADS,
            ),
            &args,
        )
    }

    /// `out[r]` = index of the largest of row `r` of `x` (`rows × n`); lowest index on ties.
    pub fn argmax(
        &self,
        x: &impl DevicePtr<f32>,
        rows: usize,
        n: usize,
        out: &mut impl DevicePtrMut<i32>,
    ) -> Result<(), CudaError> {
        self.launch_argmax(x, rows, n, 0, out)
    }

    /// [`CudaDevice::argmax`] over the columns `allowed` lets through: bit `k % 32` of word
    /// `k / 32` for column `k` (words as i32 bit patterns), the same mask for every row; a row
    /// with no allowed finite value gives -1.
    pub fn argmax_masked(
        &self,
        x: &impl DevicePtr<f32>,
        rows: usize,
        n: usize,
        allowed: &impl DevicePtr<i32>,
        out: &mut impl DevicePtrMut<i32>,
    ) -> Result<(), CudaError> {
        need("argmax", "allowed", n.div_ceil(32), allowed.len())?;
        let mask = ptr(allowed, self.stream());
        self.launch_argmax(x, rows, n, mask, out)
    }

    fn launch_argmax(
        &self,
        x: &impl DevicePtr<f32>,
        rows: usize,
        n: usize,
        allowed: u64,
        out: &mut impl DevicePtrMut<i32>,
    ) -> Result<(), CudaError> {
        need("argmax", "x", rows * n, x.len())?;
        need("argmax", "out", rows, out.len())?;
        let s = self.stream();
        let args = [
            Arg::Ptr(ptr(x, s)),
            Arg::I32(dim("argmax", "n", n)?),
            Arg::Ptr(allowed),
            Arg::Ptr(ptr_mut(out, s)),
        ];
        let grid = u32::try_from(rows).map_err(|_| CudaError::Unsupported {
            op: "argmax",
            what: format!("{rows} rows"),
        })?;
        self.run("argmax_f32", cfg((grid, 1, 1), ARGMAX_THREADS), &args)
    }

    fn check_batch(
        op: &'static str,
        layer: &PagedKvLayer,
        batch: &QueryBatch<'_>,
    ) -> Result<(), CudaError> {
        need(op, "q_seq", batch.n_queries, batch.q_seq.len())?;
        need(op, "pos", batch.n_queries, batch.pos.len())?;
        need(op, "block_table", batch.max_blocks, batch.block_table.len())?;
        if batch.n_queries == 0 || batch.max_blocks == 0 || layer.n_blocks() == 0 {
            return Err(CudaError::Unsupported {
                op,
                what: "an empty batch".into(),
            });
        }
        Ok(())
    }

    /// Writes each query's new K and V (`[n_queries][n_kv_heads][head_dim]`, f32) into the
    /// cache slot of its position; `batch.q_seq` must index rows that exist in
    /// `batch.block_table` (the kernel ignores table entries outside the cache).
    pub fn kv_append(
        &self,
        layer: &mut PagedKvLayer,
        k: &impl DevicePtr<f32>,
        v: &impl DevicePtr<f32>,
        batch: &QueryBatch<'_>,
    ) -> Result<(), CudaError> {
        Self::check_batch("kv_append", layer, batch)?;
        let n = batch.n_queries * layer.n_kv_heads() * layer.head_dim();
        need("kv_append", "k", n, k.len())?;
        need("kv_append", "v", n, v.len())?;
        let s = self.stream();
        let args = [
            Arg::Ptr(ptr(k, s)),
            Arg::Ptr(ptr(v, s)),
            Arg::Ptr(ptr_mut(&mut layer.k, s)),
            Arg::Ptr(ptr_mut(&mut layer.v, s)),
            Arg::Ptr(ptr(batch.block_table, s)),
            Arg::Ptr(ptr(batch.q_seq, s)),
            Arg::Ptr(ptr(batch.pos, s)),
            Arg::I32(dim("kv_append", "n_kv_heads", layer.n_kv_heads())?),
            Arg::I32(dim("kv_append", "head_dim", layer.head_dim())?),
            Arg::I32(dim("kv_append", "block_size", layer.block_size())?),
            Arg::I32(dim("kv_append", "max_blocks", batch.max_blocks)?),
            Arg::I32(dim("kv_append", "n_blocks", layer.n_blocks())?),
        ];
        let grid = (
            u32::try_from(batch.n_queries).unwrap_or(u32::MAX),
            u32::try_from(layer.n_kv_heads()).unwrap_or(u32::MAX),
            1,
        );
        self.run("kv_append", cfg(grid, layer.head_dim() as u32), &args)
    }

    /// Attention of each query (`q` = `[n_queries][n_heads][head_dim]`, f32) over its
    /// sequence's cached tokens, into `out` (same shape), and, with `quantized`, `out`
    /// quantized into it as [`CudaDevice::quantize_q8`] would, in the same launch. The tokens
    /// are split `n_splits` ways (flash-decoding); more splits keep the GPU busy when there are
    /// few queries.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        layer: &PagedKvLayer,
        q: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<f32>,
        quantized: Option<&mut Q8Activations>,
        p: &AttentionParams,
        batch: &QueryBatch<'_>,
        n_splits: usize,
        ws: &mut AttentionWorkspace,
    ) -> Result<(), CudaError> {
        Self::check_batch("attention", layer, batch)?;
        if p.n_kv_heads != layer.n_kv_heads() || p.head_dim != layer.head_dim() {
            return Err(CudaError::Unsupported {
                op: "attention",
                what: format!(
                    "{} kv heads of {} for a cache of {} of {}",
                    p.n_kv_heads,
                    p.head_dim,
                    layer.n_kv_heads(),
                    layer.head_dim()
                ),
            });
        }
        let group = if p.n_kv_heads > 0 && p.n_heads.is_multiple_of(p.n_kv_heads) {
            p.n_heads / p.n_kv_heads
        } else {
            0
        };
        let maxg = match group {
            1..=4 => 4,
            5..=8 => 8,
            _ => {
                return Err(CudaError::Unsupported {
                    op: "attention",
                    what: format!("{} query heads over {} kv heads", p.n_heads, p.n_kv_heads),
                });
            }
        };
        if n_splits == 0 {
            return Err(CudaError::Unsupported {
                op: "attention",
                what: "zero splits".into(),
            });
        }
        let n = batch.n_queries * p.n_heads * p.head_dim;
        need("attention", "q", n, q.len())?;
        need("attention", "out", n, out.len())?;
        if let Some(q8) = &quantized {
            need("attention", "quantized output", n, q8.len())?;
        }
        if !(p.softcap >= 0.0 && p.softcap.is_finite()) {
            return Err(CudaError::Unsupported {
                op: "attention",
                what: format!("a soft cap of {}", p.softcap),
            });
        }
        if p.head_dim == 0 || !p.head_dim.is_multiple_of(32) || p.head_dim > 1024 {
            return Err(CudaError::Unsupported {
                op: "attention",
                what: format!("heads of {} dimensions", p.head_dim),
            });
        }
        let nparts = n_splits * ATT_WARPS;
        if !ws.fits(batch.n_queries * p.n_heads * nparts, p.head_dim) {
            return Err(CudaError::Shape {
                op: "attention",
                what: "workspace partials",
                expected: batch.n_queries * p.n_heads * nparts,
                got: ws.ml.len() / 2,
            });
        }
        let s = self.stream();
        let split_args = [
            Arg::Ptr(ptr(q, s)),
            Arg::Ptr(ptr(&layer.k, s)),
            Arg::Ptr(ptr(&layer.v, s)),
            Arg::Ptr(ptr(batch.block_table, s)),
            Arg::Ptr(ptr(batch.q_seq, s)),
            Arg::Ptr(ptr(batch.pos, s)),
            Arg::Ptr(ptr_mut(&mut ws.acc, s)),
            Arg::Ptr(ptr_mut(&mut ws.ml, s)),
            Arg::I32(dim("attention", "n_heads", p.n_heads)?),
            Arg::I32(dim("attention", "n_kv_heads", p.n_kv_heads)?),
            Arg::I32(dim("attention", "block_size", layer.block_size())?),
            Arg::I32(dim("attention", "max_blocks", batch.max_blocks)?),
            Arg::I32(dim("attention", "n_blocks", layer.n_blocks())?),
            Arg::F32(p.scale),
            Arg::I32(dim("attention", "window", p.window)?),
            Arg::F32(p.softcap),
        ];
        let too_big = |what: &str| CudaError::Unsupported {
            op: "attention",
            what: format!("grid dimension {what}"),
        };
        let grid = (
            u32::try_from(p.n_kv_heads).map_err(|_| too_big("kv heads"))?,
            u32::try_from(n_splits).map_err(|_| too_big("splits"))?,
            u32::try_from(batch.n_queries).map_err(|_| too_big("queries"))?,
        );
        let kernel = format!("attn_split_d{}_g{maxg}", p.head_dim);
        self.run(&kernel, cfg(grid, (ATT_WARPS * 32) as u32), &split_args)?;
        let (xq, xds, xf) = match quantized {
            Some(q8) => (
                ptr_mut(&mut q8.q, s),
                ptr_mut(&mut q8.ds, s),
                ptr_mut(&mut q8.x, s),
            ),
            None => (0, 0, 0),
        };
        let combine_args = [
            Arg::Ptr(ptr(&ws.acc, s)),
            Arg::Ptr(ptr(&ws.ml, s)),
            Arg::Ptr(ptr_mut(out, s)),
            Arg::Ptr(xq),
            Arg::Ptr(xds),
            Arg::Ptr(xf),
            Arg::I32(dim("attention", "n_heads", p.n_heads)?),
            Arg::I32(dim("attention", "head_dim", p.head_dim)?),
            Arg::I32(dim("attention", "parts", nparts)?),
        ];
        let grid = (
            u32::try_from(p.n_heads).map_err(|_| too_big("heads"))?,
            grid.2,
            1,
        );
        self.run("attn_combine", cfg(grid, p.head_dim as u32), &combine_args)
    }
}
