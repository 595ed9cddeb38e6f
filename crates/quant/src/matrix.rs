//! The weight-matrix seam the model code multiplies through: a borrowed 2-D
//! tensor of any supported type, multiplied by one activation vector
//! (decode) or many (prefill), on the current rayon thread pool.
//!
//! Three precisions: [`Precision::Q8`] quantizes the activations to 8 bits
//! once per input (as llama.cpp does, but with f32 scales per 32 values)
//! and uses integer dot products; [`Precision::Q16`] adds a second 8-bit
//! plane for the rounding residual (about 16-bit activations, still integer
//! SIMD); [`Precision::F32`] decodes the weights exactly and multiplies in
//! f32. Float weight types always take the f32 path.
//!
//! ```
//! use ferrolm_quant::{quantize_row, row_size, GgmlType, MatScratch, Precision, QMatrix};
//!
//! # fn main() -> Result<(), ferrolm_quant::QuantError> {
//! let (rows, cols) = (8, 64);
//! let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
//! let mut data = vec![0u8; rows * row_size(GgmlType::Q8_0, cols)?];
//! quantize_row(GgmlType::Q8_0, &w, &mut data)?;
//! let m = QMatrix::new(GgmlType::Q8_0, rows, cols, &data)?;
//!
//! // Decode: one vector; the scratch is reused from call to call.
//! let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.2).sin()).collect();
//! let mut y = vec![0.0f32; rows];
//! let mut scratch = MatScratch::new(Precision::Q8);
//! m.matvec(&x, &mut y, &mut scratch)?;
//!
//! // Several matrices that take the same input share one preparation.
//! let input = scratch.prepare(&x, cols)?;
//! let mut y2 = vec![0.0f32; rows];
//! m.forward(&input, &mut y2)?;
//! assert_eq!(y, y2);
//!
//! let exact: f32 = w[..cols].iter().zip(&x).map(|(a, b)| a * b).sum();
//! assert!((y[0] - exact).abs() < 0.05);
//! # Ok(()) }
//! ```

use ferrolm_gguf::GgmlType;
use rayon::prelude::*;

use crate::QuantError;
use crate::dot::{ActRow, F32Dot, Planes, QuantizedActivations};
use crate::interleave::{GROUP_ROWS, Interleaved};
use crate::simd::{self, Dequantizer, DotQ8Fn, DotQ8RowsFn, InterleavedFn};

/// How activations enter the dot products of one vector (decode) or a few.
///
/// Batches large enough to fill the f32 matrix-multiply kernel (16 rows and
/// up; 8 with AVX2 only) always take the exact f32 path: there it is faster
/// than the integer kernels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// 8-bit activations, integer dot products: the fast path.
    #[default]
    Q8,
    /// Activations as two 8-bit planes (value and residual, about 16 bits),
    /// integer dot products: within ~1/65000 of each block's largest value,
    /// for a fraction more time than [`Precision::Q8`].
    Q16,
    /// f32 activations against exactly decoded weights: the exact path.
    F32,
}

/// Reusable buffers for [`QMatrix`] products: the quantized activations.
/// Per-thread decode tiles of the f32 prefill path live in thread-locals,
/// so after the first call of a given size nothing is allocated.
#[derive(Clone, Debug, Default)]
pub struct MatScratch {
    precision: Precision,
    acts: QuantizedActivations,
}

impl MatScratch {
    /// Buffers for products at `precision`.
    pub fn new(precision: Precision) -> Self {
        Self {
            precision,
            acts: QuantizedActivations::new(),
        }
    }

    /// The precision inputs are prepared at.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Changes the precision of later [`MatScratch::prepare`] calls.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// Prepares `x` (rows of `cols` values, row-major) once for every matrix
    /// that multiplies it: at [`Precision::Q8`] and [`Precision::Q16`] it
    /// is quantized here (when `cols` is a multiple of 32).
    pub fn prepare<'a>(&'a mut self, x: &'a [f32], cols: usize) -> Result<Input<'a>, QuantError> {
        let n = rows_of(x.len(), cols)?;
        let planes = match self.precision {
            Precision::Q8 => Some(Planes::One),
            Precision::Q16 => Some(Planes::Two),
            Precision::F32 => None,
        };
        let quantized = match planes {
            Some(planes) if cols.is_multiple_of(32) && !uses_f32_tiles(simd::isa(), n) => {
                self.acts.quantize_planes(x, cols, planes)?;
                Some(&self.acts)
            }
            _ => None,
        };
        Ok(Input {
            x,
            n,
            cols,
            quantized,
        })
    }
}

/// Whether `n` activation rows are enough to fill the f32 matrix-multiply
/// kernel; from there it is faster than the integer path as well as exact.
fn uses_f32_tiles(isa: simd::Isa, n: usize) -> bool {
    n > 1 && n >= simd::F32Gemm::new(isa).lanes / 2
}

fn rows_of(len: usize, cols: usize) -> Result<usize, QuantError> {
    if cols == 0 || !len.is_multiple_of(cols) || len == 0 {
        return Err(QuantError::LengthMismatch {
            what: "activations (a non-zero multiple of the row length)",
            expected: len.next_multiple_of(cols.max(1)).max(cols),
            got: len,
        });
    }
    Ok(len / cols)
}

