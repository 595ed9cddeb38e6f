//! [`CudaBackend`]: the [`Backend`] operations on the GPU, one or two kernels each, all queued
//! in order on the device's stream.

use std::sync::{Mutex, MutexGuard, PoisonError};

use cudarc::driver::{CudaSlice, DevicePtr};
use ferrolm_gguf::{GgmlType, TensorView};
use ferrolm_sampling::SamplingError;

use super::CudaOptions;
use super::kv::CudaKv;
use super::staging::Staging;
use crate::backend::{AttentionParams, Backend, Batch, Glu, KvLayout, MoeRouting, SeqId};
use crate::config::{Rope, RopeStyle};
use crate::cuda::{
    self, AttentionWorkspace, CudaDevice, CudaError, DeviceOptions, Q8Activations, QuantMatrix,
    QueryBatch, RopeParams, StepGraph, StepOutcome, WeightType,
};
use crate::error::{Result, TransformerError};

/// Batches of up to this many rows are multiplied by the quantized mat-vec kernel (one launch,
/// each weight read from memory once and from the cache for the other rows); larger ones by
/// dequantized tiles on the tensor cores.
const MATVEC_MAX_ROWS: usize = 8;
/// Largest slab of dequantized f16 weights for one tensor-core product (elements).
const MAX_SCRATCH: usize = 64 << 20;
/// Batches of up to this many queries split each query's positions over several blocks
/// (flash-decoding); larger batches have enough queries to fill the GPU.
const SPLIT_MAX_QUERIES: usize = 4;
/// Positions per split that decode attention aims for, and the most splits. Each of a split's
/// four warps walks its positions one after another, waiting on every load, so spans are kept
/// short: at a depth of 4096, splits of 256 positions cost 8B decode a third of its speed.
const SPLIT_SPAN: usize = 64;
const MAX_SPLITS: usize = 64;

/// Elements of dequantization scratch for products with a `rows × cols` matrix: the whole
/// matrix, or slabs of [`MAX_SCRATCH`] (at least one row).
pub(super) fn scratch_len(rows: usize, cols: usize) -> usize {
    (rows * cols).min(MAX_SCRATCH.max(cols))
}

/// Runs the forward pass on one NVIDIA GPU.
pub struct CudaBackend {
    dev: CudaDevice,
    shared: Mutex<Shared>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("device", &self.dev)
            .finish_non_exhaustive()
    }
}

/// Scratch and step state shared by the operations (they take `&self`).
pub(super) struct Shared {
    pub(super) staging: Staging,
    /// Graphs are wanted and have not failed.
    graphs: bool,
    /// The batch staged last is one token: its step may be replayed as a graph.
    single_token: bool,
    graph: Option<StepGraph>,
    /// An error of a graph launch, reported by the next [`Backend::read`].
    deferred: Option<CudaError>,
    attention: Option<(AttentionWorkspace, usize, usize)>, // (workspace, parts/4, head_dim)
    pub(super) scratch: Option<CudaSlice<u16>>,
    /// Token ids of [`Backend::read_argmax`], on the device and copied back.
    argmax: Option<CudaSlice<i32>>,
    argmax_host: Vec<i32>,
    /// The buffer whose argmax [`Backend::argmax_ahead`] launched last, not yet read.
    argmax_of: Option<u64>,
    /// Scratch of the prompt-sized expert products.
    pub(super) experts: super::experts::ExpertScratch,
}

/// Activations on the GPU: `rows × cols` f32, row-major, with room for more rows.
#[derive(Debug)]
pub struct CudaBuffer {
    pub(super) data: CudaSlice<f32>,
    pub(super) rows: usize,
    pub(super) cols: usize,
    capacity_rows: usize,
}

impl CudaBuffer {
    /// Rows in use.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// How prepared activations are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    /// Nothing prepared yet.
    Empty,
    /// int8 with a scale per 32 values, for the mat-vec kernels.
    Q8,
    /// f16, for tensor-core products.
    F16,
}

/// Activations made ready for matrix products: int8 for small batches, f16 for large ones.
#[derive(Debug)]
pub struct CudaPrepared {
    pub(super) q8: Option<Q8Activations>,
    pub(super) f16: Option<CudaSlice<u16>>,
    pub(super) form: Form,
    pub(super) rows: usize,
    pub(super) cols: usize,
    capacity_rows: usize,
}

pub(super) fn shape_error(op: &str, what: &str, expected: usize, got: usize) -> TransformerError {
    TransformerError::InvalidBatch {
        reason: format!("{op}: {what} is {got}, expected {expected}"),
    }
}

pub(super) fn check(op: &str, what: &str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(shape_error(op, what, expected, got))
    }
}

