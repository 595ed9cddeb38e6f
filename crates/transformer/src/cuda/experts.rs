//! Mixture-of-experts operations: routing, products with the chosen experts and the weighted
//! sum of their outputs, plus the row gathers and scatters that let a prompt's tokens be
//! multiplied expert by expert on the tensor cores.

use cudarc::driver::{DevicePtr, DevicePtrMut};

use super::ops::{ELEMENTWISE_THREADS, MATVEC_WARPS, cfg, dim, grid_for, need, ptr, ptr_mut};
use super::{CudaDevice, CudaError, Q8Activations, QuantMatrix};
use crate::config::MAX_EXPERTS;
use crate::cuda::launch::Arg;

/// Threads of `moe_route`: one warp per token.
const ROUTE_THREADS: u32 = 32;

fn unsupported(op: &'static str, what: String) -> CudaError {
    CudaError::Unsupported { op, what }
}

/// A grid dimension of at most 65 535 (the limit of `gridDim.y`).
fn grid_y(op: &'static str, n: usize) -> Result<u32, CudaError> {
    u32::try_from(n)
        .ok()
        .filter(|&v| (1..=65_535).contains(&v))
        .ok_or_else(|| unsupported(op, format!("{n} rows in one launch")))
}

impl CudaDevice {
    /// Routes `n_tok` tokens: from the router's `logits` (`[n_tok][n_expert]`), the softmax's
    /// `k` largest entries (lowest index first on ties) into `choice` (`[n_tok][2k]`: the
    /// indices as f32, then the weights), renormalized to sum 1 when `norm` and multiplied by
    /// `scale`.
    #[allow(clippy::too_many_arguments)]
    pub fn moe_route(
        &self,
        logits: &impl DevicePtr<f32>,
        n_tok: usize,
        n_expert: usize,
        k: usize,
        norm: bool,
        scale: f32,
        choice: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        if n_expert == 0 || n_expert > MAX_EXPERTS || k == 0 || k > n_expert {
            return Err(unsupported(
                "moe_route",
                format!("{k} of {n_expert} experts (at most {MAX_EXPERTS})"),
            ));
        }
        need("moe_route", "logits", n_tok * n_expert, logits.len())?;
        need("moe_route", "choice", n_tok * 2 * k, choice.len())?;
        if n_tok == 0 {
            return Ok(());
        }
        let s = self.stream();
        let args = [
            Arg::Ptr(ptr(logits, s)),
            Arg::Ptr(ptr_mut(choice, s)),
            Arg::I32(dim("moe_route", "n_expert", n_expert)?),
            Arg::I32(dim("moe_route", "k", k)?),
            Arg::I32(i32::from(norm)),
            Arg::F32(scale),
        ];
        let grid = u32::try_from(n_tok)
            .map_err(|_| unsupported("moe_route", format!("{n_tok} tokens")))?;
        self.run("moe_route", cfg((grid, 1, 1), ROUTE_THREADS), &args)
    }

    /// Decode-sized products with the chosen experts: `experts` stacks `n_expert` matrices of
    /// `rows = experts.rows() / n_expert` rows; for token `t` and slot `j` of `choice`
    /// ([`CudaDevice::moe_route`]), `y[t·k + j] = expert(choice[t][j]) · x[v]` with `v = t·k + j`
    /// when `x_per_slot`, else `v = t`. The expert indices are read on the device, so one launch
    /// serves any routing (and a replayed graph), and only the chosen experts' weights are read.
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_experts(
        &self,
        experts: &QuantMatrix,
        n_expert: usize,
        choice: &impl DevicePtr<f32>,
        n_tok: usize,
        k: usize,
        x: &Q8Activations,
        x_per_slot: bool,
        y: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        if n_expert == 0 || !experts.rows().is_multiple_of(n_expert) || k == 0 {
            return Err(unsupported(
                "matvec_experts",
                format!("{} rows as {n_expert} experts, {k} used", experts.rows()),
            ));
        }
        let (rows, cols) = (experts.rows() / n_expert, experts.cols());
        let slots = n_tok * k;
        let x_rows = if x_per_slot { slots } else { n_tok };
        need("matvec_experts", "choice", n_tok * 2 * k, choice.len())?;
        need("matvec_experts", "x", x_rows * cols, x.len())?;
        need("matvec_experts", "y", slots * rows, y.len())?;
        if n_tok == 0 {
            return Ok(());
        }
        let s = self.stream();
        let args = [
            Arg::Ptr(ptr(experts.data(), s)),
            Arg::Ptr(ptr(choice, s)),
            Arg::Ptr(ptr(&x.q, s)),
            Arg::Ptr(ptr(&x.ds, s)),
            Arg::Ptr(ptr(&x.x, s)),
            Arg::Ptr(ptr_mut(y, s)),
            Arg::I32(dim("matvec_experts", "rows", rows)?),
            Arg::I32(dim("matvec_experts", "cols", cols)?),
            Arg::I32(dim("matvec_experts", "n_expert", n_expert)?),
            Arg::I32(dim("matvec_experts", "k", k)?),
            Arg::I32(i32::from(x_per_slot)),
        ];
        let grid = (
            grid_for(rows, MATVEC_WARPS as u32)?,
            grid_y("matvec_experts", slots)?,
            1,
        );
        #[allow(clippy::cast_possible_truncation)] // 128 threads
        self.run(
            experts.weight_type().matvec_experts_kernel(),
            cfg(grid, (MATVEC_WARPS * 32) as u32),
            &args,
        )
    }

