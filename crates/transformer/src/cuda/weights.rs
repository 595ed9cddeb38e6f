use cudarc::driver::CudaSlice;

use super::{CudaDevice, CudaError};

/// Weight formats the GPU kernels read directly (no dequantized copy is ever made): the GGUF
/// block formats, and plain f32, f16 and bf16 taken 32 values at a time as if they were blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum WeightType {
    /// Plain f32 (a mixture-of-experts router, small models): 32 weights in 128 bytes.
    F32,
    /// Plain f16: 32 weights in 64 bytes.
    F16,
    /// 32 weights in 18 bytes.
    Q4_0,
    /// 32 weights in 20 bytes.
    Q4_1,
    /// 32 weights in 22 bytes.
    Q5_0,
    /// 32 weights in 34 bytes.
    Q8_0,
    /// 256 weights in 144 bytes.
    Q4K,
    /// 256 weights in 210 bytes.
    Q6K,
    /// Plain bfloat16: 32 weights in 64 bytes.
    Bf16,
    /// 32 weights in 24 bytes.
    Q5_1,
    /// 256 weights in 84 bytes.
    Q2K,
    /// 256 weights in 110 bytes.
    Q3K,
    /// 256 weights in 176 bytes.
    Q5K,
    /// 32 weights in 18 bytes, non-linear levels.
    Iq4Nl,
    /// 256 weights in 136 bytes, non-linear levels.
    Iq4Xs,
}

impl WeightType {
    /// Every supported type.
    pub const ALL: [Self; 15] = [
        Self::F32,
        Self::F16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q8_0,
        Self::Q4K,
        Self::Q6K,
        Self::Bf16,
        Self::Q5_1,
        Self::Q2K,
        Self::Q3K,
        Self::Q5K,
        Self::Iq4Nl,
        Self::Iq4Xs,
    ];

    /// Weights per block.
    pub const fn block_elems(self) -> usize {
        match self {
            Self::F32
            | Self::F16
            | Self::Bf16
            | Self::Q4_0
            | Self::Q4_1
            | Self::Q5_0
            | Self::Q5_1
            | Self::Q8_0
            | Self::Iq4Nl => 32,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K | Self::Iq4Xs => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 128,
            Self::F16 | Self::Bf16 => 64,
            Self::Q4_0 | Self::Iq4Nl => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q2K => 84,
            Self::Q3K => 110,
            Self::Iq4Xs => 136,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    /// The kernel-name suffix, as in `matvec_q4_k`.
    pub const fn kernel_suffix(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
            Self::Q5_0 => "q5_0",
            Self::Q8_0 => "q8_0",
            Self::Q4K => "q4_k",
            Self::Q6K => "q6_k",
            Self::Bf16 => "bf16",
            Self::Q5_1 => "q5_1",
            Self::Q2K => "q2_k",
            Self::Q3K => "q3_k",
            Self::Q5K => "q5_k",
            Self::Iq4Nl => "iq4_nl",
            Self::Iq4Xs => "iq4_xs",
        }
    }

    /// The matching GGUF tensor type, or `None` for types the kernels do not read.
    pub fn from_ggml(ty: ferrolm_gguf::GgmlType) -> Option<Self> {
        use ferrolm_gguf::GgmlType as G;
        Some(match ty {
            G::F32 => Self::F32,
            G::F16 => Self::F16,
            G::Q4_0 => Self::Q4_0,
            G::Q4_1 => Self::Q4_1,
            G::Q5_0 => Self::Q5_0,
            G::Q8_0 => Self::Q8_0,
            G::Q4K => Self::Q4K,
            G::Q6K => Self::Q6K,
            G::Bf16 => Self::Bf16,
            G::Q5_1 => Self::Q5_1,
            G::Q2K => Self::Q2K,
            G::Q3K => Self::Q3K,
            G::Q5K => Self::Q5K,
            G::Iq4Nl => Self::Iq4Nl,
            G::Iq4Xs => Self::Iq4Xs,
            _ => return None,
        })
    }

    /// The decode mat-vec kernel of this type.
    pub const fn matvec_kernel(self) -> &'static str {
        match self {
            Self::F32 => "matvec_f32",
            Self::F16 => "matvec_f16",
            Self::Q4_0 => "matvec_q4_0",
            Self::Q4_1 => "matvec_q4_1",
            Self::Q5_0 => "matvec_q5_0",
            Self::Q8_0 => "matvec_q8_0",
            Self::Q4K => "matvec_q4_k",
            Self::Q6K => "matvec_q6_k",
            Self::Bf16 => "matvec_bf16",
            Self::Q5_1 => "matvec_q5_1",
            Self::Q2K => "matvec_q2_k",
            Self::Q3K => "matvec_q3_k",
            Self::Q5K => "matvec_q5_k",
            Self::Iq4Nl => "matvec_iq4_nl",
            Self::Iq4Xs => "matvec_iq4_xs",
        }
    }