impl CudaBackend {
    /// Opens GPU `ordinal` with graphs on.
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::with_options(&CudaOptions {
            ordinal,
            ..CudaOptions::default()
        })
    }

    /// Opens the GPU of `options`, compiling (or loading from the cache) every kernel. Without
    /// a driver or GPU this is [`TransformerError::DeviceUnavailable`].
    pub fn with_options(options: &CudaOptions) -> Result<Self> {
        let dev = CudaDevice::with_options(&DeviceOptions {
            ordinal: options.ordinal,
            ..DeviceOptions::default()
        })
        .map_err(|e| {
            if e.is_no_gpu() {
                TransformerError::DeviceUnavailable {
                    device: format!("cuda:{}", options.ordinal),
                    reason: e.to_string(),
                }
            } else {
                e.into()
            }
        })?;
        let staging = Staging::new(&dev)?;
        Ok(Self {
            dev,
            shared: Mutex::new(Shared {
                staging,
                graphs: options.graphs,
                single_token: false,
                graph: None,
                deferred: None,
                attention: None,
                scratch: None,
                argmax: None,
                argmax_host: Vec::new(),
                argmax_of: None,
                experts: super::experts::ExpertScratch::default(),
            }),
        })
    }

    /// The device, for timing and memory queries.
    pub fn device(&self) -> &CudaDevice {
        &self.dev
    }

    /// Bytes of device memory in use on the GPU (by every process): weights, KV cache,
    /// activations and workspaces of this one among them.
    pub fn memory_in_use(&self) -> Result<usize> {
        let (free, total) = self.dev.memory_info()?;
        Ok(total.saturating_sub(free))
    }

    /// Kernel launches in the step graph replayed for single-token batches, if one is built.
    pub fn graph_kernels(&self) -> Option<usize> {
        self.shared().graph.as_ref().map(StepGraph::len)
    }

    /// GPU time of one replay of the step graph in microseconds (median of `reps` after two
    /// warm-up replays), without the host's share of a step; `None` before a graph is built.
    /// A replay recomputes the last single-token step (same token, same position, the same
    /// cache slot written with the same values), so it changes no state.
    pub fn time_step_graph(&self, reps: usize) -> Result<Option<f64>> {
        let sh = self.shared();
        let Some(graph) = sh.graph.as_ref() else {
            return Ok(None);
        };
        let (median_us, _) = crate::cuda::time_op(&self.dev, reps, || graph.launch())?;
        Ok(Some(median_us))
    }

    /// Copies `values` (the rows in use of `x`, row after row) from host memory into `x`.
    pub fn write(&self, x: &mut CudaBuffer, values: &[f32]) -> Result<()> {
        let n = x.rows * x.cols;
        check("write", "length", n, values.len())?;
        if n == 0 {
            return Ok(());
        }
        self.dev.untracked_work()?;
        let mut head = x.data.slice_mut(0..n);
        self.dev
            .stream()
            .memcpy_htod(values, &mut head)
            .map_err(CudaError::driver("writing activations"))?;
        Ok(())
    }

    pub(super) fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The scratch buffer of dequantized f16 weights, grown to hold `want` values (work a step
    /// graph cannot hold, so only for prompt-sized products).
    pub(super) fn weight_scratch<'a>(
        &self,
        slot: &'a mut Option<CudaSlice<u16>>,
        want: usize,
    ) -> Result<&'a mut CudaSlice<u16>> {
        if slot.as_ref().is_none_or(|s| s.len() < want) {
            self.dev.untracked_work()?;
            *slot = None;
            *slot = Some(
                self.dev
                    .stream()
                    .alloc_zeros::<u16>(want)
                    .map_err(CudaError::driver("allocating dequantization scratch"))?,
            );
        }
        slot.as_mut()
            .ok_or_else(|| shape_error("matmul", "scratch", want, 0))
    }

    /// Appends the batch's keys and values to layer `layer` of the cache and runs attention
    /// into `out` (and, with `quantized`, `out` quantized in the same launch).
    #[allow(clippy::too_many_arguments)]
    fn attention_into(
        &self,
        kv: &mut CudaKv,
        layer: usize,
        batch: &Batch<'_>,
        [q, k, v]: [&CudaBuffer; 3],
        p: &AttentionParams,
        out: &mut CudaBuffer,
        quantized: Option<&mut Q8Activations>,
    ) -> Result<()> {
        let (hd, n) = (p.head_dim, batch.len());
        check("attention", "query width", p.n_head * hd, q.cols)?;
        check("attention", "key width", p.n_head_kv * hd, k.cols)?;
        check("attention", "value width", p.n_head_kv * hd, v.cols)?;
        check("attention", "output width", q.cols, out.cols)?;
        for (what, rows) in [
            ("query rows", q.rows),
            ("key rows", k.rows),
            ("value rows", v.rows),
            ("output rows", out.rows),
            ("positions", batch.positions.len()),
            ("sequence ids", batch.seqs.len()),
        ] {
            check("attention", what, n, rows)?;
        }
        if n == 0 {
            return Ok(());
        }
        kv.check_seqs(batch.seqs)?;
        let layout = kv.layout();
        check("attention", "kv heads", layout.n_head_kv, p.n_head_kv)?;
        check("attention", "head width", layout.head_dim, hd)?;
        let max_blocks = kv.max_blocks;
        let CudaKv {
            layers, table_dev, ..
        } = kv;
        let cache = layers
            .get_mut(layer)
            .ok_or_else(|| shape_error("attention", "layer", layout.n_layer, layer))?;

        let mut sh = self.shared();
        let Shared {
            staging, attention, ..
        } = &mut *sh;
        staging.positions.set(&self.dev, batch.positions)?;
        staging.seqs.set(&self.dev, batch.seqs)?;
        let splits = if n <= SPLIT_MAX_QUERIES {
            layout.n_ctx.div_ceil(SPLIT_SPAN).clamp(1, MAX_SPLITS)
        } else {
            1
        };
        let ws = self.attention_workspace(attention, n * p.n_head * splits, hd)?;
        let qb = QueryBatch {
            n_queries: n,
            q_seq: &staging.seqs.dev,
            pos: &staging.positions.dev,
            block_table: table_dev,
            max_blocks,
        };
        self.dev.kv_append(cache, &k.data, &v.data, &qb)?;
        let params = cuda::AttentionParams {
            n_heads: p.n_head,
            n_kv_heads: p.n_head_kv,
            head_dim: hd,
            scale: p.scale,
            window: p.window.unwrap_or(0),
            softcap: p.softcap.unwrap_or(0.0),
        };
        self.dev.attention(
            cache,
            &q.data,
            &mut out.data,
            quantized,
            &params,
            &qb,
            splits,
            ws,
        )?;
        Ok(())
    }

    /// Queues the argmax of each row of `x` into the id buffer (grown first if needed, which is
    /// work a step graph cannot hold).
    /// Queues the argmax of each row of `x` into `sh.argmax`, among the columns `allowed`
    /// lets through when given ([`Backend::read_argmax_masked`]).
    fn launch_argmax(
        &self,
        sh: &mut Shared,
        x: &CudaBuffer,
        allowed: Option<&[u32]>,
    ) -> Result<()> {
        if sh.argmax.as_ref().is_none_or(|ids| ids.len() < x.rows) {
            self.dev.untracked_work()?;
            sh.argmax = Some(
                self.dev
                    .stream()
                    .alloc_zeros::<i32>(x.rows.max(1))
                    .map_err(CudaError::driver("allocating argmax output"))?,
            );
        }
        let Shared {
            staging, argmax, ..
        } = sh;
        let Some(ids) = argmax.as_mut() else {
            return Err(shape_error("read_argmax", "output", x.rows, 0));
        };
        match allowed {
            None => self.dev.argmax(&x.data, x.rows, x.cols, ids)?,
            Some(words) => {
                staging.allowed.set_bits(&self.dev, words)?;
                self.dev
                    .argmax_masked(&x.data, x.rows, x.cols, &staging.allowed.dev, ids)?;
            }
        }
        Ok(())
    }

    /// Copies the token ids of the argmax launched on `x` back into `out`; a row with nothing
    /// to choose is an error, as for the greedy sampler.
    fn copy_argmax(&self, sh: &mut Shared, x: &CudaBuffer, out: &mut [u32]) -> Result<()> {
        let Shared {
            argmax,
            argmax_host: host,
            ..
        } = sh;
        let Some(ids) = argmax.as_ref() else {
            return Err(shape_error("read_argmax", "output", x.rows, 0));
        };
        host.resize(x.rows, 0);
        self.dev
            .stream()
            .memcpy_dtoh(&ids.slice(0..x.rows), host.as_mut_slice())
            .map_err(CudaError::driver("reading token ids"))?;
        self.dev.synchronize()?;
        for (o, &id) in out.iter_mut().zip(host.iter()) {
            *o = u32::try_from(id).map_err(|_| SamplingError::NoSelectableToken {
                n_candidates: x.cols,
            })?;
        }
        Ok(())
    }

    /// Room in the attention workspace for `units` (query, head, split) triples of `head_dim`.
    fn attention_workspace<'a>(
        &self,
        slot: &'a mut Option<(AttentionWorkspace, usize, usize)>,
        units: usize,
        head_dim: usize,
    ) -> Result<&'a mut AttentionWorkspace> {
        let fits = slot
            .as_ref()
            .is_some_and(|&(_, u, hd)| units <= u && head_dim <= hd);
        if !fits {
            self.dev.untracked_work()?;
            let (u, hd) = slot.as_ref().map_or((0, 0), |&(_, u, hd)| (u, hd));
            let (u, hd) = (u.max(units), hd.max(head_dim));
            *slot = Some((AttentionWorkspace::new(&self.dev, u, 1, hd, 1)?, u, hd));
        }
        match slot {
            Some((ws, _, _)) => Ok(ws),
            None => Err(CudaError::Unsupported {
                op: "attention",
                what: "no workspace".into(),
            }
            .into()),
        }
    }
}

