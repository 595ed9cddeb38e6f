//! The CUDA backend of a build without the `cuda` feature: it cannot be made, so every
//! method is unreachable, yet the type implements [`Backend`] and code written for it compiles.

use ferrolm_gguf::TensorView;

use super::CudaOptions;
use crate::backend::{AttentionParams, Backend, Batch, Glu, KvLayout, MoeRouting, SeqId};
use crate::config::Rope;
use crate::error::{Result, TransformerError};

/// A value that cannot exist: the matrices, buffers and caches of a backend that cannot be made.
#[derive(Debug)]
pub enum Unavailable {}

/// The CUDA backend (unavailable in this build).
#[derive(Debug)]
pub struct CudaBackend {
    never: Unavailable,
}

impl CudaBackend {
    /// Opens GPU `ordinal`: in this build, always an error saying CUDA support is missing.
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::with_options(&CudaOptions {
            ordinal,
            ..CudaOptions::default()
        })
    }

    /// Opens the GPU of `options`: in this build, always an error.
    pub fn with_options(options: &CudaOptions) -> Result<Self> {
        Err(TransformerError::DeviceUnavailable {
            device: format!("cuda:{}", options.ordinal),
            reason: "this build of ferrolm has no CUDA support; rebuild with `--features cuda`"
                .into(),
        })
    }
}

impl CudaBackend {
    /// Bytes of device memory in use (never reached in this build).
    pub fn memory_in_use(&self) -> Result<usize> {
        match self.never {}
    }

    /// GPU time of one replay of the step graph (never reached in this build).
    pub fn time_step_graph(&self, _reps: usize) -> Result<Option<f64>> {
        match self.never {}
    }
}

impl<'w> Backend<'w> for CudaBackend {
    type Matrix = Unavailable;
    type Vector = Unavailable;
    type Buffer = Unavailable;
    type Prepared = Unavailable;
    type Kv = Unavailable;

    fn name(&self) -> &'static str {
        "cuda"
    }
    fn matrix(&self, _: &TensorView<'w>, _: Option<&TensorView<'w>>) -> Result<Unavailable> {
        match self.never {}
    }
    fn vector(&self, _: &TensorView<'w>) -> Result<Unavailable> {
        match self.never {}
    }
    fn buffer(&self, _: usize, _: usize) -> Result<Unavailable> {
        match self.never {}
    }
    fn prepared(&self, _: usize, _: usize) -> Result<Unavailable> {
        match self.never {}
    }
    fn kv_cache(&self, _: KvLayout) -> Result<Unavailable> {
        match self.never {}
    }
    fn set_rows(&self, _: &mut Unavailable, _: usize) -> Result<()> {
        match self.never {}
    }
    fn embed(&self, _: &Unavailable, _: &[u32], _: f32, _: &mut Unavailable) -> Result<()> {
        match self.never {}
    }
    fn rms_norm(&self, _: &mut Unavailable, _: &Unavailable, _: f32) -> Result<()> {
        match self.never {}
    }
    fn rms_norm_into(
        &self,
        _: &Unavailable,
        _: &Unavailable,
        _: f32,
        _: &mut Unavailable,
    ) -> Result<()> {
        match self.never {}
    }
    fn prepare(&self, _: &Unavailable, _: &mut Unavailable) -> Result<()> {
        match self.never {}
    }
    fn matmul(&self, _: &Unavailable, _: &Unavailable, _: &mut Unavailable) -> Result<()> {
        match self.never {}
    }
    fn rope(
        &self,
        _: &mut Unavailable,
        _: usize,
        _: &[u32],
        _: &Rope,
        _: Option<&Unavailable>,
    ) -> Result<()> {
        match self.never {}
    }
    fn softcap(&self, _: &mut Unavailable, _: f32) -> Result<()> {
        match self.never {}
    }
    fn moe_route(&self, _: &Unavailable, _: &MoeRouting, _: &mut Unavailable) -> Result<()> {
        match self.never {}
    }
    fn matmul_experts(
        &self,
        _: &Unavailable,
        _: usize,
        _: &Unavailable,
        _: &Unavailable,
        _: &mut Unavailable,
    ) -> Result<()> {
        match self.never {}
    }
    fn moe_combine(&self, _: &Unavailable, _: &Unavailable, _: &mut Unavailable) -> Result<()> {
        match self.never {}
    }
    fn attention(
        &self,
        _: &mut Unavailable,
        _: usize,
        _: &Batch<'_>,
        _: &Unavailable,
        _: &Unavailable,
        _: &Unavailable,
        _: &AttentionParams,
        _: &mut Unavailable,
    ) -> Result<()> {
        match self.never {}
    }
    fn add(&self, _: &mut Unavailable, _: &Unavailable) -> Result<()> {
        match self.never {}
    }
    fn glu(&self, _: &mut Unavailable, _: &Unavailable, _: Glu) -> Result<()> {
        match self.never {}
    }
    fn gather_rows(&self, _: &Unavailable, _: &[usize], _: &mut Unavailable) -> Result<()> {
        match self.never {}
    }
    fn read(&self, _: &Unavailable, _: &mut [f32]) -> Result<()> {
        match self.never {}
    }
    fn read_argmax(&self, _: &Unavailable, _: &mut [u32]) -> Result<()> {
        match self.never {}
    }
    fn read_argmax_masked(&self, _: &Unavailable, _: &[u32], _: &mut [u32]) -> Result<()> {
        match self.never {}
    }
    fn kv_layout(&self, _: &Unavailable) -> KvLayout {
        match self.never {}
    }
    fn kv_len(&self, _: &Unavailable, _: SeqId) -> usize {
        match self.never {}
    }
    fn kv_reserve(&self, _: &mut Unavailable, _: &Batch<'_>) -> Result<()> {
        match self.never {}
    }
    fn kv_blocks(&self, _: &Unavailable) -> crate::backend::KvBlocks {
        match self.never {}
    }
    fn kv_truncate(&self, _: &mut Unavailable, _: SeqId, _: usize) -> Result<()> {
        match self.never {}
    }
    fn kv_share(&self, _: &mut Unavailable, _: SeqId, _: SeqId, _: usize) -> Result<()> {
        match self.never {}
    }
    fn kv_clear(&self, _: &mut Unavailable) {
        match self.never {}
    }
}
