use cudarc::driver::sys::CUevent_flags;

use super::{CudaDevice, CudaError, Q8Activations, QuantMatrix};

/// Timing of one kernel measured with CUDA events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelTiming {
    /// Median time of one launch, in microseconds.
    pub median_us: f64,
    /// Fastest launch, in microseconds.
    pub min_us: f64,
    /// Bytes the kernel must move at least (weights, activations, output).
    pub bytes: usize,
}

impl KernelTiming {
    /// Achieved bandwidth at the median time, in GB/s (10^9 bytes per second).
    pub fn gb_per_s(&self) -> f64 {
        self.bytes as f64 / (self.median_us * 1e3)
    }
}

/// Times `y = W · x`: `reps` samples, each a run of back-to-back launches (one per matrix,
/// rotating, so each launch reads its weights from device memory rather than from the L2
/// cache) bracketed by CUDA events, after `warmup` launches. Back-to-back launches hide the
/// launch latency as a replayed graph does; the time per launch is the sample's time over the
/// number of matrices. All matrices must have the same shape.
pub fn time_matvec(
    dev: &CudaDevice,
    weights: &[QuantMatrix],
    x: &Q8Activations,
    warmup: usize,
    reps: usize,
) -> Result<KernelTiming, CudaError> {
    let first = weights.first().ok_or_else(|| CudaError::Unsupported {
        op: "time_matvec",
        what: "no matrices".into(),
    })?;
    let (rows, cols) = (first.rows(), first.cols());
    if weights.iter().any(|w| w.rows() != rows || w.cols() != cols) || reps == 0 {
        return Err(CudaError::Unsupported {
            op: "time_matvec",
            what: "matrices of different shapes, or zero repetitions".into(),
        });
    }
    let stream = dev.stream();
    let mut y = stream
        .alloc_zeros::<f32>(rows)
        .map_err(CudaError::driver("allocating output"))?;
    for i in 0..warmup {
        dev.matvec(&weights[i % weights.len()], x, &mut y, false)?;
    }
    let ctx = dev.context();
    let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
    let mut times = Vec::with_capacity(reps);
    for i in 0..reps {
        let start = ctx
            .new_event(flags)
            .map_err(CudaError::driver("creating event"))?;
        let end = ctx
            .new_event(flags)
            .map_err(CudaError::driver("creating event"))?;
        start
            .record(stream)
            .map_err(CudaError::driver("recording event"))?;
        dev.matvec(&weights[i % weights.len()], x, &mut y, false)?;
        end.record(stream)
            .map_err(CudaError::driver("recording event"))?;
        end.synchronize()
            .map_err(CudaError::driver("waiting for event"))?;
        let ms = start
            .elapsed_ms(&end)
            .map_err(CudaError::driver("reading event time"))?;
        times.push(f64::from(ms) * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let bytes = first.bytes() + cols + cols / 32 * 8 + rows * 4;
    Ok(KernelTiming {
        median_us: times[times.len() / 2],
        min_us: times[0],
        bytes,
    })
}

/// The copy ceiling: a device-to-device copy of `bytes` bytes, timed with CUDA events (median
/// of `reps`), counting bytes read plus bytes written.
pub fn time_copy(dev: &CudaDevice, bytes: usize, reps: usize) -> Result<KernelTiming, CudaError> {
    let stream = dev.stream();
    let src = stream
        .alloc_zeros::<u8>(bytes)
        .map_err(CudaError::driver("allocating copy source"))?;
    let mut dst = stream
        .alloc_zeros::<u8>(bytes)
        .map_err(CudaError::driver("allocating copy target"))?;
    let (median_us, min_us) = time_op(dev, reps, || {
        stream
            .memcpy_dtod(&src, &mut dst)
            .map_err(CudaError::driver("copying"))
    })?;
    Ok(KernelTiming {
        median_us,
        min_us,
        bytes: 2 * bytes,
    })
}

/// Median and minimum time in microseconds of `op` (which queues work on `dev`'s stream),
/// timed with CUDA events over `reps` runs after two warm-up runs.
pub fn time_op(
    dev: &CudaDevice,
    reps: usize,
    mut op: impl FnMut() -> Result<(), CudaError>,
) -> Result<(f64, f64), CudaError> {
    let stream = dev.stream();
    let ctx = dev.context();
    let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
    let start = ctx
        .new_event(flags)
        .map_err(CudaError::driver("creating event"))?;
    let end = ctx
        .new_event(flags)
        .map_err(CudaError::driver("creating event"))?;
    let mut times = Vec::with_capacity(reps);
    for i in 0..reps.max(1) + 2 {
        start
            .record(stream)
            .map_err(CudaError::driver("recording event"))?;
        op()?;
        end.record(stream)
            .map_err(CudaError::driver("recording event"))?;
        end.synchronize()
            .map_err(CudaError::driver("waiting for event"))?;
        let ms = start
            .elapsed_ms(&end)
            .map_err(CudaError::driver("reading event time"))?;
        if i >= 2 {
            times.push(f64::from(ms) * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[0]))
}