impl<'w> Backend<'w> for CudaBackend {
    type Matrix = QuantMatrix;
    type Vector = CudaSlice<f32>;
    type Buffer = CudaBuffer;
    type Prepared = CudaPrepared;
    type Kv = CudaKv;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let replay = {
            let mut sh = self.shared();
            if sh.graphs && sh.single_token {
                Some(sh.graph.take())
            } else {
                None
            }
        };
        let Some(replay) = replay else {
            return f();
        };
        self.dev.begin_step(replay);
        let result = f();
        let outcome = self.dev.end_step();
        let mut sh = self.shared();
        match outcome {
            Ok(StepOutcome::Replayed(g) | StepOutcome::Recorded(Some(g))) => sh.graph = Some(g),
            Ok(StepOutcome::Recorded(None)) => {}
            Ok(StepOutcome::CaptureFailed(_)) => sh.graphs = false,
            Err(e) => {
                sh.graphs = false;
                sh.deferred = Some(e);
            }
        }
        result
    }

    fn matrix(&self, view: &TensorView<'w>, bias: Option<&TensorView<'w>>) -> Result<Self::Matrix> {
        let (rows, cols) = (view.n_rows() as usize, view.row_len() as usize);
        let ty = WeightType::from_ggml(view.ty).ok_or_else(|| {
            TransformerError::UnsupportedTensorType {
                name: view.name.to_owned(),
                ty: view.ty,
                backend: "the CUDA backend",
            }
        })?;
        let m = QuantMatrix::upload(&self.dev, ty, rows, cols, view.data)?;
        match bias {
            None => Ok(m),
            Some(b) => {
                let values = f32_values(b, "a bias on the CUDA backend")?;
                check("matrix", "bias length", rows, values.len())?;
                Ok(m.with_bias(&self.dev, &values)?)
            }
        }
    }

    fn vector(&self, view: &TensorView<'w>) -> Result<Self::Vector> {
        let values = f32_values(view, "a norm weight on the CUDA backend")?;
        Ok(self
            .dev
            .stream()
            .clone_htod(&values)
            .map_err(CudaError::driver("uploading a vector"))?)
    }

    fn buffer(&self, rows: usize, cols: usize) -> Result<Self::Buffer> {
        let n = rows
            .checked_mul(cols)
            .ok_or_else(|| shape_error("buffer", "size", usize::MAX, rows))?;
        let data = self
            .dev
            .stream()
            .alloc_zeros::<f32>(n.max(1))
            .map_err(CudaError::driver("allocating activations"))?;
        Ok(CudaBuffer {
            data,
            rows,
            cols,
            capacity_rows: rows,
        })
    }

    fn prepared(&self, rows: usize, cols: usize) -> Result<Self::Prepared> {
        let q8 = if cols.is_multiple_of(32) && cols > 0 {
            Some(Q8Activations::new(
                &self.dev,
                rows.clamp(1, MATVEC_MAX_ROWS) * cols,
            )?)
        } else {
            None
        };
        let f16 = if rows > MATVEC_MAX_ROWS || q8.is_none() {
            Some(
                self.dev
                    .stream()
                    .alloc_zeros::<u16>((rows * cols).max(1))
                    .map_err(CudaError::driver("allocating activations"))?,
            )
        } else {
            None
        };
        Ok(CudaPrepared {
            q8,
            f16,
            form: Form::Empty,
            rows: 0,
            cols,
            capacity_rows: rows,
        })
    }

    fn kv_cache(&self, layout: KvLayout) -> Result<Self::Kv> {
        CudaKv::new(&self.dev, layout)
    }

    fn set_rows(&self, buf: &mut Self::Buffer, rows: usize) -> Result<()> {
        if rows > buf.capacity_rows {
            return Err(shape_error("set_rows", "rows", buf.capacity_rows, rows));
        }
        buf.rows = rows;
        Ok(())
    }

    fn embed(
        &self,
        table: &Self::Matrix,
        tokens: &[u32],
        scale: f32,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        check("embed", "output rows", tokens.len(), out.rows)?;
        check("embed", "output width", table.cols(), out.cols)?;
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= table.rows()) {
            return Err(TransformerError::TokenOutOfRange {
                id: t,
                vocab: table.rows(),
            });
        }
        if tokens.is_empty() {
            return Ok(());
        }
        let mut sh = self.shared();
        sh.staging.tokens.set(&self.dev, tokens)?;
        self.dev.get_rows(
            table,
            &sh.staging.tokens.dev,
            tokens.len(),
            scale,
            &mut out.data,
        )?;
        Ok(())
    }

    fn rms_norm(&self, x: &mut Self::Buffer, w: &Self::Vector, eps: f32) -> Result<()> {
        if w.is_empty() || x.cols % w.len() != 0 {
            return Err(shape_error("rms_norm", "row width", w.len(), x.cols));
        }
        let runs = x.rows * x.cols / w.len();
        if runs > 0 {
            self.dev
                .rmsnorm_in_place(&mut x.data, w, runs, w.len(), eps)?;
        }
        Ok(())
    }

    fn rms_norm_into(
        &self,
        x: &Self::Buffer,
        w: &Self::Vector,
        eps: f32,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        check("rms_norm", "row width", w.len(), x.cols)?;
        check("rms_norm", "output width", x.cols, out.cols)?;
        check("rms_norm", "output rows", x.rows, out.rows)?;
        if x.rows > 0 {
            self.dev
                .rmsnorm(&x.data, w, &mut out.data, x.rows, x.cols, eps)?;
        }
        Ok(())
    }

    fn prepare(&self, x: &Self::Buffer, out: &mut Self::Prepared) -> Result<()> {
        check("prepare", "width", out.cols, x.cols)?;
        if x.rows > out.capacity_rows {
            return Err(shape_error("prepare", "rows", out.capacity_rows, x.rows));
        }
        let n = x.rows * x.cols;
        out.rows = x.rows;
        if n == 0 {
            out.form = Form::Empty;
            return Ok(());
        }
        match (&mut out.q8, &mut out.f16) {
            (Some(q8), _) if x.rows <= MATVEC_MAX_ROWS => {
                self.dev.quantize_q8_n(&x.data, q8, n)?;
                out.form = Form::Q8;
            }
            (_, Some(f16)) => {
                self.dev.convert_f16(&x.data, f16, n)?;
                out.form = Form::F16;
            }
            _ => {
                return Err(shape_error(
                    "prepare",
                    "rows",
                    MATVEC_MAX_ROWS.min(out.capacity_rows),
                    x.rows,
                ));
            }
        }
        Ok(())
    }

    fn matmul(&self, w: &Self::Matrix, x: &Self::Prepared, out: &mut Self::Buffer) -> Result<()> {
        check("matmul", "output width", w.rows(), out.cols)?;
        check("matmul", "input width", w.cols(), x.cols)?;
        check("matmul", "output rows", x.rows, out.rows)?;
        match (x.form, &x.q8, &x.f16) {
            (Form::Empty, _, _) => check("matmul", "input rows", 0, x.rows),
            (Form::Q8, Some(q8), _) => {
                self.dev.matvec_batch(w, q8, x.rows, &mut out.data, false)?;
                Ok(())
            }
            (Form::F16, _, Some(f16)) => {
                let mut sh = self.shared();
                let want = scratch_len(w.rows(), w.cols());
                let scratch = self.weight_scratch(&mut sh.scratch, want)?;
                self.dev.matmul(w, f16, x.rows, &mut out.data, scratch)?;
                Ok(())
            }
            _ => Err(shape_error("matmul", "prepared form", 0, x.rows)),
        }
    }

    fn matmul_router(
        &self,
        w: &Self::Matrix,
        x: &Self::Buffer,
        prepared: &Self::Prepared,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        if !w.weight_type().is_float() {
            return self.matmul(w, prepared, out);
        }
        check("matmul", "output width", w.rows(), out.cols)?;
        check("matmul", "input width", w.cols(), x.cols)?;
        check("matmul", "output rows", x.rows, out.rows)?;
        self.dev
            .matmul_f32_input(w, &x.data, x.rows, &mut out.data)?;
        Ok(())
    }

    fn matmul_many(
        &self,
        ws: &[&Self::Matrix],
        x: &Self::Prepared,
        outs: &mut [&mut Self::Buffer],
    ) -> Result<()> {
        check("matmul_many", "outputs", ws.len(), outs.len())?;
        // Decode-sized batches take one launch per run of neighbouring matrices of one type
        // (Q4_K_M's query and key, then its Q6_K value); a prompt's tensor-core products run
        // product by product.
        let Some(q8) = x.q8.as_ref().filter(|_| matches!(x.form, Form::Q8)) else {
            for (w, out) in ws.iter().zip(outs.iter_mut()) {
                self.matmul(w, x, out)?;
            }
            return Ok(());
        };
        let mut i = 0;
        while i < ws.len() {
            let same =
                |w: &&QuantMatrix| w.weight_type() == ws[i].weight_type() && w.cols() == x.cols;
            let run = ws[i..]
                .iter()
                .take(3)
                .take_while(|w| same(w))
                .count()
                .max(1);
            let (run_ws, run_outs) = (&ws[i..i + run], &mut outs[i..i + run]);
            for (w, out) in run_ws.iter().zip(run_outs.iter()) {
                check("matmul", "output width", w.rows(), out.cols)?;
                check("matmul", "output rows", x.rows, out.rows)?;
            }
            match run_outs {
                [a, b] => {
                    let ys = &mut [&mut a.data, &mut b.data];
                    self.dev.matvec_many(run_ws, q8, x.rows, ys)?;
                }
                [a, b, c] => {
                    let ys = &mut [&mut a.data, &mut b.data, &mut c.data];
                    self.dev.matvec_many(run_ws, q8, x.rows, ys)?;
                }
                _ => self.matmul(run_ws[0], x, run_outs[0])?,
            }
            i += run;
        }
        Ok(())
    }

    fn rope(
        &self,
        x: &mut Self::Buffer,
        head_dim: usize,
        positions: &[u32],
        rope: &Rope,
        factors: Option<&Self::Vector>,
    ) -> Result<()> {
        check("rope", "positions", x.rows, positions.len())?;
        check_rope(head_dim, &[x.cols], rope, factors)?;
        if x.rows == 0 {
            return Ok(());
        }
        let mut sh = self.shared();
        sh.staging.positions.set(&self.dev, positions)?;
        let params = rope_params(x.cols / head_dim, head_dim, rope);
        self.dev.rope(
            &mut x.data,
            &sh.staging.positions.dev,
            factors.map(|f| f as &dyn DevicePtr<f32>),
            x.rows,
            &params,
        )?;
        Ok(())
    }

    fn attention(
        &self,
        kv: &mut Self::Kv,
        layer: usize,
        batch: &Batch<'_>,
        q: &Self::Buffer,
        k: &Self::Buffer,
        v: &Self::Buffer,
        p: &AttentionParams,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        self.attention_into(kv, layer, batch, [q, k, v], p, out, None)
    }

    fn attention_prepare(
        &self,
        kv: &mut Self::Kv,
        layer: usize,
        batch: &Batch<'_>,
        q: &Self::Buffer,
        k: &Self::Buffer,
        v: &Self::Buffer,
        p: &AttentionParams,
        out: &mut Self::Buffer,
        prepared: &mut Self::Prepared,
    ) -> Result<()> {
        // Decode-sized batches quantize the output inside the attention's last launch.
        let n = batch.len();
        match &mut prepared.q8 {
            Some(q8) if (1..=MATVEC_MAX_ROWS).contains(&n) && prepared.cols == out.cols => {
                self.attention_into(kv, layer, batch, [q, k, v], p, out, Some(q8))?;
                prepared.rows = n;
                prepared.form = Form::Q8;
                Ok(())
            }
            _ => {
                self.attention(kv, layer, batch, q, k, v, p, out)?;
                self.prepare(out, prepared)
            }
        }
    }

    fn add(&self, x: &mut Self::Buffer, y: &Self::Buffer) -> Result<()> {
        let n = x.rows * x.cols;
        check("add", "length", n, y.rows * y.cols)?;
        if n > 0 {
            self.dev.add_assign(&mut x.data, &y.data, n)?;
        }
        Ok(())
    }

    fn glu(&self, gate: &mut Self::Buffer, up: &Self::Buffer, act: Glu) -> Result<()> {
        let n = gate.rows * gate.cols;
        check("glu", "length", n, up.rows * up.cols)?;
        if n > 0 {
            self.dev
                .glu_in_place(&mut gate.data, &up.data, n, act == Glu::GeluTanh)?;
        }
        Ok(())
    }

    fn rms_norm_prepare(
        &self,
        x: &Self::Buffer,
        w: &Self::Vector,
        eps: f32,
        out: &mut Self::Buffer,
        prepared: &mut Self::Prepared,
    ) -> Result<()> {
        match &mut prepared.q8 {
            Some(q8) if (1..=MATVEC_MAX_ROWS).contains(&x.rows) && prepared.cols == x.cols => {
                check("rms_norm", "row width", w.len(), x.cols)?;
                check("rms_norm", "output width", x.cols, out.cols)?;
                check("rms_norm", "output rows", x.rows, out.rows)?;
                self.dev
                    .rmsnorm_q8(&x.data, w, &mut out.data, q8, x.rows, x.cols, eps)?;
                prepared.rows = x.rows;
                prepared.form = Form::Q8;
                Ok(())
            }
            _ => {
                self.rms_norm_into(x, w, eps, out)?;
                self.prepare(out, prepared)
            }
        }
    }

    fn glu_prepare(
        &self,
        gate: &mut Self::Buffer,
        up: &Self::Buffer,
        act: Glu,
        prepared: &mut Self::Prepared,
    ) -> Result<()> {
        let n = gate.rows * gate.cols;
        match &mut prepared.q8 {
            Some(q8)
                if (1..=MATVEC_MAX_ROWS).contains(&gate.rows) && prepared.cols == gate.cols =>
            {
                check("glu", "length", n, up.rows * up.cols)?;
                self.dev
                    .glu_q8(&mut gate.data, &up.data, q8, n, act == Glu::GeluTanh)?;
                prepared.rows = gate.rows;
                prepared.form = Form::Q8;
                Ok(())
            }
            _ => {
                self.glu(gate, up, act)?;
                self.prepare(gate, prepared)
            }
        }
    }

    fn matmul_add(
        &self,
        w: &Self::Matrix,
        x: &Self::Prepared,
        out: &mut Self::Buffer,
        residual: &mut Self::Buffer,
    ) -> Result<()> {
        if let (Form::Q8, Some(q8)) = (x.form, &x.q8) {
            check("matmul", "output width", w.rows(), out.cols)?;
            check("matmul", "input width", w.cols(), x.cols)?;
            check("matmul", "output rows", x.rows, out.rows)?;
            check(
                "add",
                "length",
                out.rows * out.cols,
                residual.rows * residual.cols,
            )?;
            self.dev
                .matvec_add(w, q8, x.rows, &mut out.data, &mut residual.data)?;
            return Ok(());
        }
        self.matmul(w, x, out)?;
        self.add(residual, out)
    }

    fn rope_qk(
        &self,
        q: &mut Self::Buffer,
        k: &mut Self::Buffer,
        head_dim: usize,
        positions: &[u32],
        rope: &Rope,
        factors: Option<&Self::Vector>,
    ) -> Result<()> {
        check("rope", "positions", q.rows, positions.len())?;
        check("rope", "key rows", q.rows, k.rows)?;
        check_rope(head_dim, &[q.cols, k.cols], rope, factors)?;
        if q.rows == 0 {
            return Ok(());
        }
        let mut sh = self.shared();
        sh.staging.positions.set(&self.dev, positions)?;
        let params = rope_params(q.cols / head_dim, head_dim, rope);
        self.dev.rope_qk(
            &mut q.data,
            &mut k.data,
            &sh.staging.positions.dev,
            factors.map(|f| f as &dyn DevicePtr<f32>),
            q.rows,
            q.cols / head_dim,
            k.cols / head_dim,
            &params,
        )?;
        Ok(())
    }

    fn qk_norm_rope(
        &self,
        q: &mut Self::Buffer,
        k: &mut Self::Buffer,
        q_norm: &Self::Vector,
        k_norm: &Self::Vector,
        eps: f32,
        head_dim: usize,
        positions: &[u32],
        rope: &Rope,
        factors: Option<&Self::Vector>,
    ) -> Result<()> {
        check("qk_norm_rope", "positions", q.rows, positions.len())?;
        check("qk_norm_rope", "key rows", q.rows, k.rows)?;
        check("qk_norm_rope", "query norm width", head_dim, q_norm.len())?;
        check("qk_norm_rope", "key norm width", head_dim, k_norm.len())?;
        check_rope(head_dim, &[q.cols, k.cols], rope, factors)?;
        if q.rows == 0 {
            return Ok(());
        }
        let mut sh = self.shared();
        sh.staging.positions.set(&self.dev, positions)?;
        let params = rope_params(q.cols / head_dim, head_dim, rope);
        self.dev.qk_norm_rope(
            &mut q.data,
            &mut k.data,
            q_norm,
            k_norm,
            eps,
            &sh.staging.positions.dev,
            factors.map(|f| f as &dyn DevicePtr<f32>),
            q.rows,
            q.cols / head_dim,
            k.cols / head_dim,
            &params,
        )?;
        Ok(())
    }

    fn softcap(&self, x: &mut Self::Buffer, cap: f32) -> Result<()> {
        let n = x.rows * x.cols;
        if n > 0 {
            self.dev.softcap(&mut x.data, cap, n)?;
        }
        Ok(())
    }

    fn moe_route(
        &self,
        logits: &Self::Buffer,
        routing: &MoeRouting,
        choice: &mut Self::Buffer,
    ) -> Result<()> {
        check("moe_route", "choice rows", logits.rows, choice.rows)?;
        check("moe_route", "choice width", 2 * routing.n_used, choice.cols)?;
        if routing.n_used == 0 || routing.n_used > logits.cols {
            return Err(shape_error(
                "moe_route",
                "experts used",
                logits.cols,
                routing.n_used,
            ));
        }
        self.dev.moe_route(
            &logits.data,
            logits.rows,
            logits.cols,
            routing.n_used,
            routing.norm_weights,
            routing.weights_scale,
            &mut choice.data,
        )?;
        Ok(())
    }

    fn matmul_experts(
        &self,
        experts: &Self::Matrix,
        n_expert: usize,
        choice: &Self::Buffer,
        x: &Self::Prepared,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        self.experts_product(experts, n_expert, choice, x, out)
    }

    fn moe_combine(
        &self,
        choice: &Self::Buffer,
        y: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        let k = choice.cols / 2;
        check("moe_combine", "rows", choice.rows * k, y.rows)?;
        check("moe_combine", "output rows", choice.rows, out.rows)?;
        check("moe_combine", "output width", y.cols, out.cols)?;
        self.dev
            .moe_combine(&choice.data, choice.rows, k, &y.data, y.cols, &mut out.data)?;
        Ok(())
    }

    fn gather_rows(&self, x: &Self::Buffer, rows: &[usize], out: &mut Self::Buffer) -> Result<()> {
        check("gather_rows", "width", x.cols, out.cols)?;
        check("gather_rows", "output rows", rows.len(), out.rows)?;
        if let Some(&r) = rows.iter().find(|&&r| r >= x.rows) {
            return Err(shape_error("gather_rows", "row index", x.rows, r));
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut sh = self.shared();
        sh.staging.outputs.set(&self.dev, rows)?;
        self.dev.copy_rows(
            &x.data,
            x.rows,
            &sh.staging.outputs.dev,
            rows.len(),
            x.cols,
            &mut out.data,
        )?;
        Ok(())
    }

    fn read(&self, x: &Self::Buffer, out: &mut [f32]) -> Result<()> {
        let n = x.rows * x.cols;
        check("read", "length", n, out.len())?;
        if let Some(e) = self.shared().deferred.take() {
            return Err(e.into());
        }
        if n == 0 {
            return Ok(());
        }
        self.dev.untracked_work()?;
        let s = self.dev.stream();
        s.memcpy_dtoh(&x.data.slice(0..n), out)
            .map_err(CudaError::driver("reading activations"))?;
        self.dev.synchronize()?;
        Ok(())
    }

    fn argmax_ahead(&self, x: &Self::Buffer) -> Result<()> {
        let mut sh = self.shared();
        self.launch_argmax(&mut sh, x, None)?;
        sh.argmax_of = Some(ptr_of(&x.data));
        Ok(())
    }

    fn read_argmax(&self, x: &Self::Buffer, out: &mut [u32]) -> Result<()> {
        check("read_argmax", "rows", x.rows, out.len())?;
        // The forward pass usually launched the argmax already (inside its graph).
        let launched = self.shared().argmax_of.take() == Some(ptr_of(&x.data));
        if let Some(e) = self.shared().deferred.take() {
            return Err(e.into());
        }
        if x.rows == 0 {
            return Ok(());
        }
        self.dev.untracked_work()?;
        let mut sh = self.shared();
        if !launched {
            self.launch_argmax(&mut sh, x, None)?;
        }
        self.copy_argmax(&mut sh, x, out)
    }

    fn read_argmax_masked(&self, x: &Self::Buffer, allowed: &[u32], out: &mut [u32]) -> Result<()> {
        check("read_argmax", "rows", x.rows, out.len())?;
        check(
            "read_argmax",
            "mask words",
            x.cols.div_ceil(32),
            allowed.len(),
        )?;
        // An unmasked argmax the forward pass launched is not wanted.
        self.shared().argmax_of = None;
        if let Some(e) = self.shared().deferred.take() {
            return Err(e.into());
        }
        if x.rows == 0 {
            return Ok(());
        }
        self.dev.untracked_work()?;
        let mut sh = self.shared();
        self.launch_argmax(&mut sh, x, Some(allowed))?;
        self.copy_argmax(&mut sh, x, out)
    }

    fn kv_layout(&self, kv: &Self::Kv) -> KvLayout {
        kv.layout()
    }

    fn kv_len(&self, kv: &Self::Kv, seq: SeqId) -> usize {
        kv.len(seq)
    }

    fn kv_reserve(&self, kv: &mut Self::Kv, batch: &Batch<'_>) -> Result<()> {
        kv.reserve(&self.dev, batch)?;
        let mut sh = self.shared();
        sh.single_token = batch.len() == 1;
        let st = &mut sh.staging;
        st.tokens.set(&self.dev, batch.tokens)?;
        st.positions.set(&self.dev, batch.positions)?;
        st.seqs.set(&self.dev, batch.seqs)?;
        st.outputs.set(&self.dev, batch.outputs)?;
        Ok(())
    }

    fn kv_blocks(&self, kv: &Self::Kv) -> crate::backend::KvBlocks {
        crate::backend::KvBlocks::of(kv.ledger())
    }

    fn kv_truncate(&self, kv: &mut Self::Kv, seq: SeqId, len: usize) -> Result<()> {
        kv.truncate(&self.dev, seq, len)
    }

    fn kv_share(&self, kv: &mut Self::Kv, dst: SeqId, src: SeqId, len: usize) -> Result<()> {
        kv.share(&self.dev, dst, src, len)
    }

    fn kv_clear(&self, kv: &mut Self::Kv) {
        // Only a failed upload of the block table can fail here; the next reserve rewrites
        // every row it touches, so there is nothing to report.
        let _ = kv.clear(&self.dev);
    }
}

