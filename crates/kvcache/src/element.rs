//! The element types a cache can store.

use std::fmt;

use half::f16;
use half::slice::HalfFloatSliceExt;

/// The element type of a cache, for code that picks it at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvDtype {
    /// IEEE single precision.
    F32,
    /// IEEE half precision (what llama.cpp's CPU backend keeps by default).
    F16,
}

impl KvDtype {
    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
        }
    }

    /// `"f32"` or `"f16"`.
    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
        }
    }
}

impl fmt::Display for KvDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A type the cache stores keys and values as; activations arrive as `f32`.
pub trait KvElement: Copy + Default + Send + Sync + fmt::Debug + 'static {
    /// The run-time tag of this type.
    const DTYPE: KvDtype;

    /// Converts one value (rounding to nearest).
    fn from_f32(x: f32) -> Self;

    /// Widens one value.
    fn to_f32(self) -> f32;

    /// Converts `src` into `dst`, over the shorter of the two lengths.
    fn store(dst: &mut [Self], src: &[f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = Self::from_f32(s);
        }
    }

    /// Widens `src` into `dst`, over the shorter of the two lengths. Widening
    /// a whole block at a time into a scratch buffer is much faster for `f16`
    /// than [`KvElement::to_f32`] per value.
    fn load(dst: &mut [f32], src: &[Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
}

impl KvElement for f32 {
    const DTYPE: KvDtype = KvDtype::F32;

    fn from_f32(x: f32) -> Self {
        x
    }

    fn to_f32(self) -> f32 {
        self
    }

    fn store(dst: &mut [Self], src: &[f32]) {
        let n = dst.len().min(src.len());
        dst[..n].copy_from_slice(&src[..n]);
    }

    fn load(dst: &mut [f32], src: &[Self]) {
        let n = dst.len().min(src.len());
        dst[..n].copy_from_slice(&src[..n]);
    }
}

impl KvElement for f16 {
    const DTYPE: KvDtype = KvDtype::F16;

    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }

    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }

    // The half crate converts slices with the F16C instructions when the CPU has them.
    fn store(dst: &mut [Self], src: &[f32]) {
        let n = dst.len().min(src.len());
        dst[..n].convert_from_f32_slice(&src[..n]);
    }

    fn load(dst: &mut [f32], src: &[Self]) {
        let n = dst.len().min(src.len());
        src[..n].convert_to_f32_slice(&mut dst[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize) -> Vec<f32> {
        let mut state = 0x1234_5678_9abc_def0_u64;
        (0..n)
            .map(|i| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
                // Magnitudes from 1e-6 to 6e4, both signs, plus a few specials.
                match i % 97 {
                    0 => f32::INFINITY,
                    1 => -0.0,
                    2 => 1e-8,
                    _ => (unit - 0.5) * 10f32.powf((i % 11) as f32 - 6.0) * 1.3e5,
                }
            })
            .collect()
    }

    #[test]
    fn f16_slice_conversion_matches_the_scalar_reference() {
        let src = pseudo_random(4099);
        let mut fast = vec![f16::ZERO; src.len()];
        f16::store(&mut fast, &src);
        for (i, (&got, &x)) in fast.iter().zip(&src).enumerate() {
            assert_eq!(
                got.to_bits(),
                f16::from_f32(x).to_bits(),
                "element {i}: {x}"
            );
        }
        let mut back = vec![0.0_f32; src.len()];
        f16::load(&mut back, &fast);
        for (&b, &h) in back.iter().zip(&fast) {
            assert_eq!(b.to_bits(), h.to_f32().to_bits());
        }
    }

    #[test]
    fn f32_round_trips_exactly_and_lengths_are_clipped() {
        let src = pseudo_random(10);
        let mut dst = [0.0_f32; 7];
        f32::store(&mut dst, &src);
        assert_eq!(dst, src[..7]);
        assert_eq!(KvDtype::F16.size_bytes(), 2);
        assert_eq!(<f16 as KvElement>::DTYPE.to_string(), "f16");
    }
}
