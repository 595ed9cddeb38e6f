//! The CPU backend: weights borrowed from the memory-mapped file and multiplied through
//! `ferrolm-quant`'s [`QMatrix`], activations in preallocated f32 buffers, attention and the
//! small operations here, all on one rayon thread pool.

mod attention_log;
mod experts;
mod kv;
pub mod ops;
#[allow(unsafe_code)]
mod simd;

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::{Mutex, PoisonError};

use ferrolm_gguf::{GgmlType, TensorView};
use ferrolm_quant::dot::Planes;
use ferrolm_quant::{Input, Interleaved, Precision, QMatrix, QuantizedActivations};
use ferrolm_sampling::SamplingError;
use rayon::prelude::*;

pub use attention_log::AttentionRow;
pub use kv::CpuKv;

use super::{AttentionParams, Backend, Batch, Glu, KvLayout, MoeRouting, SeqId};
use crate::config::Rope;
use crate::error::{Result, TransformerError};

/// Runs the forward pass on the CPU.
#[derive(Debug)]
pub struct CpuBackend {
    pool: rayon::ThreadPool,
    precision: Precision,
    attention_log: attention_log::AttentionLog,
    experts: Mutex<experts::Scratch>,
    /// Bytes of weights copied into the interleaved layout.
    repacked: std::sync::atomic::AtomicUsize,
    /// RoPE angles of recent many-row calls.
    rope_cache: Mutex<RopeCache>,
}

/// Options of the CPU backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuOptions {
    /// Worker threads (0: one per available core).
    pub threads: usize,
    /// How activations enter matrix products: [`Precision::Q8`] (fast),
    /// [`Precision::Q16`] (two 8-bit planes, near exact) or
    /// [`Precision::F32`] (exact: weights decoded, f32 activations).
    pub precision: Precision,
}

impl Default for CpuOptions {
    fn default() -> Self {
        Self {
            threads: 0,
            precision: Precision::Q8,
        }
    }
}

impl CpuBackend {
    /// A backend with its own pool of `options.threads` workers.
    pub fn new(options: CpuOptions) -> Result<Self> {
        let threads = if options.threads == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        } else {
            options.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("ferrolm-cpu-{i}"))
            .build()
            .map_err(|e| TransformerError::ThreadPool {
                threads,
                reason: e.to_string(),
            })?;
        Ok(Self {
            pool,
            precision: options.precision,
            attention_log: attention_log::AttentionLog::default(),
            experts: Mutex::new(experts::Scratch::default()),
            repacked: std::sync::atomic::AtomicUsize::new(0),
            rope_cache: Mutex::new(RopeCache::default()),
        })
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// A matrix borrowed from the file, with an interleaved copy when `pack` and
    /// the products take the integer kernels.
    fn load_matrix<'w>(
        &self,
        view: &TensorView<'w>,
        bias: Option<&TensorView<'w>>,
        pack: bool,
    ) -> Result<CpuMatrix<'w>> {
        let (rows, cols) = (view.n_rows() as usize, view.row_len() as usize);
        let q = QMatrix::new(view.ty, rows, cols, view.data).map_err(|_| {
            TransformerError::UnsupportedTensorType {
                name: view.name.to_owned(),
                ty: view.ty,
                backend: "the CPU backend",
            }
        })?;
        let bias = bias
            .map(|b| <Self as Backend<'w>>::vector(self, b))
            .transpose()?;
        if let Some(b) = &bias {
            check("matrix", "bias length", rows, b.len())?;
        }
        let packed = (pack && self.precision != Precision::F32)
            .then(|| self.pool.install(|| Interleaved::new(&q)))
            .flatten();
        if let Some(p) = &packed {
            self.repacked
                .fetch_add(p.bytes(), std::sync::atomic::Ordering::Relaxed);
        }
        Ok(CpuMatrix { q, packed, bias })
    }

    /// Bytes of weights copied at load into the interleaved layout of the
    /// integer kernels (see [`Interleaved`]): memory used beside the mapped file.
    pub fn repacked_bytes(&self) -> usize {
        self.repacked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The precision of matrix products.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Starts (`true`) or stops recording the attention weights of every query row and
    /// head of the forward passes that follow, for diagnostics. Off by default.
    pub fn record_attention(&self, on: bool) {
        self.attention_log.set(on);
    }

    /// Takes the attention rows recorded so far (in no particular order).
    pub fn take_attention(&self) -> Vec<AttentionRow> {
        self.attention_log.take()
    }
}