/// The values of a 1-D f32 tensor (`what` names it in the error for another type).
fn f32_values(view: &TensorView<'_>, what: &'static str) -> Result<Vec<f32>> {
    if view.ty != GgmlType::F32 {
        return Err(TransformerError::UnsupportedTensorType {
            name: view.name.to_owned(),
            ty: view.ty,
            backend: what,
        });
    }
    Ok(view
        .data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Checks rows of each width in `widths` against heads of `head_dim`, and the factors.
fn check_rope(
    head_dim: usize,
    widths: &[usize],
    rope: &Rope,
    factors: Option<&CudaSlice<f32>>,
) -> Result<()> {
    for &cols in widths {
        if head_dim == 0 || cols % head_dim != 0 || rope.n_rot > head_dim {
            return Err(shape_error("rope", "row width", head_dim, cols));
        }
    }
    if let Some(f) = factors {
        check("rope", "frequency factors", rope.n_rot / 2, f.len())?;
    }
    Ok(())
}

/// The kernels' settings for `rope` on heads of `head_dim`.
fn rope_params(n_heads: usize, head_dim: usize, rope: &Rope) -> RopeParams {
    RopeParams {
        n_heads,
        head_dim,
        n_rot: rope.n_rot,
        base: rope.base,
        freq_scale: rope.freq_scale,
        ext_factor: rope.ext_factor,
        corr_dims: rope.corr_dims,
        mscale: rope.mscale,
        neox: rope.style == RopeStyle::Halves,
    }
}

/// The device address of a buffer, to recognise it later.
fn ptr_of(data: &CudaSlice<f32>) -> u64 {
    use cudarc::driver::DevicePtr;
    let stream = data.stream().clone();
    data.device_ptr(&stream).0
}