/// Activations ready for any number of [`QMatrix::forward`] calls: `n` rows
/// of `cols` values, with their 8-bit form when it was made.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    x: &'a [f32],
    n: usize,
    cols: usize,
    quantized: Option<&'a QuantizedActivations>,
}

impl<'a> Input<'a> {
    /// f32 activations only: every product takes the exact path.
    pub fn f32(x: &'a [f32], cols: usize) -> Result<Self, QuantError> {
        Ok(Self {
            x,
            n: rows_of(x.len(), cols)?,
            cols,
            quantized: None,
        })
    }

    /// Activations quantized by the caller, with their f32 originals (which
    /// float weight types use).
    pub fn with_quantized(
        x: &'a [f32],
        quantized: &'a QuantizedActivations,
    ) -> Result<Self, QuantError> {
        let cols = quantized.cols();
        let n = rows_of(x.len(), cols)?;
        if n != quantized.rows() {
            return Err(QuantError::LengthMismatch {
                what: "quantized activation rows",
                expected: n,
                got: quantized.rows(),
            });
        }
        Ok(Self {
            x,
            n,
            cols,
            quantized: Some(quantized),
        })
    }

    /// Activation rows.
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// A borrowed 2-D weight tensor in GGUF order: `rows` rows (dims\[1\]) of
/// `cols` values (dims\[0\]), each row `row_size(ty, cols)` bytes.
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: &'a [u8],
}

/// Multiply-adds per parallel task at least, so that a task is worth its scheduling.
const MIN_TASK_VALUES: usize = 64 * 1024;
/// Multiply-adds from which a product is split finer than one task per thread.
const LARGE_PRODUCT: usize = 4 << 20;
/// Activation rows the integer path multiplies per pass over the weights
/// (larger batches take the f32 tiles anyway).
const Q8_BATCH: usize = 16;
/// Bytes of weights a batch of activations passes over while they stay in L1.
const Q8_TILE_BYTES: usize = 16 << 10;
/// Kernel weight-row groups decoded together on the f32 prefill path.
const F32_TILE_WROWS: usize = 2;

/// Per-thread buffers of the f32 prefill path: packed activations, the
/// decoded weight tile, and one kernel output.
type F32Buffers = (Vec<f32>, Vec<f32>, Vec<f32>);