/// A matrix, its interleaved copy and the output it is multiplied into, as
/// [`QMatrix::forward_many`] takes them.
fn triple<'a, 'w>(
    w: &'a CpuMatrix<'w>,
    out: &'a mut CpuBuffer,
) -> (&'a QMatrix<'w>, Option<&'a Interleaved>, &'a mut [f32]) {
    (&w.q, w.packed.as_ref(), &mut out.data[..])
}

/// A weight matrix on the CPU: borrowed from the file, with the bias its products add.
#[derive(Clone, Debug)]
pub struct CpuMatrix<'w> {
    q: QMatrix<'w>,
    /// The rows in groups of eight, for the integer kernels (see [`Interleaved`]).
    packed: Option<Interleaved>,
    bias: Option<Cow<'w, [f32]>>,
}

impl<'w> CpuMatrix<'w> {
    /// The weights.
    pub fn weights(&self) -> &QMatrix<'w> {
        &self.q
    }

    /// The bias added to every product, if any.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }
}

/// Activations on the CPU: `rows × cols` f32, row-major, with room for more rows.
#[derive(Clone, Debug)]
pub struct CpuBuffer {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    capacity_rows: usize,
}

impl CpuBuffer {
    /// The rows in use, row after row.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Rows in use.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// Activations prepared for matrix products: their 8-bit form (one or two
/// planes, the fast paths) and the f32 values.
#[derive(Debug)]
pub struct CpuPrepared {
    x: Vec<f32>,
    cols: usize,
    quantized: Option<QuantizedActivations>,
    quantized_fresh: bool,
}

fn shape_error(op: &str, what: &str, expected: usize, got: usize) -> TransformerError {
    TransformerError::InvalidBatch {
        reason: format!("{op}: {what} is {got}, expected {expected}"),
    }
}

/// The slots `lo..hi` of a block of `n` positions from `block_first` that a query at `pos`
/// sees when it attends to positions `first..=pos`.
fn visible(block_first: usize, n: usize, first: usize, pos: usize) -> (usize, usize) {
    let lo = first.saturating_sub(block_first).min(n);
    let hi = (pos + 1).saturating_sub(block_first).min(n);
    (lo, hi.max(lo))
}

/// Calls of [`Backend::rope`] with at least this many rows use (and fill) the angle cache.
const ROPE_CACHE_MIN_ROWS: usize = 16;
/// Angle tables kept: a model's RoPE settings (Gemma 3 has two) times the q/k of a batch.
const ROPE_CACHE_ENTRIES: usize = 4;

/// The cos/sin tables of the last few (positions, RoPE settings) the forward pass rotated
/// many rows with: a prompt's layers all rotate the same positions the same way.
#[derive(Debug, Default)]
struct RopeCache {
    entries: Vec<RopeEntry>,
    clock: u64,
}

#[derive(Debug)]
struct RopeEntry {
    positions: Vec<u32>,
    rope: Rope,
    factors: Vec<f32>,
    /// Per position: `n_rot / 2` cosines, then as many sines.
    angles: Vec<f32>,
    used: u64,
}

impl RopeCache {
    /// The table for these positions and settings, computed (in parallel) on a miss into
    /// the least recently used entry.
    fn angles(&mut self, positions: &[u32], rope: &Rope, factors: Option<&[f32]>) -> &[f32] {
        self.clock += 1;
        let factors = factors.unwrap_or_default();
        let hit = self
            .entries
            .iter()
            .position(|e| e.rope == *rope && e.positions == positions && e.factors == factors);
        let at = if let Some(at) = hit {
            at
        } else {
            let at = if self.entries.len() < ROPE_CACHE_ENTRIES {
                self.entries.push(RopeEntry {
                    positions: Vec::new(),
                    rope: *rope,
                    factors: Vec::new(),
                    angles: Vec::new(),
                    used: 0,
                });
                self.entries.len() - 1
            } else {
                (0..self.entries.len())
                    .min_by_key(|&i| self.entries[i].used)
                    .unwrap_or(0)
            };
            let e = &mut self.entries[at];
            let half = rope.n_rot / 2;
            e.rope = *rope;
            e.positions.clear();
            e.positions.extend_from_slice(positions);
            e.factors.clear();
            e.factors.extend_from_slice(factors);
            e.angles.clear();
            e.angles.resize(positions.len() * 2 * half, 0.0);
            let factors = (!factors.is_empty()).then_some(factors);
            e.angles
                .par_chunks_mut(2 * half)
                .zip(positions)
                .for_each(|(cs, &pos)| {
                    let (cos, sin) = cs.split_at_mut(half);
                    ops::rope_angles(pos, rope, factors, cos, sin);
                });
            at
        };
        self.entries[at].used = self.clock;
        &self.entries[at].angles
    }
}

/// The keys one query token sees: its sequence, key/value head and visible positions.
struct Span {
    layer: usize,
    seq: SeqId,
    kvh: usize,
    first: usize,
    pos: usize,
}

/// Attention of `G` query heads (`head..head + G`, their rows side by side in `qs` and
/// `os`) that share the key/value head and visible keys of `span`: each key and value row
/// is read once for all of them.
fn attend<const G: usize>(
    kv: &CpuKv,
    span: &Span,
    head: usize,
    qs: &[f32],
    p: &AttentionParams,
    log: Option<&attention_log::AttentionLog>,
    os: &mut [f32],
) -> Result<()> {
    let hd = p.head_dim;
    let blocks = || kv.head(span.layer, span.seq, span.kvh);
    let mut total = 0;
    for block in blocks()? {
        let (lo, hi) = visible(block.first_pos, block.n_tokens, span.first, span.pos);
        total += hi - lo;
    }
    os.fill(0.0);
    if total == 0 {
        return Ok(());
    }
    let q: [&[f32]; G] = std::array::from_fn(|g| &qs[g * hd..(g + 1) * hd]);
    SCORES.with_borrow_mut(|scores| -> Result<()> {
        scores.clear();
        scores.resize(G * total, 0.0);
        let mut rows = scores.chunks_mut(total);
        let mut rows: [&mut [f32]; G] = std::array::from_fn(|_| rows.next().unwrap_or_default());
        let mut done = 0;
        for block in blocks()? {
            let (lo, hi) = visible(block.first_pos, block.n_tokens, span.first, span.pos);
            let mut outs = rows.each_mut().map(|r| &mut r[done..done + (hi - lo)]);
            simd::scores_multi(q, &block.keys[lo * hd..hi * hd], p.scale, &mut outs);
            done += hi - lo;
        }
        for (g, row) in rows.iter_mut().enumerate() {
            if let Some(cap) = p.softcap {
                for s in row.iter_mut() {
                    *s = ops::softcap(*s, cap);
                }
            }
            simd::softmax(row);
            if let Some(log) = log {
                log.push(AttentionRow {
                    layer: span.layer,
                    seq: span.seq,
                    position: span.pos,
                    head: head + g,
                    first_key: span.first,
                    weights: row.to_vec(),
                });
            }
        }
        let mut outs = os.chunks_mut(hd);
        let mut outs: [&mut [f32]; G] = std::array::from_fn(|_| outs.next().unwrap_or_default());
        let mut done = 0;
        for block in blocks()? {
            let (lo, hi) = visible(block.first_pos, block.n_tokens, span.first, span.pos);
            let ws = rows.each_ref().map(|r| &r[done..done + (hi - lo)]);
            simd::weighted_sum_multi(ws, &block.values[lo * hd..hi * hd], &mut outs);
            done += hi - lo;
        }
        Ok(())
    })
}

fn check(op: &str, what: &str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(shape_error(op, what, expected, got))
    }
}