    /// The decode kernel of this type for up to three matrices that share their input.
    pub const fn matvec3_kernel(self) -> &'static str {
        match self {
            Self::F32 => "matvec3_f32",
            Self::F16 => "matvec3_f16",
            Self::Q4_0 => "matvec3_q4_0",
            Self::Q4_1 => "matvec3_q4_1",
            Self::Q5_0 => "matvec3_q5_0",
            Self::Q8_0 => "matvec3_q8_0",
            Self::Q4K => "matvec3_q4_k",
            Self::Q6K => "matvec3_q6_k",
            Self::Bf16 => "matvec3_bf16",
            Self::Q5_1 => "matvec3_q5_1",
            Self::Q2K => "matvec3_q2_k",
            Self::Q3K => "matvec3_q3_k",
            Self::Q5K => "matvec3_q5_k",
            Self::Iq4Nl => "matvec3_iq4_nl",
            Self::Iq4Xs => "matvec3_iq4_xs",
        }
    }

    /// The decode kernel of this type for the experts of a mixture-of-experts layer, chosen
    /// on the device.
    pub const fn matvec_experts_kernel(self) -> &'static str {
        match self {
            Self::F32 => "matvec_experts_f32",
            Self::F16 => "matvec_experts_f16",
            Self::Q4_0 => "matvec_experts_q4_0",
            Self::Q4_1 => "matvec_experts_q4_1",
            Self::Q5_0 => "matvec_experts_q5_0",
            Self::Q8_0 => "matvec_experts_q8_0",
            Self::Q4K => "matvec_experts_q4_k",
            Self::Q6K => "matvec_experts_q6_k",
            Self::Bf16 => "matvec_experts_bf16",
            Self::Q5_1 => "matvec_experts_q5_1",
            Self::Q2K => "matvec_experts_q2_k",
            Self::Q3K => "matvec_experts_q3_k",
            Self::Q5K => "matvec_experts_q5_k",
            Self::Iq4Nl => "matvec_experts_iq4_nl",
            Self::Iq4Xs => "matvec_experts_iq4_xs",
        }
    }

    /// The dequantization kernel of this type, to f32 or to f16.
    pub const fn get_rows_kernel(self, f16: bool) -> &'static str {
        match (self, f16) {
            (Self::F32, false) => "get_rows_f32_f32",
            (Self::F16, false) => "get_rows_f16_f32",
            (Self::F32, true) => "get_rows_f32_f16",
            (Self::F16, true) => "get_rows_f16_f16",
            (Self::Q4_0, false) => "get_rows_q4_0_f32",
            (Self::Q4_1, false) => "get_rows_q4_1_f32",
            (Self::Q5_0, false) => "get_rows_q5_0_f32",
            (Self::Q8_0, false) => "get_rows_q8_0_f32",
            (Self::Q4K, false) => "get_rows_q4_k_f32",
            (Self::Q6K, false) => "get_rows_q6_k_f32",
            (Self::Bf16, false) => "get_rows_bf16_f32",
            (Self::Q5_1, false) => "get_rows_q5_1_f32",
            (Self::Q2K, false) => "get_rows_q2_k_f32",
            (Self::Q3K, false) => "get_rows_q3_k_f32",
            (Self::Q5K, false) => "get_rows_q5_k_f32",
            (Self::Iq4Nl, false) => "get_rows_iq4_nl_f32",
            (Self::Iq4Xs, false) => "get_rows_iq4_xs_f32",
            (Self::Q4_0, true) => "get_rows_q4_0_f16",
            (Self::Q4_1, true) => "get_rows_q4_1_f16",
            (Self::Q5_0, true) => "get_rows_q5_0_f16",
            (Self::Q8_0, true) => "get_rows_q8_0_f16",
            (Self::Q4K, true) => "get_rows_q4_k_f16",
            (Self::Q6K, true) => "get_rows_q6_k_f16",
            (Self::Bf16, true) => "get_rows_bf16_f16",
            (Self::Q5_1, true) => "get_rows_q5_1_f16",
            (Self::Q2K, true) => "get_rows_q2_k_f16",
            (Self::Q3K, true) => "get_rows_q3_k_f16",
            (Self::Q5K, true) => "get_rows_q5_k_f16",
            (Self::Iq4Nl, true) => "get_rows_iq4_nl_f16",
            (Self::Iq4Xs, true) => "get_rows_iq4_xs_f16",
        }
    }

    /// The GGUF tensor type.
    pub fn to_ggml(self) -> ferrolm_gguf::GgmlType {
        use ferrolm_gguf::GgmlType as G;
        match self {
            Self::F32 => G::F32,
            Self::F16 => G::F16,
            Self::Q4_0 => G::Q4_0,
            Self::Q4_1 => G::Q4_1,
            Self::Q5_0 => G::Q5_0,
            Self::Q8_0 => G::Q8_0,
            Self::Q4K => G::Q4K,
            Self::Q6K => G::Q6K,
            Self::Bf16 => G::Bf16,
            Self::Q5_1 => G::Q5_1,
            Self::Q2K => G::Q2K,
            Self::Q3K => G::Q3K,
            Self::Q5K => G::Q5K,
            Self::Iq4Nl => G::Iq4Nl,
            Self::Iq4Xs => G::Iq4Xs,
        }
    }

    /// Whether products with this type take the f32 activations rather than their int8 form.
    pub const fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F16 | Self::Bf16)
    }

    /// Bytes of one row of `cols` weights, or `None` when `cols` is not a whole number of
    /// blocks.
    pub const fn row_bytes(self, cols: usize) -> Option<usize> {
        if cols.is_multiple_of(self.block_elems()) {
            Some(cols / self.block_elems() * self.block_bytes())
        } else {
            None
        }
    }
}

