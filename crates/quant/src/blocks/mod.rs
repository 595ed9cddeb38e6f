//! Block structs laid out byte for byte as in GGUF files, with their scalar
//! reference codecs.
//!
//! Every struct is `#[repr(C)]` and [`bytemuck::Pod`], so a tensor's bytes
//! can be viewed as a slice of blocks without copying when suitably aligned
//! (f16 fields need 2-byte alignment, [`BlockQ8K`] 4-byte).

mod iq4;
mod kquant_quantizers;
mod kquants;
mod legacy;

pub use iq4::{BlockIq4Nl, BlockIq4Xs, IQ4_LEVELS, QK4_NL};
pub use kquants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, K_SCALE_SIZE, QK_K,
    pack_scale_min_k4, pack_scales_q3k, scale_min_k4, scale_q3k,
};
pub use legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, QK};