/// Below this many values an element-wise operation runs on the calling thread: handing it
/// to the pool costs more than it saves.
const PARALLEL_MIN: usize = 32 * 1024;

/// Largest number of rotated dimension pairs per head.
const MAX_HALF_ROT: usize = crate::config::MAX_HEAD_DIM / 2;

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl<'w> Backend<'w> for CpuBackend {
    type Matrix = CpuMatrix<'w>;
    type Vector = Cow<'w, [f32]>;
    type Buffer = CpuBuffer;
    type Prepared = CpuPrepared;
    type Kv = CpuKv;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    fn weight_copy_bytes(&self) -> usize {
        self.repacked_bytes()
    }

    fn matrix(&self, view: &TensorView<'w>, bias: Option<&TensorView<'w>>) -> Result<Self::Matrix> {
        // Stacked experts (3-D) are multiplied a slice at a time, from the file.
        self.load_matrix(view, bias, view.dims.len() <= 2)
    }

    fn table(&self, view: &TensorView<'w>) -> Result<Self::Matrix> {
        // Read a row at a time: the file's layout serves.
        self.load_matrix(view, None, false)
    }

    fn vector(&self, view: &TensorView<'w>) -> Result<Self::Vector> {
        if view.ty != GgmlType::F32 {
            return Err(TransformerError::UnsupportedTensorType {
                name: view.name.to_owned(),
                ty: view.ty,
                backend: "a norm weight on the CPU backend",
            });
        }
        // Tensor data is aligned in the file; an unaligned one is copied rather than refused.
        Ok(match bytemuck::try_cast_slice(view.data) {
            Ok(v) => Cow::Borrowed(v),
            Err(_) => Cow::Owned(
                view.data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
        })
    }

    fn buffer(&self, rows: usize, cols: usize) -> Result<Self::Buffer> {
        let mut data = Vec::with_capacity(rows * cols);
        data.resize(rows * cols, 0.0);
        Ok(CpuBuffer {
            data,
            rows,
            cols,
            capacity_rows: rows,
        })
    }

    fn prepared(&self, rows: usize, cols: usize) -> Result<Self::Prepared> {
        let quantized = matches!(self.precision, Precision::Q8 | Precision::Q16)
            .then(QuantizedActivations::new);
        Ok(CpuPrepared {
            x: Vec::with_capacity(rows * cols),
            cols,
            quantized,
            quantized_fresh: false,
        })
    }

    fn kv_cache(&self, layout: KvLayout) -> Result<Self::Kv> {
        CpuKv::new(layout)
    }

    fn set_rows(&self, buf: &mut Self::Buffer, rows: usize) -> Result<()> {
        if rows > buf.capacity_rows {
            return Err(shape_error("set_rows", "rows", buf.capacity_rows, rows));
        }
        buf.rows = rows;
        buf.data.resize(rows * buf.cols, 0.0);
        Ok(())
    }

    fn embed(
        &self,
        table: &Self::Matrix,
        tokens: &[u32],
        scale: f32,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        let table = &table.q;
        check("embed", "output rows", tokens.len(), out.rows)?;
        check("embed", "output width", table.cols(), out.cols)?;
        for (&t, row) in tokens.iter().zip(out.data.chunks_exact_mut(out.cols)) {
            if t as usize >= table.rows() {
                return Err(TransformerError::TokenOutOfRange {
                    id: t,
                    vocab: table.rows(),
                });
            }
            table.dequantize_row(t as usize, row)?;
            if scale != 1.0 {
                for x in row.iter_mut() {
                    *x *= scale;
                }
            }
        }
        Ok(())
    }

    fn rms_norm(&self, x: &mut Self::Buffer, w: &Self::Vector, eps: f32) -> Result<()> {
        if w.is_empty() || x.cols % w.len() != 0 {
            return Err(shape_error("rms_norm", "row width", w.len(), x.cols));
        }
        if x.data.len() < PARALLEL_MIN {
            for run in x.data.chunks_exact_mut(w.len()) {
                ops::rms_norm(run, w, eps);
            }
        } else {
            x.data
                .par_chunks_mut(w.len())
                .for_each(|run| ops::rms_norm(run, w, eps));
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
        for (x, o) in x
            .data
            .chunks_exact(x.cols)
            .zip(out.data.chunks_exact_mut(out.cols))
        {
            ops::rms_norm_into(x, w, eps, o);
        }
        Ok(())
    }

    fn prepare(&self, x: &Self::Buffer, out: &mut Self::Prepared) -> Result<()> {
        out.x.clear();
        out.x.extend_from_slice(&x.data);
        out.cols = x.cols;
        out.quantized_fresh = false;
        if let Some(q) = &mut out.quantized
            && x.cols.is_multiple_of(ferrolm_quant::dot::ACT_BLOCK)
        {
            let planes = if self.precision == Precision::Q16 {
                Planes::Two
            } else {
                Planes::One
            };
            q.quantize_planes(&x.data, x.cols, planes)?;
            out.quantized_fresh = true;
        }
        Ok(())
    }

    fn matmul(&self, w: &Self::Matrix, x: &Self::Prepared, out: &mut Self::Buffer) -> Result<()> {
        check("matmul", "output width", w.q.rows(), out.cols)?;
        let input = match &x.quantized {
            Some(q) if x.quantized_fresh => Input::with_quantized(&x.x, q)?,
            _ => Input::f32(&x.x, x.cols)?,
        };
        check("matmul", "output rows", input.rows(), out.rows)?;
        w.q.forward_with(w.packed.as_ref(), &input, &mut out.data)?;
        if let Some(bias) = &w.bias {
            for row in out.data.chunks_exact_mut(out.cols) {
                row.iter_mut().zip(bias.iter()).for_each(|(y, b)| *y += b);
            }
        }
        Ok(())
    }

    fn matmul_many(
        &self,
        ws: &[&Self::Matrix],
        x: &Self::Prepared,
        outs: &mut [&mut Self::Buffer],
    ) -> Result<()> {
        check("matmul_many", "outputs", ws.len(), outs.len())?;
        let input = match &x.quantized {
            Some(q) if x.quantized_fresh => Input::with_quantized(&x.x, q)?,
            _ => Input::f32(&x.x, x.cols)?,
        };
        for (w, out) in ws.iter().zip(outs.iter()) {
            check("matmul_many", "output width", w.q.rows(), out.cols)?;
            check("matmul_many", "output rows", input.rows(), out.rows)?;
        }
        // The projections that share an input come in twos and threes.
        match (ws, &mut *outs) {
            ([a, b], [oa, ob]) => {
                QMatrix::forward_many(&mut [triple(a, oa), triple(b, ob)], &input)?;
            }
            ([a, b, c], [oa, ob, oc]) => {
                QMatrix::forward_many(&mut [triple(a, oa), triple(b, ob), triple(c, oc)], &input)?;
            }
            _ => {
                for (w, out) in ws.iter().zip(outs.iter_mut()) {
                    w.q.forward_with(w.packed.as_ref(), &input, &mut out.data)?;
                }
            }
        }
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            if let Some(bias) = &w.bias {
                for row in out.data.chunks_exact_mut(out.cols) {
                    row.iter_mut().zip(bias.iter()).for_each(|(y, b)| *y += b);
                }
            }
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
        if let Some(f) = factors {
            check("rope", "frequency factors", rope.n_rot / 2, f.len())?;
        }
        let factors = factors.map(|f| &f[..]);
        if head_dim == 0
            || x.cols % head_dim != 0
            || rope.n_rot > head_dim
            || rope.n_rot / 2 > MAX_HALF_ROT
        {
            return Err(shape_error("rope", "row width", head_dim, x.cols));
        }
        let half = rope.n_rot / 2;
        let cols = x.cols;
        // Many rows (a prompt): the angles of these positions serve every layer's queries
        // and keys, so they are computed once and kept.
        if positions.len() >= ROPE_CACHE_MIN_ROWS {
            let mut cache = self
                .rope_cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let angles = cache.angles(positions, rope, factors);
            x.data
                .par_chunks_mut(cols)
                .zip(angles.par_chunks(2 * half))
                .for_each(|(row, cs)| {
                    let (cos, sin) = cs.split_at(half);
                    for head in row.chunks_exact_mut(head_dim) {
                        ops::rope_head(head, rope.style, cos, sin);
                    }
                });
            return Ok(());
        }
        let rotate = |(row, &pos): (&mut [f32], &u32)| {
            let mut cos = [0.0f32; MAX_HALF_ROT];
            let mut sin = [0.0f32; MAX_HALF_ROT];
            let (cos, sin) = (&mut cos[..half], &mut sin[..half]);
            ops::rope_angles(pos, rope, factors, cos, sin);
            for head in row.chunks_exact_mut(head_dim) {
                ops::rope_head(head, rope.style, cos, sin);
            }
        };
        if x.data.len() < PARALLEL_MIN {
            x.data
                .chunks_exact_mut(cols)
                .zip(positions)
                .for_each(rotate);
        } else {
            x.data.par_chunks_mut(cols).zip(positions).for_each(rotate);
        }
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
        ] {
            check("attention", what, n, rows)?;
        }
        // Consecutive tokens of one sequence are stored in one call.
        let mut i = 0;
        while i < n {
            let seq = batch.seqs[i];
            let run = batch.seqs[i..].iter().take_while(|&&s| s == seq).count();
            let rows = i * k.cols..(i + run) * k.cols;
            kv.store(
                layer,
                seq,
                batch.positions[i] as usize,
                &k.data[rows.clone()],
                &v.data[rows],
            )?;
            i += run;
        }
        let group = p.n_head / p.n_head_kv;
        let n_ctx = kv.layout().n_ctx;
        let kv = &*kv;
        let log = self.attention_log.active();
        // Enough rows to keep every thread busy: one task per token and key/value head,
        // whose query heads read each key and value row once for all of them.
        if group > 1 && n >= 2 * self.threads() {
            return out
                .data
                .par_chunks_mut(hd * group)
                .enumerate()
                .try_for_each(|(task, o)| -> Result<()> {
                    let (i, kvh) = (task / p.n_head_kv, task % p.n_head_kv);
                    let pos = batch.positions[i] as usize;
                    let span = Span {
                        layer,
                        seq: batch.seqs[i],
                        kvh,
                        first: p.window.map_or(0, |w| (pos + 1).saturating_sub(w)),
                        pos,
                    };
                    let q_row = &q.row(i)[kvh * group * hd..(kvh + 1) * group * hd];
                    let mut h0 = 0;
                    for (qs, os) in q_row.chunks(4 * hd).zip(o.chunks_mut(4 * hd)) {
                        let head = kvh * group + h0;
                        match qs.len() / hd {
                            1 => attend::<1>(kv, &span, head, qs, p, log, os)?,
                            2 => attend::<2>(kv, &span, head, qs, p, log, os)?,
                            3 => attend::<3>(kv, &span, head, qs, p, log, os)?,
                            _ => attend::<4>(kv, &span, head, qs, p, log, os)?,
                        }
                        h0 += qs.len() / hd;
                    }
                    Ok(())
                });
        }
        out.data
            .par_chunks_mut(hd)
            .enumerate()
            .try_for_each(|(task, o)| -> Result<()> {
                let (i, h) = (task / p.n_head, task % p.n_head);
                let pos = batch.positions[i] as usize;
                let first = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
                let qh = &q.row(i)[h * hd..(h + 1) * hd];
                let kvh = h / group;
                SCORES.with_borrow_mut(|scores| -> Result<()> {
                    scores.clear();
                    // Room for a whole context at once, so a growing sequence never reallocates.
                    scores.reserve(n_ctx);
                    for block in kv.head(layer, batch.seqs[i], kvh)? {
                        let (lo, hi) = visible(block.first_pos, block.n_tokens, first, pos);
                        simd::scores(qh, &block.keys[lo * hd..hi * hd], p.scale, scores);
                    }
                    if let Some(cap) = p.softcap {
                        for s in scores.iter_mut() {
                            *s = ops::softcap(*s, cap);
                        }
                    }
                    simd::softmax(scores);
                    if let Some(log) = log {
                        log.push(AttentionRow {
                            layer,
                            seq: batch.seqs[i],
                            position: pos,
                            head: h,
                            first_key: first,
                            weights: scores.clone(),
                        });
                    }
                    o.fill(0.0);
                    let mut done = 0;
                    for block in kv.head(layer, batch.seqs[i], kvh)? {
                        let (lo, hi) = visible(block.first_pos, block.n_tokens, first, pos);
                        let w = &scores[done..done + (hi - lo)];
                        simd::weighted_sum(w, &block.values[lo * hd..hi * hd], o);
                        done += hi - lo;
                    }
                    Ok(())
                })
            })
    }

    fn add(&self, x: &mut Self::Buffer, y: &Self::Buffer) -> Result<()> {
        check("add", "length", x.data.len(), y.data.len())?;
        x.data.iter_mut().zip(&y.data).for_each(|(a, b)| *a += b);
        Ok(())
    }

    fn glu(&self, gate: &mut Self::Buffer, up: &Self::Buffer, act: Glu) -> Result<()> {
        check("glu", "length", gate.data.len(), up.data.len())?;
        // Row by row, so a row's values take the same (vector or scalar) path whatever the
        // batch: a batch's rows equal the same rows alone.
        let cols = gate.cols.max(1);
        let rows = |g: &mut [f32], u: &[f32]| {
            for (g, u) in g.chunks_mut(cols).zip(u.chunks(cols)) {
                simd::glu(g, u, act);
            }
        };
        if gate.data.len() < PARALLEL_MIN {
            rows(&mut gate.data, &up.data);
        } else {
            let task = (4096 / cols).max(1) * cols;
            gate.data
                .par_chunks_mut(task)
                .zip(up.data.par_chunks(task))
                .for_each(|(g, u)| rows(g, u));
        }
        Ok(())
    }

    fn softcap(&self, x: &mut Self::Buffer, cap: f32) -> Result<()> {
        x.data.iter_mut().for_each(|v| *v = ops::softcap(*v, cap));
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
        for (l, c) in logits
            .data
            .chunks_exact(logits.cols)
            .zip(choice.data.chunks_exact_mut(choice.cols))
        {
            experts::route(l, routing, c);
        }
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
        let mut scratch = self
            .experts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        experts::matmul(
            &mut scratch,
            self.precision,
            &experts.q,
            n_expert,
            choice,
            x,
            out,
        )
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
        for ((c, ys), o) in choice
            .data
            .chunks_exact(choice.cols)
            .zip(y.data.chunks_exact(y.cols * k))
            .zip(out.data.chunks_exact_mut(out.cols))
        {
            o.fill(0.0);
            for (&w, yj) in c[k..].iter().zip(ys.chunks_exact(y.cols)) {
                ops::axpy(w, yj, o);
            }
        }
        Ok(())
    }

    fn gather_rows(&self, x: &Self::Buffer, rows: &[usize], out: &mut Self::Buffer) -> Result<()> {
        check("gather_rows", "width", x.cols, out.cols)?;
        check("gather_rows", "output rows", rows.len(), out.rows)?;
        for (&r, o) in rows.iter().zip(out.data.chunks_exact_mut(out.cols)) {
            if r >= x.rows {
                return Err(shape_error("gather_rows", "row index", x.rows, r));
            }
            o.copy_from_slice(x.row(r));
        }
        Ok(())
    }

    fn read(&self, x: &Self::Buffer, out: &mut [f32]) -> Result<()> {
        check("read", "length", x.data.len(), out.len())?;
        out.copy_from_slice(&x.data);
        Ok(())
    }

    fn read_argmax(&self, x: &Self::Buffer, out: &mut [u32]) -> Result<()> {
        check("read_argmax", "rows", x.rows, out.len())?;
        if x.cols > 0 {
            for (o, row) in out.iter_mut().zip(x.data.chunks_exact(x.cols)) {
                *o = crate::backend::argmax_row(row).ok_or(SamplingError::NoSelectableToken {
                    n_candidates: x.cols,
                })?;
            }
        }
        Ok(())
    }

    fn read_argmax_masked(&self, x: &Self::Buffer, allowed: &[u32], out: &mut [u32]) -> Result<()> {
        check("read_argmax", "rows", x.rows, out.len())?;
        if x.cols > 0 {
            for (o, row) in out.iter_mut().zip(x.data.chunks_exact(x.cols)) {
                *o = crate::backend::argmax_row_masked(row, allowed).ok_or(
                    SamplingError::NoSelectableToken {
                        n_candidates: x.cols,
                    },
                )?;
            }
        }
        Ok(())
    }

    fn kv_layout(&self, kv: &Self::Kv) -> KvLayout {
        kv.layout()
    }

    fn kv_len(&self, kv: &Self::Kv, seq: SeqId) -> usize {
        kv.len(seq)
    }

    fn kv_reserve(&self, kv: &mut Self::Kv, batch: &Batch<'_>) -> Result<()> {
        kv.reserve(batch)
    }

    fn kv_blocks(&self, kv: &Self::Kv) -> crate::backend::KvBlocks {
        crate::backend::KvBlocks::of(kv.paged().ledger())
    }

    fn kv_truncate(&self, kv: &mut Self::Kv, seq: SeqId, len: usize) -> Result<()> {
        kv.truncate(seq, len)
    }

    fn kv_share(&self, kv: &mut Self::Kv, dst: SeqId, src: SeqId, len: usize) -> Result<()> {
        kv.share(dst, src, len)
    }

    fn kv_clear(&self, kv: &mut Self::Kv) {
        kv.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RopeStyle;

    /// Many-row calls read the angle cache; each row must equal the same row rotated alone
    /// (which computes its angles afresh), through hits, misses and evictions.
    #[test]
    fn cached_rope_angles_give_the_rows_rotated_one_at_a_time() {
        let backend = CpuBackend::new(CpuOptions {
            threads: 2,
            precision: Precision::Q8,
        })
        .expect("backend");
        let (head_dim, heads, rows) = (64, 2, 40);
        let cols = head_dim * heads;
        let factors: Cow<'_, [f32]> = Cow::Owned((0..16).map(|i| 1.0 + i as f32 * 0.5).collect());
        let settings = [
            (Rope::plain(10_000.0, 64, RopeStyle::Adjacent), None),
            (Rope::plain(1_000_000.0, 64, RopeStyle::Halves), None),
            (Rope::plain(10_000.0, 32, RopeStyle::Halves), Some(&factors)),
        ];
        let input: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        // Enough (positions, settings) pairs to evict, then the first ones again.
        let runs: Vec<(Vec<u32>, usize)> = (0..7u32)
            .map(|r| {
                let positions = (0..rows as u32).map(|p| p * (r % 3 + 1) + r).collect();
                (positions, r as usize % 3)
            })
            .chain([
                ((0..rows as u32).collect(), 0),
                ((5..5 + rows as u32).collect(), 2),
            ])
            .collect();
        for (positions, s) in runs {
            let (rope, f) = &settings[s];
            let mut all = backend.buffer(rows, cols).expect("buffer");
            all.data.copy_from_slice(&input);
            backend
                .rope(&mut all, head_dim, &positions, rope, *f)
                .expect("rope");
            for (r, &pos) in positions.iter().enumerate() {
                let mut one = backend.buffer(1, cols).expect("buffer");
                one.data.copy_from_slice(&input[r * cols..(r + 1) * cols]);
                backend
                    .rope(&mut one, head_dim, &[pos], rope, *f)
                    .expect("rope");
                assert_eq!(
                    one.data,
                    all.data[r * cols..(r + 1) * cols],
                    "row {r}, setting {s}"
                );
            }
        }
    }
}
