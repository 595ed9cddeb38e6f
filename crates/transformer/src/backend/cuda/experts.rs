//! Products with the experts of a mixture-of-experts layer on the CUDA backend. Decode-sized
//! batches take one launch that reads each slot's expert from device memory (so the step
//! graph holds it); prompts copy the routing to the host, gather each expert's tokens and
//! multiply them on the tensor cores, expert by expert, reading only the chosen experts.

use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};

use super::CudaBackend;
use super::gpu::{CudaBuffer, CudaPrepared, Form, Shared, check, scratch_len, shape_error};
use crate::cuda::{CudaError, QuantMatrix};
use crate::error::Result;

/// Buffers of the prompt-sized expert products; they grow to the largest batch once.
#[derive(Debug, Default)]
pub(crate) struct ExpertScratch {
    choice: Vec<f32>,          // (B, 2k) the routing, copied to the host
    slots: Vec<(u32, u32)>,    // (expert, slot) of every routed slot, sorted by expert
    rows: Vec<i32>,            // input rows of the sorted slots, then their output rows
    x: Option<CudaSlice<u16>>, // one expert's input rows, gathered (f16)
    y: Option<CudaSlice<f32>>, // their products
}

/// `slot`, grown to at least `len` values (only outside step graphs: prompts).
fn grown<T: DeviceRepr + ValidAsZeroBits>(
    b: &CudaBackend,
    slot: &mut Option<CudaSlice<T>>,
    len: usize,
) -> Result<()> {
    if slot.as_ref().is_none_or(|s| s.len() < len) {
        *slot = None;
        *slot = Some(
            b.device()
                .stream()
                .alloc_zeros::<T>(len.max(1))
                .map_err(CudaError::driver("allocating expert scratch"))?,
        );
    }
    Ok(())
}

impl CudaBackend {
    /// `Backend::matmul_experts`: row `t·k + j` of `out` is expert `choice[t][j]` of the stack
    /// times row `t` of `x` (a row per token) or row `t·k + j` (a row per slot).
    pub(super) fn experts_product(
        &self,
        experts: &QuantMatrix,
        n_expert: usize,
        choice: &CudaBuffer,
        x: &CudaPrepared,
        out: &mut CudaBuffer,
    ) -> Result<()> {
        let (n, k) = (choice.rows, choice.cols / 2);
        if n_expert == 0 || !experts.rows().is_multiple_of(n_expert) {
            return Err(shape_error(
                "matmul_experts",
                "rows of the stacked experts",
                n_expert,
                experts.rows(),
            ));
        }
        let rows = experts.rows() / n_expert;
        check("matmul_experts", "input width", experts.cols(), x.cols)?;
        check("matmul_experts", "output width", rows, out.cols)?;
        check("matmul_experts", "output rows", n * k, out.rows)?;
        let per_slot = match x.rows {
            r if r == n * k && k != 1 => true,
            r if r == n => false,
            r => return Err(shape_error("matmul_experts", "input rows", n, r)),
        };
        if n == 0 {
            return Ok(());
        }
        match (x.form, &x.q8, &x.f16) {
            (Form::Q8, Some(q8), _) => {
                self.device().matvec_experts(
                    experts,
                    n_expert,
                    &choice.data,
                    n,
                    k,
                    q8,
                    per_slot,
                    &mut out.data,
                )?;
                Ok(())
            }
            (Form::F16, _, Some(f16)) => {
                let layout = ExpertLayout {
                    n_expert,
                    rows,
                    k,
                    x_rows: x.rows,
                    per_slot,
                };
                self.experts_tensor_cores(experts, &layout, choice, f16, out)
            }
            _ => Err(shape_error("matmul_experts", "prepared form", 0, x.rows)),
        }
    }

    /// The prompt path of [`CudaBackend::experts_product`]: the routing is read back, the
    /// slots are grouped by expert, and each chosen expert multiplies its gathered rows of `x`
    /// on the tensor cores (dequantized slab by slab, as [`crate::cuda::CudaDevice::matmul`]
    /// does), the products scattered to their rows of `out`.
    fn experts_tensor_cores(
        &self,
        experts: &QuantMatrix,
        l: &ExpertLayout,
        choice: &CudaBuffer,
        x: &CudaSlice<u16>,
        out: &mut CudaBuffer,
    ) -> Result<()> {
        let dev = self.device();
        let (n, k, rows, cols) = (choice.rows, l.k, l.rows, experts.cols());
        dev.untracked_work()?;
        let mut sh = self.shared();
        let Shared {
            staging,
            scratch,
            experts: es,
            ..
        } = &mut *sh;
        es.choice.resize(n * 2 * k, 0.0);
        dev.stream()
            .memcpy_dtoh(&choice.data.slice(0..n * 2 * k), es.choice.as_mut_slice())
            .map_err(CudaError::driver("reading the expert choice"))?;
        dev.synchronize()?;

        es.slots.clear();
        let mut unrouted = false;
        for (t, c) in es.choice.chunks_exact(2 * k).enumerate() {
            for (j, &id) in c[..k].iter().enumerate() {
                if id >= 0.0 && (id as usize) < l.n_expert {
                    es.slots.push((id as u32, (t * k + j) as u32));
                } else {
                    unrouted = true;
                }
            }
        }
        es.slots.sort_unstable();
        let total = es.slots.len();
        es.rows.clear();
        es.rows.extend(es.slots.iter().map(|&(_, s)| {
            let s = s as usize;
            (if l.per_slot { s } else { s / k }) as i32
        }));
        es.rows.extend(es.slots.iter().map(|&(_, s)| s as i32));
        if unrouted {
            // Only a routing of NaN logits leaves a slot without an expert: its row reads zero.
            dev.stream()
                .memset_zeros(&mut out.data.slice_mut(0..n * k * rows))
                .map_err(CudaError::driver("clearing expert products"))?;
        }
        if total == 0 {
            return Ok(());
        }
        staging.expert_rows.set(dev, &es.rows)?;

        let most = es
            .slots
            .chunk_by(|a, b| a.0 == b.0)
            .map(<[_]>::len)
            .max()
            .unwrap_or(0);
        grown(self, &mut es.x, most * cols)?;
        grown(self, &mut es.y, most * rows)?;
        let wscratch = self.weight_scratch(scratch, scratch_len(rows, cols))?;
        let (Some(xg), Some(yg)) = (es.x.as_mut(), es.y.as_mut()) else {
            return Err(shape_error("matmul_experts", "scratch", most, 0));
        };
        let idx = &staging.expert_rows.dev;
        let mut i = 0;
        for group in es.slots.chunk_by(|a, b| a.0 == b.0) {
            let (e, m) = (group[0].0 as usize, group.len());
            dev.copy_rows_f16(x, l.x_rows, &idx.slice(i..i + m), m, cols, xg)?;
            dev.matmul_rows(experts, e * rows, rows, xg, m, yg, wscratch)?;
            dev.scatter_rows(
                yg,
                m,
                &idx.slice(total + i..total + i + m),
                rows,
                &mut out.data,
                n * k,
            )?;
            i += m;
        }
        Ok(())
    }
}

/// Shapes of one expert product.
struct ExpertLayout {
    n_expert: usize,
    rows: usize, // rows of each expert
    k: usize,    // experts per token
    x_rows: usize,
    per_slot: bool,
}
