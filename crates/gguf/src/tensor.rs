use crate::{GgmlType, GgufError};

/// Most dimensions a ggml tensor can have.
pub const MAX_DIMS: usize = 4;

/// A tensor's header entry: name, shape, type and where its data lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo<'a> {
    /// The tensor's name, borrowed from the file.
    pub name: &'a str,
    /// The shape in ggml order: `dims[0]` is the row length (the contiguous axis).
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset of the data, relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo<'_> {
    /// Number of elements (product of the dimensions).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |n, &d| n.saturating_mul(d))
    }

    /// Size of the data in bytes.
    pub fn n_bytes(&self) -> u64 {
        byte_len(&self.dims, self.ty).unwrap_or(u64::MAX)
    }
}

/// A tensor's data, borrowed from the file, with its shape and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorView<'a> {
    /// The tensor's name, borrowed from the file.
    pub name: &'a str,
    /// The shape in ggml order: `dims[0]` is the row length (the contiguous axis).
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// The raw bytes: rows of `dims[0]` elements, each row a whole number of blocks.
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// Number of elements (product of the dimensions).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |n, &d| n.saturating_mul(d))
    }

    /// Elements per row (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(0)
    }

    /// Number of rows (product of `dims[1..]`).
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .fold(1u64, |n, &d| n.saturating_mul(d))
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.row_len()).unwrap_or(0) as usize
    }

    /// The bytes of row `i`, or `None` past the last row.
    pub fn row(&self, i: usize) -> Option<&'a [u8]> {
        let n = self.row_bytes();
        let start = i.checked_mul(n)?;
        self.data.get(start..start.checked_add(n)?)
    }
}

/// Bytes taken by a tensor of this shape and type, if representable.
pub(crate) fn byte_len(dims: &[u64], ty: GgmlType) -> Option<u64> {
    let (&row_len, rest) = dims.split_first()?;
    let n_rows = rest.iter().try_fold(1u64, |n, &d| n.checked_mul(d))?;
    ty.row_bytes(row_len)?.checked_mul(n_rows)
}

/// Checks a shape the way ggml requires: 1 to [`MAX_DIMS`] dimensions, each
/// positive, element count and byte size representable as `i64`, row length
/// a multiple of the block size. Returns the size in bytes.
pub(crate) fn check_shape(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64, GgufError> {
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(GgufError::BadDimCount {
            tensor: name.to_owned(),
            n_dims: dims.len() as u64,
        });
    }
    if let Some(index) = dims.iter().position(|&d| d == 0) {
        return Err(GgufError::ZeroDim {
            tensor: name.to_owned(),
            index,
            dims: dims.to_vec(),
        });
    }
    let overflow = || GgufError::ShapeOverflow {
        tensor: name.to_owned(),
        dims: dims.to_vec(),
    };
    let limit = i64::MAX as u64;
    let n_elements = dims
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= limit)
        .ok_or_else(overflow)?;
    let block_size = ty.block_size();
    if !dims[0].is_multiple_of(block_size as u64) {
        return Err(GgufError::RowNotBlockMultiple {
            tensor: name.to_owned(),
            ty,
            row_len: dims[0],
            block_size,
        });
    }
    let bytes = (n_elements / block_size as u64)
        .checked_mul(ty.type_size() as u64)
        .filter(|&n| n <= limit)
        .ok_or_else(overflow)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_checks_reject_each_bad_case() {
        assert_eq!(check_shape("t", &[32, 2], GgmlType::Q8_0).ok(), Some(68));
        assert!(matches!(
            check_shape("t", &[], GgmlType::F32),
            Err(GgufError::BadDimCount { n_dims: 0, .. })
        ));
        assert!(matches!(
            check_shape("t", &[1, 1, 1, 1, 1], GgmlType::F32),
            Err(GgufError::BadDimCount { n_dims: 5, .. })
        ));
        assert!(matches!(
            check_shape("t", &[4, 0], GgmlType::F32),
            Err(GgufError::ZeroDim { index: 1, .. })
        ));
        assert!(matches!(
            check_shape("t", &[1 << 32, 1 << 32], GgmlType::F32),
            Err(GgufError::ShapeOverflow { .. })
        ));
        // Element count fits i64 but the byte size does not.
        assert!(matches!(
            check_shape("t", &[1 << 31, 1 << 31], GgmlType::F64),
            Err(GgufError::ShapeOverflow { .. })
        ));
        assert!(matches!(
            check_shape("t", &[33], GgmlType::Q4_0),
            Err(GgufError::RowNotBlockMultiple {
                row_len: 33,
                block_size: 32,
                ..
            })
        ));
    }

    #[test]
    fn view_rows_split_the_data() {
        let data: Vec<u8> = (0..24).collect();
        let view = TensorView {
            name: "w",
            dims: vec![2, 3],
            ty: GgmlType::F32,
            data: &data,
        };
        assert_eq!(
            (view.row_len(), view.n_rows(), view.n_elements()),
            (2, 3, 6)
        );
        assert_eq!(view.row(1), Some(&data[8..16]));
        assert_eq!(view.row(3), None);
    }
}