    /// `out[t] = Σ_j weight[t][j] · y[t·k + j]` for `n_tok` tokens of `d` values, the weights
    /// those of `choice` ([`CudaDevice::moe_route`]); `out` is written, not added to.
    #[allow(clippy::too_many_arguments)]
    pub fn moe_combine(
        &self,
        choice: &impl DevicePtr<f32>,
        n_tok: usize,
        k: usize,
        y: &impl DevicePtr<f32>,
        d: usize,
        out: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), CudaError> {
        need("moe_combine", "choice", n_tok * 2 * k, choice.len())?;
        need("moe_combine", "y", n_tok * k * d, y.len())?;
        need("moe_combine", "out", n_tok * d, out.len())?;
        if n_tok == 0 || d == 0 {
            return Ok(());
        }
        let s = self.stream();
        let args = [
            Arg::Ptr(ptr(choice, s)),
            Arg::Ptr(ptr(y, s)),
            Arg::Ptr(ptr_mut(out, s)),
            Arg::I32(dim("moe_combine", "d", d)?),
            Arg::I32(dim("moe_combine", "k", k)?),
        ];
        let grid = (
            grid_for(d, ELEMENTWISE_THREADS)?,
            grid_y("moe_combine", n_tok)?,
            1,
        );
        self.run("moe_combine", cfg(grid, ELEMENTWISE_THREADS), &args)
    }

    /// `out[r, :] = x[idx[r], :]` for `n_rows` rows of `cols` f16 values (bit patterns); every
    /// index must be a row of `x` (`x_rows` of them), which the caller checks on the host.
    pub fn copy_rows_f16(
        &self,
        x: &impl DevicePtr<u16>,
        x_rows: usize,
        idx: &impl DevicePtr<i32>,
        n_rows: usize,
        cols: usize,
        out: &mut impl DevicePtrMut<u16>,
    ) -> Result<(), CudaError> {
        need("copy_rows_f16", "x", x_rows * cols, x.len())?;
        need("copy_rows_f16", "idx", n_rows, idx.len())?;
        need("copy_rows_f16", "out", n_rows * cols, out.len())?;
        let s = self.stream();
        let args = [
            Arg::Ptr(ptr(x, s)),
            Arg::Ptr(ptr(idx, s)),
            Arg::Ptr(ptr_mut(out, s)),
            Arg::I32(dim("copy_rows_f16", "cols", cols)?),
        ];
        let grid = (
            grid_for(cols, ELEMENTWISE_THREADS)?,
            grid_y("copy_rows_f16", n_rows)?,
            1,
        );
        self.run("copy_rows_f16", cfg(grid, ELEMENTWISE_THREADS), &args)
    }

    /// `out[idx[r], :] = x[r, :]` for `n_rows` rows of `cols` f32 values; every index must be a
    /// row of `out` (`out_rows` of them), which the caller checks on the host.
    pub fn scatter_rows(
        &self,
        x: &impl DevicePtr<f32>,
        n_rows: usize,
        idx: &impl DevicePtr<i32>,
        cols: usize,
        out: &mut impl DevicePtrMut<f32>,
        out_rows: usize,
    ) -> Result<(), CudaError> {
        need("scatter_rows", "x", n_rows * cols, x.len())?;
        need("scatter_rows", "idx", n_rows, idx.len())?;
        need("scatter_rows", "out", out_rows * cols, out.len())?;
        let s = self.stream();
        let args = [
            Arg::Ptr(ptr(x, s)),
            Arg::Ptr(ptr(idx, s)),
            Arg::Ptr(ptr_mut(out, s)),
            Arg::I32(dim("scatter_rows", "cols", cols)?),
        ];
        let grid = (
            grid_for(cols, ELEMENTWISE_THREADS)?,
            grid_y("scatter_rows", n_rows)?,
            1,
        );
        self.run("scatter_rows_f32", cfg(grid, ELEMENTWISE_THREADS), &args)
    }
}
