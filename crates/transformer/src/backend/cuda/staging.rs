//! Per-batch integers (token ids, positions, sequence slots, output rows) kept in device
//! memory at fixed addresses, so the kernels of a replayed step graph read the new values.

use cudarc::driver::CudaSlice;

use crate::cuda::{CudaDevice, CudaError};

/// One array of i32 on the device with its host copy; uploaded only when the values change.
#[derive(Debug)]
pub(crate) struct Staged {
    host: Vec<i32>,
    len: usize,
    pub(crate) dev: CudaSlice<i32>,
}

impl Staged {
    fn new(dev: &CudaDevice) -> Result<Self, CudaError> {
        Ok(Self {
            host: Vec::new(),
            len: 0,
            dev: dev
                .stream()
                .alloc_zeros::<i32>(1)
                .map_err(CudaError::driver("allocating batch staging"))?,
        })
    }

    /// Makes the device array start with `values` (as i32; each must fit, which the caller
    /// has checked against the model's sizes).
    pub(crate) fn set<T: Copy + TryInto<i32>>(
        &mut self,
        dev: &CudaDevice,
        values: &[T],
    ) -> Result<(), CudaError> {
        let same = self.len == values.len()
            && self.host[..self.len]
                .iter()
                .zip(values)
                .all(|(&h, &v)| v.try_into().ok() == Some(h));
        if same {
            return Ok(());
        }
        self.host.clear();
        self.len = 0;
        for &v in values {
            self.host
                .push(v.try_into().map_err(|_| CudaError::Unsupported {
                    op: "batch staging",
                    what: "a token id, position or row index does not fit 32 bits".into(),
                })?);
        }
        self.upload(dev)
    }

    /// Copies the host values up, growing the device array if needed.
    fn upload(&mut self, dev: &CudaDevice) -> Result<(), CudaError> {
        self.len = self.host.len();
        if self.len == 0 {
            return Ok(());
        }
        dev.untracked_work()?;
        let s = dev.stream();
        if self.dev.len() < self.len {
            self.dev = s
                .alloc_zeros::<i32>(self.len.next_power_of_two())
                .map_err(CudaError::driver("allocating batch staging"))?;
        }
        let mut head = self.dev.slice_mut(0..self.len);
        s.memcpy_htod(&self.host[..self.len], &mut head)
            .map_err(CudaError::driver("uploading batch staging"))
    }
}

impl Staged {
    /// Makes the device array start with `words`, each stored with its bits unchanged.
    pub(crate) fn set_bits(&mut self, dev: &CudaDevice, words: &[u32]) -> Result<(), CudaError> {
        let same = self.len == words.len()
            && self.host[..self.len]
                .iter()
                .zip(words)
                .all(|(&h, &w)| h.cast_unsigned() == w);
        if same {
            return Ok(());
        }
        self.host.clear();
        self.len = 0;
        self.host.extend(words.iter().map(|w| w.cast_signed()));
        self.upload(dev)
    }
}

/// The integers of the batch being run.
#[derive(Debug)]
pub(crate) struct Staging {
    pub(crate) tokens: Staged,
    pub(crate) positions: Staged,
    pub(crate) seqs: Staged,
    pub(crate) outputs: Staged,
    /// Rows moved by a prompt's expert products (see `experts`).
    pub(crate) expert_rows: Staged,
    /// The token mask of [`crate::Backend::read_argmax_masked`].
    pub(crate) allowed: Staged,
}

impl Staging {
    pub(crate) fn new(dev: &CudaDevice) -> Result<Self, CudaError> {
        Ok(Self {
            tokens: Staged::new(dev)?,
            positions: Staged::new(dev)?,
            seqs: Staged::new(dev)?,
            outputs: Staged::new(dev)?,
            expert_rows: Staged::new(dev)?,
            allowed: Staged::new(dev)?,
        })
    }
}