/// A row-major `rows × cols` weight matrix on the device, in its GGUF block format, with the
/// bias (one f32 per row) that every product with it adds, if any.
///
/// The allocation is padded to a multiple of 16 bytes because the matvec kernel reads whole
/// 16-byte words.
#[derive(Debug)]
pub struct QuantMatrix {
    ty: WeightType,
    rows: usize,
    cols: usize,
    data: CudaSlice<u8>,
    bias: Option<CudaSlice<f32>>,
}

impl QuantMatrix {
    /// Copies `bytes` (the tensor exactly as stored in the GGUF file: `rows` rows of
    /// `ty.row_bytes(cols)` bytes) to the device.
    pub fn upload(
        dev: &CudaDevice,
        ty: WeightType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<Self, CudaError> {
        let row_bytes = ty.row_bytes(cols).ok_or_else(|| CudaError::Unsupported {
            op: "weight upload",
            what: format!("{cols} columns is not a whole number of {ty:?} blocks"),
        })?;
        if cols == 0 || rows == 0 || i32::try_from(rows).is_err() || i32::try_from(cols).is_err() {
            return Err(CudaError::Unsupported {
                op: "weight upload",
                what: format!("a {rows} x {cols} matrix"),
            });
        }
        let expected = rows * row_bytes;
        if bytes.len() != expected {
            return Err(CudaError::Shape {
                op: "weight upload",
                what: "tensor bytes",
                expected,
                got: bytes.len(),
            });
        }
        let padded = expected.next_multiple_of(16);
        let stream = dev.stream();
        let mut data = stream
            .alloc_zeros::<u8>(padded)
            .map_err(CudaError::driver("allocating weights"))?;
        let mut head = data.slice_mut(0..expected);
        stream
            .memcpy_htod(bytes, &mut head)
            .map_err(CudaError::driver("uploading weights"))?;
        Ok(Self {
            ty,
            rows,
            cols,
            data,
            bias: None,
        })
    }

    /// The matrix with `bias` (one value per row) added to every product with it.
    pub fn with_bias(mut self, dev: &CudaDevice, bias: &[f32]) -> Result<Self, CudaError> {
        if bias.len() != self.rows {
            return Err(CudaError::Shape {
                op: "weight upload",
                what: "bias values",
                expected: self.rows,
                got: bias.len(),
            });
        }
        self.bias = Some(
            dev.stream()
                .clone_htod(bias)
                .map_err(CudaError::driver("uploading a bias"))?,
        );
        Ok(self)
    }

    /// The bias every product adds, if any.
    pub fn bias(&self) -> Option<&CudaSlice<f32>> {
        self.bias.as_ref()
    }

    /// The block format.
    pub fn weight_type(&self) -> WeightType {
        self.ty
    }

    /// Number of rows (outputs of a matvec).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (inputs of a matvec).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of quantized data (without the padding).
    pub fn bytes(&self) -> usize {
        self.rows * self.ty.block_bytes() * (self.cols / self.ty.block_elems())
    }

    pub(crate) fn data(&self) -> &CudaSlice<u8> {
        &self.data
    }
}

/// Activations prepared for the matvec path: `len` values in groups of 32, each group quantized
/// to int8 with one scale `d` and the product of `d` and the sum of its int8 values, and the f32
/// values themselves (products with float weights take those).
#[derive(Debug)]
pub struct Q8Activations {
    len: usize,
    pub(crate) q: CudaSlice<i8>,
    /// (d, d · Σq) per group, as pairs of f32.
    pub(crate) ds: CudaSlice<f32>,
    /// The values before quantization.
    pub(crate) x: CudaSlice<f32>,
}

impl Q8Activations {
    /// Device storage for `len` values (a multiple of 32).
    pub fn new(dev: &CudaDevice, len: usize) -> Result<Self, CudaError> {
        if len == 0 || !len.is_multiple_of(32) || i32::try_from(len).is_err() {
            return Err(CudaError::Unsupported {
                op: "q8 activations",
                what: format!("length {len} is not a positive multiple of 32"),
            });
        }
        let stream = dev.stream();
        let q = stream
            .alloc_zeros::<i8>(len)
            .map_err(CudaError::driver("allocating activations"))?;
        let ds = stream
            .alloc_zeros::<f32>(len / 16)
            .map_err(CudaError::driver("allocating activations"))?;
        let x = stream
            .alloc_zeros::<f32>(len)
            .map_err(CudaError::driver("allocating activations"))?;
        Ok(Self { len, q, ds, x })
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: storage for zero values cannot be made.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the int8 values and the (d, d · Σq) pairs back to the host.
    pub fn download(&self, dev: &CudaDevice) -> Result<(Vec<i8>, Vec<f32>), CudaError> {
        let s = dev.stream();
        let q = s
            .clone_dtoh(&self.q)
            .map_err(CudaError::driver("downloading activations"))?;
        let ds = s
            .clone_dtoh(&self.ds)
            .map_err(CudaError::driver("downloading activations"))?;
        Ok((q, ds))
    }

    /// Copies the f32 values (as they were before quantization) back to the host.
    pub fn download_values(&self, dev: &CudaDevice) -> Result<Vec<f32>, CudaError> {
        dev.stream()
            .clone_dtoh(&self.x)
            .map_err(CudaError::driver("downloading activations"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::WeightType;

    #[test]
    fn every_type_agrees_with_gguf_and_its_kernel_module() {
        for ty in WeightType::ALL {
            let g = ty.to_ggml();
            assert_eq!(WeightType::from_ggml(g), Some(ty));
            assert_eq!(
                ty.block_bytes(),
                ty.block_elems() / g.block_size() * g.type_size(),
                "{ty:?}"
            );
            let module = ferrolm_kernels::module(ty.kernel_suffix()).unwrap();
            for kernel in [
                ty.matvec_kernel(),
                ty.matvec3_kernel(),
                ty.matvec_experts_kernel(),
                ty.get_rows_kernel(false),
                ty.get_rows_kernel(true),
            ] {
                assert!(module.kernels.contains(&kernel), "{kernel} of {ty:?}");
            }
            // The block struct of the .cu file states the same sizes and activation form.
            let src = module.source;
            assert!(
                src.contains(&format!("BS = {};", ty.block_bytes())),
                "{ty:?}"
            );
            assert!(
                src.contains(&format!("QK = {};", ty.block_elems())),
                "{ty:?}"
            );
            assert!(
                src.contains(&format!("FLOAT_X = {};", ty.is_float())),
                "{ty:?}"
            );
        }
    }
}