thread_local! {
    static F32_BUFFERS: std::cell::RefCell<F32Buffers> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

impl<'a> QMatrix<'a> {
    /// Wraps `data` as a `rows × cols` matrix of `ty`, checking that the type
    /// can be multiplied and that `data` is exactly the right size.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Result<Self, QuantError> {
        if F32Dot::new(ty, simd::Isa::Scalar).is_none() {
            return Err(QuantError::Unsupported {
                ty,
                op: "matrix multiplication",
            });
        }
        let row_bytes = crate::row_size(ty, cols)?;
        let expected = row_bytes
            .checked_mul(rows)
            .ok_or(QuantError::LengthMismatch {
                what: "matrix bytes (overflow)",
                expected: usize::MAX,
                got: data.len(),
            })?;
        if data.len() != expected || cols == 0 || rows == 0 {
            return Err(QuantError::ByteLength {
                ty,
                elements: rows.saturating_mul(cols),
                expected,
                got: data.len(),
            });
        }
        Ok(Self {
            ty,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    /// Element type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Output size: rows of the weight matrix.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input size: values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The borrowed bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Bytes of row `r`, or `None` past the end.
    pub fn row(&self, r: usize) -> Option<&'a [u8]> {
        self.data.get(r * self.row_bytes..(r + 1) * self.row_bytes)
    }

    /// Decodes row `r` into `out` (`cols` values) with the SIMD decoder,
    /// bit-identical to [`crate::dequantize_row`] (e.g. an embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<(), QuantError> {
        let row = self.row(r).ok_or(QuantError::LengthMismatch {
            what: "row index",
            expected: self.rows,
            got: r,
        })?;
        Self::check_len("out", out.len(), self.cols)?;
        match Dequantizer::new(self.ty, simd::isa()) {
            Some(dequant) => dequant.run(row, out),
            None => crate::dequantize_row(self.ty, row, out)?,
        }
        Ok(())
    }

    /// `y = W x` for one vector (`x`: `cols`, `y`: `rows`) at the scratch's precision.
    pub fn matvec(
        &self,
        x: &[f32],
        y: &mut [f32],
        scratch: &mut MatScratch,
    ) -> Result<(), QuantError> {
        Self::check_len("x", x.len(), self.cols)?;
        self.forward(&scratch.prepare(x, self.cols)?, y)
    }

    /// `Y = X Wᵀ` for `n` rows (`x`: `n × cols`, `y`: `n × rows`, both
    /// row-major) at the scratch's precision.
    pub fn matmul(
        &self,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        scratch: &mut MatScratch,
    ) -> Result<(), QuantError> {
        Self::check_len("x", x.len(), n.saturating_mul(self.cols))?;
        self.forward(&scratch.prepare(x, self.cols)?, y)
    }

    /// `Y = X Wᵀ` for prepared activations (`y`: `input.rows() × rows`).
    /// Takes the 8-bit path when `input` carries quantized activations and
    /// this type has an integer kernel, else the exact f32 path.
    pub fn forward(&self, input: &Input<'_>, y: &mut [f32]) -> Result<(), QuantError> {
        self.forward_with(None, input, y)
    }

    /// [`QMatrix::forward`] reading the full groups of eight rows from
    /// `packed`, this matrix's [`Interleaved`] copy, on the integer path
    /// (the f32 path reads the GGUF layout): the same results, faster.
    pub fn forward_with(
        &self,
        packed: Option<&Interleaved>,
        input: &Input<'_>,
        y: &mut [f32],
    ) -> Result<(), QuantError> {
        self.check_packed(packed)?;
        Self::check_len("input row", input.cols, self.cols)?;
        Self::check_len("y", y.len(), input.n.saturating_mul(self.rows))?;
        let isa = simd::isa();
        let tiled = uses_f32_tiles(isa, input.n);
        if let (false, Some(acts), Some(kernels)) =
            (tiled, input.quantized, self.row_kernels(packed, isa))
        {
            self.forward_q8(acts, &kernels, y);
            return Ok(());
        }
        let dot = F32Dot::new(self.ty, isa).ok_or(QuantError::Unsupported {
            ty: self.ty,
            op: "matrix multiplication",
        })?;
        match (tiled, Dequantizer::new(self.ty, isa)) {
            (true, Some(dequant)) => self.forward_f32_tiles(input.x, input.n, dequant, y),
            _ => self.forward_f32_rows(input.x, dot, y),
        }
        Ok(())
    }

    /// [`QMatrix::forward_with`] for several matrices that take the same
    /// input (q/k/v, gate/up), in one parallel pass: the pool's threads are
    /// woken once instead of once per matrix. `outputs` gives each matrix
    /// with its interleaved copy, if any, and its `y`; every triple is
    /// checked before anything runs. Each result equals the matrix's own
    /// [`QMatrix::forward_with`].
    pub fn forward_many(
        outputs: &mut [(&QMatrix<'_>, Option<&Interleaved>, &mut [f32])],
        input: &Input<'_>,
    ) -> Result<(), QuantError> {
        for (m, p, y) in outputs.iter() {
            m.check_packed(*p)?;
            Self::check_len("input row", input.cols, m.cols)?;
            Self::check_len("y", y.len(), input.n.saturating_mul(m.rows))?;
        }
        let isa = simd::isa();
        let act = match input.quantized {
            Some(acts) if input.n == 1 && !uses_f32_tiles(isa, 1) => acts.row(0),
            _ => None,
        };
        let all_integer = outputs
            .iter()
            .all(|(m, _, _)| crate::dot::q8_kernel(m.ty, isa).is_some());
        let Some(act) = act.filter(|_| all_integer) else {
            return Self::forward_split(outputs, input);
        };
        // One vector: tasks of about equal work across all the matrices,
        // split by nested joins (nothing is allocated).
        let total: usize = outputs.iter().map(|(m, _, _)| m.rows * m.cols).sum();
        let threads = rayon::current_num_threads().max(1);
        let per_thread = if total < LARGE_PRODUCT { 1 } else { 4 };
        let task_values = (total / (threads * per_thread)).max(MIN_TASK_VALUES);
        outputs.par_iter_mut().for_each(|(m, p, y)| {
            let Some(k) = m.row_kernels(*p, isa) else {
                return;
            };
            let chunk = (task_values / m.cols).max(1).next_multiple_of(GROUP_ROWS);
            y.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(t, ys)| m.dot_rows(t * chunk, act, ys, &k));
        });
        Ok(())
    }

    fn forward_split(
        outputs: &mut [(&QMatrix<'_>, Option<&Interleaved>, &mut [f32])],
        input: &Input<'_>,
    ) -> Result<(), QuantError> {
        match outputs {
            [] => Ok(()),
            [(m, p, y)] => m.forward_with(*p, input, y),
            _ => {
                let (left, right) = outputs.split_at_mut(outputs.len() / 2);
                let (a, b) = rayon::join(
                    || Self::forward_split(left, input),
                    || Self::forward_split(right, input),
                );
                a.and(b)
            }
        }
    }

    /// The integer kernels of this matrix at level `isa`, or `None` when
    /// its type has none.
    fn row_kernels<'p>(
        &self,
        packed: Option<&'p Interleaved>,
        isa: simd::Isa,
    ) -> Option<RowKernels<'p>> {
        Some(RowKernels {
            kernel: crate::dot::q8_kernel(self.ty, isa)?,
            multi: simd::dot_q8_rows_kernel(self.ty, isa),
            groups: packed.and_then(|p| Some((p, simd::interleaved_kernel(p.format(), isa)?))),
        })
    }

    /// Checks that `packed` was made from a matrix of this shape and type.
    fn check_packed(&self, packed: Option<&Interleaved>) -> Result<(), QuantError> {
        let expected = self.rows / GROUP_ROWS * GROUP_ROWS;
        match packed {
            Some(p) if p.ty() != self.ty || p.cols() != self.cols || p.rows() != expected => {
                Err(QuantError::LengthMismatch {
                    what: "rows of the interleaved copy (not made from this matrix)",
                    expected,
                    got: p.rows(),
                })
            }
            _ => Ok(()),
        }
    }

    fn check_len(what: &'static str, got: usize, expected: usize) -> Result<(), QuantError> {
        if got == expected {
            Ok(())
        } else {
            Err(QuantError::LengthMismatch {
                what,
                expected,
                got,
            })
        }
    }

    /// Rows per parallel task for `work_per_row` multiply-adds a row. Small
    /// products get one task per thread (each extra task costs more than it
    /// balances); large ones four, so that a thread that falls behind can be
    /// helped.
    fn task_rows(rows: usize, work_per_row: usize) -> usize {
        let threads = rayon::current_num_threads().max(1);
        let min_rows = MIN_TASK_VALUES.div_ceil(work_per_row.max(1)).max(1);
        let per_thread = if rows.saturating_mul(work_per_row) < LARGE_PRODUCT {
            1
        } else {
            4
        };
        rows.div_ceil(per_thread * threads)
            .max(min_rows)
            .min(rows.max(1))
    }

    fn forward_q8(&self, acts: &QuantizedActivations, kernels: &RowKernels<'_>, y: &mut [f32]) {
        let n = acts.rows();
        if n == 1 {
            let Some(act) = acts.row(0) else { return };
            let chunk = Self::task_rows(self.rows, self.cols).next_multiple_of(GROUP_ROWS);
            y.par_chunks_mut(chunk).enumerate().for_each(|(t, ys)| {
                self.dot_rows(t * chunk, act, ys, kernels);
            });
            return;
        }
        // Split by weight rows, each task for every activation, so the
        // weights are read from memory once whatever the batch.
        let chunk = Self::task_rows(self.rows, self.cols * n.min(Q8_BATCH));
        for (g, ys) in y.chunks_mut(Q8_BATCH * self.rows).enumerate() {
            let mut parts: [&mut [f32]; Q8_BATCH] = std::array::from_fn(|_| Default::default());
            for (part, y) in parts.iter_mut().zip(ys.chunks_mut(self.rows)) {
                *part = y;
            }
            let batch = Q8Batch {
                m: self,
                acts,
                first_act: g * Q8_BATCH,
                chunk,
                kernels,
            };
            batch.run(0, parts);
        }
    }

    /// Weight rows `first..first + ys.len()` against `act` into `ys`: the
    /// full interleaved groups through the group kernel, the other rows
    /// with the GGUF layout's kernels. A row's result depends only on the
    /// row, as long as `first` is a multiple of eight.
    fn dot_rows(&self, first: usize, act: ActRow<'_>, ys: &mut [f32], kernels: &RowKernels<'_>) {
        let mut done = 0;
        if let Some((p, group)) = kernels.groups
            && first.is_multiple_of(GROUP_ROWS)
        {
            done = p.rows().saturating_sub(first).min(ys.len()) / GROUP_ROWS * GROUP_ROWS;
            if done > 0 {
                let data = p.groups(first / GROUP_ROWS, done / GROUP_ROWS);
                group(data, p.group_len(), act, &mut ys[..done]);
            }
        }
        let (first, ys) = (first + done, &mut ys[done..]);
        if ys.is_empty() {
            return;
        }
        let data = &self.data[first * self.row_bytes..][..ys.len() * self.row_bytes];
        match kernels.multi {
            Some(rows) => rows(data, self.row_bytes, act, ys),
            None => {
                for (y, row) in ys.iter_mut().zip(data.chunks_exact(self.row_bytes)) {
                    *y = (kernels.kernel)(row, act);
                }
            }
        }
    }

    fn forward_f32_rows(&self, x: &[f32], dot: F32Dot, y: &mut [f32]) {
        let n = x.len() / self.cols;
        for (x, y) in x
            .chunks_exact(self.cols)
            .zip(y.chunks_exact_mut(self.rows))
            .take(n)
        {
            let chunk = Self::task_rows(self.rows, self.cols);
            y.par_chunks_mut(chunk).enumerate().for_each(|(t, ys)| {
                let first = t * chunk;
                let rows = self.data[first * self.row_bytes..].chunks_exact(self.row_bytes);
                for (y, row) in ys.iter_mut().zip(rows) {
                    *y = dot.dot(row, x);
                }
            });
        }
    }

    /// The exact prefill path. Each task takes a run of activation rows,
    /// packs them k-major once, then for each tile of weight rows decodes
    /// the tile to f32 and multiplies it with every packed block.
    fn forward_f32_tiles(&self, x: &[f32], n: usize, dequant: Dequantizer, y: &mut [f32]) {
        let gemm = simd::F32Gemm::new(simd::isa());
        let (lanes, wrows) = (gemm.lanes, gemm.wrows);
        let tile_rows = F32_TILE_WROWS * wrows;
        let threads = rayon::current_num_threads().max(1);
        // Few large tasks: each one decodes every weight tile once.
        let chunk = n.div_ceil(2 * threads).next_multiple_of(lanes).min(n);
        let (rows, cols) = (self.rows, self.cols);
        y.par_chunks_mut(chunk * rows)
            .enumerate()
            .for_each(|(t, ys)| {
                let nt = ys.len() / rows;
                let xs = &x[t * chunk * cols..][..nt * cols];
                F32_BUFFERS.with_borrow_mut(|(xp, tile, out)| {
                    let blocks = nt.div_ceil(lanes);
                    xp.clear();
                    xp.resize(blocks * cols * lanes, 0.0);
                    for (c, xrow) in xs.chunks_exact(cols).enumerate() {
                        let (b, l) = (c / lanes, c % lanes);
                        let packed = &mut xp[b * cols * lanes..(b + 1) * cols * lanes];
                        for (p, &v) in packed.iter_mut().skip(l).step_by(lanes).zip(xrow) {
                            *p = v;
                        }
                    }
                    tile.resize(tile_rows * cols, 0.0);
                    out.resize(wrows * lanes, 0.0);
                    for r0 in (0..rows).step_by(tile_rows) {
                        let tr = tile_rows.min(rows - r0);
                        let bytes = &self.data[r0 * self.row_bytes..(r0 + tr) * self.row_bytes];
                        for (row, w) in bytes
                            .chunks_exact(self.row_bytes)
                            .zip(tile.chunks_exact_mut(cols))
                        {
                            dequant.run(row, w);
                        }
                        let padded = tr.next_multiple_of(wrows);
                        tile[tr * cols..padded * cols].fill(0.0);
                        for (b, packed) in xp.chunks_exact(cols * lanes).enumerate() {
                            for j0 in (0..tr).step_by(wrows) {
                                gemm.run(packed, &tile[j0 * cols..(j0 + wrows) * cols], cols, out);
                                // Output row `b·lanes + l` takes lane `l` of the tile's rows.
                                let (nw, nl) = ((tr - j0).min(wrows), (nt - b * lanes).min(lanes));
                                for l in 0..nl {
                                    let at = (b * lanes + l) * rows + r0 + j0;
                                    for (y, o) in ys[at..at + nw]
                                        .iter_mut()
                                        .zip(out[l..].iter().step_by(lanes))
                                    {
                                        *y = *o;
                                    }
                                }
                            }
                        }
                    }
                });
            });
    }
}

/// The integer kernels a product uses: one row, several rows of the GGUF
/// layout where the level has them, and interleaved groups where the
/// matrix has a copy.
struct RowKernels<'p> {
    kernel: DotQ8Fn,
    multi: Option<DotQ8RowsFn>,
    groups: Option<(&'p Interleaved, InterleavedFn)>,
}

/// One pass of up to [`Q8_BATCH`] activation rows over a matrix on the
/// integer path.
struct Q8Batch<'a, 'm> {
    m: &'a QMatrix<'m>,
    acts: &'a QuantizedActivations,
    /// The activation row multiplied into `parts[0]`.
    first_act: usize,
    /// Weight rows per task at most.
    chunk: usize,
    kernels: &'a RowKernels<'a>,
}

impl Q8Batch<'_, '_> {
    /// Weight rows `first_row..` (as many as each of `parts` holds) into
    /// `parts[c]` for activation `first_act + c` (empty parts past the
    /// batch): halved across the pool down to `chunk` rows, then taken a
    /// tile at a time, each tile of weights staying in L1 while every
    /// activation passes over it. Splits and tiles fall on multiples of
    /// eight rows, the interleaved groups.
    fn run(&self, first_row: usize, mut parts: [&mut [f32]; Q8_BATCH]) {
        let len = parts[0].len();
        if len > self.chunk && len > GROUP_ROWS {
            let mid = (len / 2).next_multiple_of(GROUP_ROWS).min(len - 1);
            let mut left: [&mut [f32]; Q8_BATCH] = std::array::from_fn(|_| Default::default());
            let mut right: [&mut [f32]; Q8_BATCH] = std::array::from_fn(|_| Default::default());
            for ((part, l), r) in parts.into_iter().zip(&mut left).zip(&mut right) {
                (*l, *r) = part.split_at_mut(mid.min(part.len()));
            }
            rayon::join(
                || self.run(first_row, left),
                || self.run(first_row + mid, right),
            );
            return;
        }
        let m = self.m;
        let tile = (Q8_TILE_BYTES / m.row_bytes)
            .max(4)
            .next_multiple_of(GROUP_ROWS);
        for t0 in (0..len).step_by(tile) {
            let rows = tile.min(len - t0);
            for (c, part) in parts.iter_mut().enumerate() {
                let (Some(act), Some(ys)) = (
                    self.acts.row(self.first_act + c),
                    part.get_mut(t0..t0 + rows),
                ) else {
                    break;
                };
                m.dot_rows(first_row + t0, act, ys, self.kernels);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::dot::tests::{Q8_TYPES, random_activations, random_row};

    fn all_types() -> impl Iterator<Item = GgmlType> {
        Q8_TYPES
            .into_iter()
            .chain([GgmlType::F32, GgmlType::F16, GgmlType::Bf16])
    }

    fn random_matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
        let blocks = cols / ty.block_size();
        (0..rows)
            .flat_map(|_| random_row(ty, blocks, rng))
            .collect()
    }

    /// Exact products of decoded weights (f64), and the sums of |w x|.
    fn naive(
        ty: GgmlType,
        data: &[u8],
        rows: usize,
        cols: usize,
        x: &[f32],
    ) -> (Vec<f64>, Vec<f64>) {
        let mut w = vec![0.0f32; rows * cols];
        crate::dequantize_row(ty, data, &mut w).expect("decodable");
        let n = x.len() / cols;
        let mut y = vec![0.0f64; n * rows];
        let mut mag = vec![0.0f64; n * rows];
        for c in 0..n {
            for r in 0..rows {
                for k in 0..cols {
                    let p = f64::from(w[r * cols + k]) * f64::from(x[c * cols + k]);
                    y[c * rows + r] += p;
                    mag[c * rows + r] += p.abs();
                }
            }
        }
        (y, mag)
    }

    /// Largest error 8-bit activations can add: half a quantization step per value.
    fn q8_bound(ty: GgmlType, data: &[u8], rows: usize, cols: usize, x: &[f32]) -> Vec<f64> {
        let mut w = vec![0.0f32; rows * cols];
        crate::dequantize_row(ty, data, &mut w).expect("decodable");
        let n = x.len() / cols;
        let mut bound = vec![0.0f64; n * rows];
        for c in 0..n {
            let xs = &x[c * cols..(c + 1) * cols];
            let steps: Vec<f64> = xs
                .chunks(32)
                .map(|b| f64::from(b.iter().fold(0.0f32, |a, v| a.max(v.abs()))) / 127.0)
                .collect();
            for r in 0..rows {
                bound[c * rows + r] = (0..cols)
                    .map(|k| f64::from(w[r * cols + k].abs()) * steps[k / 32] * 0.5)
                    .sum();
            }
        }
        bound
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool")
    }

    #[test]
    fn products_match_naive_reference_for_every_type_and_precision() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (rows, cols) = (37, 512);
        let two = pool(2);
        for ty in all_types() {
            let data = random_matrix(ty, rows, cols, &mut rng);
            let m = QMatrix::new(ty, rows, cols, &data).expect("matrix");
            for n in [1, 2, 7, 45] {
                let x = random_activations(n * cols, &mut rng);
                let (exact, mag) = naive(ty, &data, rows, cols, &x);
                let bound = q8_bound(ty, &data, rows, cols, &x);
                let mut total_err = [0.0f64; 3];
                for (p, precision) in [Precision::Q8, Precision::Q16, Precision::F32]
                    .into_iter()
                    .enumerate()
                {
                    let mut scratch = MatScratch::new(precision);
                    let mut y = vec![f32::NAN; n * rows];
                    two.install(|| m.matmul(&x, n, &mut y, &mut scratch))
                        .expect("matmul");
                    // Half a step of the activations' quantization; the
                    // residual plane's step is 1/256 of the first's (1/128
                    // allows for its clamp at ±127).
                    let act_bound = match precision {
                        _ if !ty.is_quantized() => 0.0,
                        Precision::Q8 => 1.0,
                        Precision::Q16 => 1.0 / 128.0,
                        Precision::F32 => 0.0,
                    };
                    for (i, &got) in y.iter().enumerate() {
                        let tol = 2e-5 * mag[i] + act_bound * bound[i] + 1e-6;
                        let err = (f64::from(got) - exact[i]).abs();
                        total_err[p] += err;
                        assert!(
                            err <= tol,
                            "{ty} n={n} {precision:?} [{i}]: {got} vs {} (tol {tol})",
                            exact[i]
                        );
                    }
                }
                if ty.is_quantized() && !uses_f32_tiles(simd::isa(), n) {
                    // The residual plane must buy real accuracy over 8 bits.
                    assert!(
                        total_err[1] * 20.0 < total_err[0],
                        "{ty} n={n}: {total_err:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_thread_count() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let (rows, cols, n) = (300, 256, 9);
        for ty in [GgmlType::Q4_1, GgmlType::Q6K, GgmlType::F16] {
            let data = random_matrix(ty, rows, cols, &mut rng);
            let m = QMatrix::new(ty, rows, cols, &data).expect("matrix");
            let x = random_activations(n * cols, &mut rng);
            for precision in [Precision::Q8, Precision::F32] {
                let run = |threads: usize, n: usize| {
                    let mut scratch = MatScratch::new(precision);
                    let mut y = vec![0.0f32; n * rows];
                    pool(threads)
                        .install(|| m.matmul(&x[..n * cols], n, &mut y, &mut scratch))
                        .expect("matmul");
                    y
                };
                assert_eq!(run(1, n), run(3, n), "{ty} {precision:?}");
                // One row takes the matvec kernels, several the tiled ones:
                // the same sums, in a different order on the f32 path.
                let (one, many) = (run(2, 1), run(1, n));
                let q8 = precision == Precision::Q8 && ty.is_quantized();
                if q8 && uses_f32_tiles(simd::isa(), n) {
                    // Where this ISA's f32 tiles take the batch, the one row (8-bit activations)
                    // and the batch (exact) differ by the activations' rounding alone.
                    let (mut err, mut norm) = (0.0f64, 0.0f64);
                    for (a, b) in one.iter().zip(&many[..rows]) {
                        err += f64::from(a - b).powi(2);
                        norm += f64::from(*b).powi(2);
                    }
                    assert!(err / norm < 1e-3, "{ty} {precision:?}: nmse {}", err / norm);
                    continue;
                }
                for (a, b) in one.iter().zip(&many[..rows]) {
                    let same = if q8 {
                        a == b
                    } else {
                        (a - b).abs() <= 1e-4 * a.abs().max(1.0)
                    };
                    assert!(same, "{ty} {precision:?}: matvec {a} vs matmul {b}");
                }
            }
        }
    }

    /// A small batch on the integer path splits the weights, not the
    /// activations, among the threads and walks them in tiles: each of its
    /// rows must still be exactly the one-vector product of that row.
    #[test]
    fn integer_batch_rows_equal_their_own_matvec() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        // A batch small enough for the integer path (larger ones take the exact f32 tiles;
        // with the scalar kernels from two rows on, so there is nothing to compare).
        let n = (simd::F32Gemm::new(simd::isa()).lanes / 2)
            .saturating_sub(1)
            .min(5);
        if n < 2 {
            return;
        }
        let (rows, cols) = (301, 512);
        let two = pool(2);
        for ty in Q8_TYPES {
            let data = random_matrix(ty, rows, cols, &mut rng);
            let m = QMatrix::new(ty, rows, cols, &data).expect("matrix");
            let x = random_activations(n * cols, &mut rng);
            for precision in [Precision::Q8, Precision::Q16] {
                let mut scratch = MatScratch::new(precision);
                let mut batch = vec![f32::NAN; n * rows];
                two.install(|| m.matmul(&x, n, &mut batch, &mut scratch))
                    .expect("matmul");
                for (c, (x, got)) in x.chunks(cols).zip(batch.chunks(rows)).enumerate() {
                    let mut alone = vec![f32::NAN; rows];
                    two.install(|| m.matvec(x, &mut alone, &mut scratch))
                        .expect("matvec");
                    for (r, (a, b)) in alone.iter().zip(got).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{ty} {precision:?} activation {c} row {r}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn large_batches_take_the_exact_path_at_every_precision() {
        let mut rng = ChaCha8Rng::seed_from_u64(15);
        let (rows, cols, n) = (50, 256, 40);
        assert!(uses_f32_tiles(simd::isa(), n) && !uses_f32_tiles(simd::isa(), 1));
        let data = random_matrix(GgmlType::Q4_0, rows, cols, &mut rng);
        let m = QMatrix::new(GgmlType::Q4_0, rows, cols, &data).expect("matrix");
        let x = random_activations(n * cols, &mut rng);
        let run = |precision| {
            let mut y = vec![0.0f32; n * rows];
            m.matmul(&x, n, &mut y, &mut MatScratch::new(precision))
                .expect("matmul");
            y
        };
        let exact = run(Precision::F32);
        assert_eq!(run(Precision::Q8), exact);
        assert_eq!(run(Precision::Q16), exact);
    }

    #[test]
    fn forward_many_equals_one_forward_per_matrix() {
        let mut rng = ChaCha8Rng::seed_from_u64(16);
        let cols = 256;
        let rows = 44;
        // Q8_0 with an interleaved copy (five groups and a tail of four rows).
        let types = [GgmlType::Q4_1, GgmlType::Q6K, GgmlType::F16, GgmlType::Q8_0];
        let data: Vec<Vec<u8>> = types
            .iter()
            .map(|&ty| random_matrix(ty, rows, cols, &mut rng))
            .collect();
        let ms: Vec<QMatrix<'_>> = types
            .iter()
            .zip(&data)
            .map(|(&ty, d)| QMatrix::new(ty, rows, cols, d).expect("matrix"))
            .collect();
        let packed: Vec<Option<Interleaved>> = ms.iter().map(Interleaved::new).collect();
        for n in [1, 3] {
            let x = random_activations(n * cols, &mut rng);
            for precision in [Precision::Q8, Precision::F32] {
                let mut scratch = MatScratch::new(precision);
                let input = scratch.prepare(&x, cols).expect("input");
                let mut ys = vec![vec![0.0f32; n * rows]; types.len()];
                let singles: Vec<Vec<f32>> = ms
                    .iter()
                    .zip(&packed)
                    .map(|(m, p)| {
                        let mut y = vec![0.0f32; n * rows];
                        m.forward_with(p.as_ref(), &input, &mut y).expect("forward");
                        y
                    })
                    .collect();
                {
                    let mut outputs: Vec<_> = ms
                        .iter()
                        .zip(&packed)
                        .zip(ys.iter_mut())
                        .map(|((m, p), y)| (m, p.as_ref(), &mut y[..]))
                        .collect();
                    pool(2)
                        .install(|| QMatrix::forward_many(&mut outputs, &input))
                        .expect("forward_many");
                }
                assert_eq!(ys, singles, "{n} rows, {precision:?}");
                let mut short = [0.0f32; 5];
                assert!(
                    QMatrix::forward_many(&mut [(&ms[0], None, &mut short[..])], &input).is_err()
                );
            }
        }
        // A copy of another matrix is refused.
        let x = random_activations(cols, &mut rng);
        let mut scratch = MatScratch::new(Precision::Q8);
        let input = scratch.prepare(&x, cols).expect("input");
        let mut y = vec![0.0f32; rows];
        if let Some(p) = &packed[3] {
            assert!(ms[0].forward_with(Some(p), &input, &mut y).is_err());
        }
    }

    #[test]
    fn interleaved_copies_give_the_same_products_on_every_path() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        for (ty, cols) in [
            (GgmlType::Q8_0, 320),
            (GgmlType::Q5_0, 320),
            (GgmlType::Q4_1, 320),
            (GgmlType::Q4_0, 320),
            (GgmlType::Q4K, 512),
            (GgmlType::Q6K, 512),
        ] {
            let rows = 8 * 37 + 5;
            let data = random_matrix(ty, rows, cols, &mut rng);
            let m = QMatrix::new(ty, rows, cols, &data).expect("matrix");
            let Some(packed) = Interleaved::new(&m) else {
                continue;
            };
            let x = random_activations(4 * cols, &mut rng);
            let mut scratch = MatScratch::new(Precision::Q8);
            let input = scratch.prepare(&x, cols).expect("input");
            let mut batch = vec![0.0f32; 4 * rows];
            pool(2)
                .install(|| m.forward_with(Some(&packed), &input, &mut batch))
                .expect("batch");
            let bound = q8_bound(ty, &data, rows, cols, &x[..cols]);
            for (c, (xr, got)) in x.chunks(cols).zip(batch.chunks(rows)).enumerate() {
                let mut one = MatScratch::new(Precision::Q8);
                let input = one.prepare(xr, cols).expect("input");
                let mut y = vec![0.0f32; rows];
                for threads in [1, 2] {
                    pool(threads)
                        .install(|| m.forward_with(Some(&packed), &input, &mut y))
                        .expect("matvec");
                    assert_eq!(y, got, "{ty:?} activation {c}, {threads} threads");
                }
                if c == 0 {
                    let mut plain = vec![0.0f32; rows];
                    m.forward(&input, &mut plain).expect("plain");
                    for (r, ((a, b), bound)) in y.iter().zip(&plain).zip(&bound).enumerate() {
                        assert!(
                            f64::from((a - b).abs()) <= 1e-3 * bound.max(1e-3),
                            "{ty:?} row {r}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn one_prepared_input_serves_several_matrices() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let cols = 256;
        let a = random_matrix(GgmlType::Q4K, 64, cols, &mut rng);
        let b = random_matrix(GgmlType::Q8_0, 32, cols, &mut rng);
        let (ma, mb) = (
            QMatrix::new(GgmlType::Q4K, 64, cols, &a).expect("a"),
            QMatrix::new(GgmlType::Q8_0, 32, cols, &b).expect("b"),
        );
        let x = random_activations(cols, &mut rng);
        let mut scratch = MatScratch::new(Precision::Q8);
        let (mut ya, mut yb) = (vec![0.0; 64], vec![0.0; 32]);
        let input = scratch.prepare(&x, cols).expect("prepare");
        ma.forward(&input, &mut ya).expect("a");
        mb.forward(&input, &mut yb).expect("b");
        let mut acts = QuantizedActivations::new();
        acts.quantize(&x, cols).expect("quantize");
        let mut ya2 = vec![0.0; 64];
        ma.forward(&Input::with_quantized(&x, &acts).expect("input"), &mut ya2)
            .expect("a2");
        assert_eq!(ya, ya2);
        let mut yb2 = vec![0.0; 32];
        mb.matvec(&x, &mut yb2, &mut MatScratch::new(Precision::Q8))
            .expect("b2");
        assert_eq!(yb, yb2);
        let mut exact = vec![0.0; 32];
        mb.forward(&Input::f32(&x, cols).expect("f32 input"), &mut exact)
            .expect("exact");
        assert_ne!(exact, yb);
    }

    #[test]
    fn shapes_and_types_are_checked() {
        let data = vec![0u8; 4 * 18];
        assert!(QMatrix::new(GgmlType::Q4_0, 2, 64, &data).is_ok());
        assert!(QMatrix::new(GgmlType::Q4_0, 2, 64, &data[1..]).is_err());
        assert!(QMatrix::new(GgmlType::Q4_0, 2, 48, &data).is_err());
        assert!(QMatrix::new(GgmlType::Q8K, 1, 256, &[0u8; 292]).is_err());
        assert!(QMatrix::new(GgmlType::Iq2Xxs, 1, 256, &[0u8; 66]).is_err());
        assert!(QMatrix::new(GgmlType::Q4_0, usize::MAX / 2, 64, &data).is_err());
        let m = QMatrix::new(GgmlType::Q4_0, 2, 64, &data).expect("matrix");
        let mut scratch = MatScratch::default();
        assert!(m.matvec(&[0.0; 63], &mut [0.0; 2], &mut scratch).is_err());
        assert!(m.matvec(&[0.0; 64], &mut [0.0; 3], &mut scratch).is_err());
        assert!(
            m.matmul(&[0.0; 128], 3, &mut [0.0; 6], &mut scratch)
                .is_err()
        );
        assert!(
            m.matmul(&[0.0; 128], 2, &mut [0.0; 4], &mut scratch)
                .is_ok()
        );
        assert!(m.dequantize_row(2, &mut [0.0; 64]).is_err());
        assert!(m.dequantize_row(1, &mut [0.0; 63]).is_err());
        assert_eq!(m.row(1).map(<[u8]>::len), Some(36));
        assert_eq!(
            (m.rows(), m.cols(), m.ty(), m.data().len()),
            (2, 64, GgmlType::Q4_0, 72)
        );
    }

    #[test]
    fn decoded_rows_equal_the_scalar_decoder() {
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        for ty in all_types() {
            let cols = 512;
            let data = random_matrix(ty, 3, cols, &mut rng);
            let m = QMatrix::new(ty, 3, cols, &data).expect("matrix");
            let (mut fast, mut slow) = (vec![0.0f32; cols], vec![0.0f32; cols]);
            m.dequantize_row(2, &mut fast).expect("row");
            crate::dequantize_row(ty, m.row(2).expect("row"), &mut slow).expect("row");
            assert!(
                fast.iter()
                    .zip(&slow)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{ty}"
            );
            let _ = rng.random::<u8>();
        }
    }
}
