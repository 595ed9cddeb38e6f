/// A metadata value type id as GGUF stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// `u8`
    U8,
    /// `i8`
    I8,
    /// `u16`
    U16,
    /// `i16`
    I16,
    /// `u32`
    U32,
    /// `i32`
    I32,
    /// `f32`
    F32,
    /// one byte, 0 or 1
    Bool,
    /// length-prefixed UTF-8
    String,
    /// element type, count, elements
    Array,
    /// `u64`
    U64,
    /// `i64`
    I64,
    /// `f64`
    F64,
}

impl ValueType {
    /// The type with GGUF id `id`.
    pub fn from_id(id: u32) -> Option<ValueType> {
        Some(match id {
            0 => ValueType::U8,
            1 => ValueType::I8,
            2 => ValueType::U16,
            3 => ValueType::I16,
            4 => ValueType::U32,
            5 => ValueType::I32,
            6 => ValueType::F32,
            7 => ValueType::Bool,
            8 => ValueType::String,
            9 => ValueType::Array,
            10 => ValueType::U64,
            11 => ValueType::I64,
            12 => ValueType::F64,
            _ => return None,
        })
    }

    /// GGUF's id for the type.
    pub fn id(self) -> u32 {
        match self {
            ValueType::U8 => 0,
            ValueType::I8 => 1,
            ValueType::U16 => 2,
            ValueType::I16 => 3,
            ValueType::U32 => 4,
            ValueType::I32 => 5,
            ValueType::F32 => 6,
            ValueType::Bool => 7,
            ValueType::String => 8,
            ValueType::Array => 9,
            ValueType::U64 => 10,
            ValueType::I64 => 11,
            ValueType::F64 => 12,
        }
    }

    /// A short name for messages: `"u32"`, `"string"`, `"array"`, ...
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "u8",
            ValueType::I8 => "i8",
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::Bool => "bool",
            ValueType::String => "string",
            ValueType::Array => "array",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F64 => "f64",
        }
    }

    /// The fewest bytes one value of this type takes in a file
    /// (a string's length prefix; an array's element type and count).
    pub(crate) fn min_encoded_len(self) -> u64 {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::U64 | ValueType::I64 | ValueType::F64 | ValueType::String => 8,
            ValueType::Array => 12,
        }
    }
}

impl std::fmt::Display for ValueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata value borrowed from the file: strings point into its bytes.
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataValue<'a> {
    /// `u8`
    U8(u8),
    /// `i8`
    I8(i8),
    /// `u16`
    U16(u16),
    /// `i16`
    I16(i16),
    /// `u32`
    U32(u32),
    /// `i32`
    I32(i32),
    /// `u64`
    U64(u64),
    /// `i64`
    I64(i64),
    /// `f32`
    F32(f32),
    /// `f64`
    F64(f64),
    /// `bool`
    Bool(bool),
    /// UTF-8 text
    String(&'a str),
    /// An array of values of one type.
    Array(MetadataArray<'a>),
}

/// A metadata array: all elements have one type.
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataArray<'a> {
    /// `u8` elements
    U8(Vec<u8>),
    /// `i8` elements
    I8(Vec<i8>),
    /// `u16` elements
    U16(Vec<u16>),
    /// `i16` elements
    I16(Vec<i16>),
    /// `u32` elements
    U32(Vec<u32>),
    /// `i32` elements
    I32(Vec<i32>),
    /// `u64` elements
    U64(Vec<u64>),
    /// `i64` elements
    I64(Vec<i64>),
    /// `f32` elements
    F32(Vec<f32>),
    /// `f64` elements
    F64(Vec<f64>),
    /// `bool` elements
    Bool(Vec<bool>),
    /// string elements, borrowed from the file
    String(Vec<&'a str>),
    /// nested arrays (each may have its own element type)
    Array(Vec<MetadataArray<'a>>),
}

/// An owned metadata value, for writing files.
#[derive(Clone, Debug, PartialEq)]
pub enum OwnedMetadataValue {
    /// `u8`
    U8(u8),
    /// `i8`
    I8(i8),
    /// `u16`
    U16(u16),
    /// `i16`
    I16(i16),
    /// `u32`
    U32(u32),
    /// `i32`
    I32(i32),
    /// `u64`
    U64(u64),
    /// `i64`
    I64(i64),
    /// `f32`
    F32(f32),
    /// `f64`
    F64(f64),
    /// `bool`
    Bool(bool),
    /// UTF-8 text
    String(String),
    /// An array of values of one type.
    Array(OwnedArray),
}

/// An owned metadata array, for writing files.
#[derive(Clone, Debug, PartialEq)]
pub enum OwnedArray {
    /// `u8` elements
    U8(Vec<u8>),
    /// `i8` elements
    I8(Vec<i8>),
    /// `u16` elements
    U16(Vec<u16>),
    /// `i16` elements
    I16(Vec<i16>),
    /// `u32` elements
    U32(Vec<u32>),
    /// `i32` elements
    I32(Vec<i32>),
    /// `u64` elements
    U64(Vec<u64>),
    /// `i64` elements
    I64(Vec<i64>),
    /// `f32` elements
    F32(Vec<f32>),
    /// `f64` elements
    F64(Vec<f64>),
    /// `bool` elements
    Bool(Vec<bool>),
    /// string elements
    String(Vec<String>),
    /// nested arrays
    Array(Vec<OwnedArray>),
}

impl<'a> MetadataValue<'a> {
    /// The value's GGUF type.
    pub fn value_type(&self) -> ValueType {
        match self {
            MetadataValue::U8(_) => ValueType::U8,
            MetadataValue::I8(_) => ValueType::I8,
            MetadataValue::U16(_) => ValueType::U16,
            MetadataValue::I16(_) => ValueType::I16,
            MetadataValue::U32(_) => ValueType::U32,
            MetadataValue::I32(_) => ValueType::I32,
            MetadataValue::U64(_) => ValueType::U64,
            MetadataValue::I64(_) => ValueType::I64,
            MetadataValue::F32(_) => ValueType::F32,
            MetadataValue::F64(_) => ValueType::F64,
            MetadataValue::Bool(_) => ValueType::Bool,
            MetadataValue::String(_) => ValueType::String,
            MetadataValue::Array(_) => ValueType::Array,
        }
    }

    /// Any integer value, widened to `i128` so every GGUF integer fits.
    fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            MetadataValue::U8(v) => v.into(),
            MetadataValue::I8(v) => v.into(),
            MetadataValue::U16(v) => v.into(),
            MetadataValue::I16(v) => v.into(),
            MetadataValue::U32(v) => v.into(),
            MetadataValue::I32(v) => v.into(),
            MetadataValue::U64(v) => v.into(),
            MetadataValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// Whether the value is of one of the integer types.
    pub fn is_integer(&self) -> bool {
        self.as_i128().is_some()
    }

    /// An integer value of any type that fits in `u32`.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_i128().and_then(|v| u32::try_from(v).ok())
    }

    /// An integer value of any type that fits in `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_i128().and_then(|v| u64::try_from(v).ok())
    }

    /// An integer value of any type that fits in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_i128().and_then(|v| i64::try_from(v).ok())
    }

    /// An `f32` value, or an `f64` value rounded to `f32`.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            MetadataValue::F32(v) => Some(v),
            MetadataValue::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    /// An `f32` or `f64` value as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetadataValue::F32(v) => Some(v.into()),
            MetadataValue::F64(v) => Some(v),
            _ => None,
        }
    }

    /// A boolean value.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetadataValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// A string value.
    pub fn as_str(&self) -> Option<&'a str> {
        match *self {
            MetadataValue::String(v) => Some(v),
            _ => None,
        }
    }

    /// An array value.
    pub fn as_array(&self) -> Option<&MetadataArray<'a>> {
        match self {
            MetadataValue::Array(v) => Some(v),
            _ => None,
        }
    }

    /// An owned copy, for writing to another file.
    pub fn to_owned_value(&self) -> OwnedMetadataValue {
        OwnedMetadataValue::from(self)
    }
}

impl std::fmt::Display for MetadataValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetadataValue::U8(v) => write!(f, "{v}"),
            MetadataValue::I8(v) => write!(f, "{v}"),
            MetadataValue::U16(v) => write!(f, "{v}"),
            MetadataValue::I16(v) => write!(f, "{v}"),
            MetadataValue::U32(v) => write!(f, "{v}"),
            MetadataValue::I32(v) => write!(f, "{v}"),
            MetadataValue::U64(v) => write!(f, "{v}"),
            MetadataValue::I64(v) => write!(f, "{v}"),
            MetadataValue::F32(v) => write!(f, "{v}"),
            MetadataValue::F64(v) => write!(f, "{v}"),
            MetadataValue::Bool(v) => write!(f, "{v}"),
            MetadataValue::String(v) => write!(f, "{v:?}"),
            MetadataValue::Array(a) => write!(f, "[{} x {}]", a.len(), a.element_type()),
        }
    }
}

impl<'a> MetadataArray<'a> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            MetadataArray::U8(v) => v.len(),
            MetadataArray::I8(v) => v.len(),
            MetadataArray::U16(v) => v.len(),
            MetadataArray::I16(v) => v.len(),
            MetadataArray::U32(v) => v.len(),
            MetadataArray::I32(v) => v.len(),
            MetadataArray::U64(v) => v.len(),
            MetadataArray::I64(v) => v.len(),
            MetadataArray::F32(v) => v.len(),
            MetadataArray::F64(v) => v.len(),
            MetadataArray::Bool(v) => v.len(),
            MetadataArray::String(v) => v.len(),
            MetadataArray::Array(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements' GGUF type.
    pub fn element_type(&self) -> ValueType {
        match self {
            MetadataArray::U8(_) => ValueType::U8,
            MetadataArray::I8(_) => ValueType::I8,
            MetadataArray::U16(_) => ValueType::U16,
            MetadataArray::I16(_) => ValueType::I16,
            MetadataArray::U32(_) => ValueType::U32,
            MetadataArray::I32(_) => ValueType::I32,
            MetadataArray::U64(_) => ValueType::U64,
            MetadataArray::I64(_) => ValueType::I64,
            MetadataArray::F32(_) => ValueType::F32,
            MetadataArray::F64(_) => ValueType::F64,
            MetadataArray::Bool(_) => ValueType::Bool,
            MetadataArray::String(_) => ValueType::String,
            MetadataArray::Array(_) => ValueType::Array,
        }
    }

    /// The elements of a string array.
    pub fn as_strings(&self) -> Option<&[&'a str]> {
        match self {
            MetadataArray::String(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of an `f32` array.
    pub fn as_f32s(&self) -> Option<&[f32]> {
        match self {
            MetadataArray::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of an `i32` array.
    pub fn as_i32s(&self) -> Option<&[i32]> {
        match self {
            MetadataArray::I32(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of a `u32` array.
    pub fn as_u32s(&self) -> Option<&[u32]> {
        match self {
            MetadataArray::U32(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of a `u8` array.
    pub fn as_u8s(&self) -> Option<&[u8]> {
        match self {
            MetadataArray::U8(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of a `bool` array.
    pub fn as_bools(&self) -> Option<&[bool]> {
        match self {
            MetadataArray::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of an array of arrays.
    pub fn as_arrays(&self) -> Option<&[MetadataArray<'a>]> {
        match self {
            MetadataArray::Array(v) => Some(v),
            _ => None,
        }
    }

    /// Element `i` of an integer array of any integer type, as `i64`
    /// (`None` when out of bounds, not an integer array, or a `u64` above `i64::MAX`).
    pub fn get_i64(&self, i: usize) -> Option<i64> {
        match self {
            MetadataArray::U8(v) => v.get(i).map(|&x| x.into()),
            MetadataArray::I8(v) => v.get(i).map(|&x| x.into()),
            MetadataArray::U16(v) => v.get(i).map(|&x| x.into()),
            MetadataArray::I16(v) => v.get(i).map(|&x| x.into()),
            MetadataArray::U32(v) => v.get(i).map(|&x| x.into()),
            MetadataArray::I32(v) => v.get(i).map(|&x| x.into()),
            MetadataArray::U64(v) => v.get(i).and_then(|&x| i64::try_from(x).ok()),
            MetadataArray::I64(v) => v.get(i).copied(),
            _ => None,
        }
    }
}

impl OwnedMetadataValue {
    /// The value's GGUF type.
    pub fn value_type(&self) -> ValueType {
        match self {
            OwnedMetadataValue::U8(_) => ValueType::U8,
            OwnedMetadataValue::I8(_) => ValueType::I8,
            OwnedMetadataValue::U16(_) => ValueType::U16,
            OwnedMetadataValue::I16(_) => ValueType::I16,
            OwnedMetadataValue::U32(_) => ValueType::U32,
            OwnedMetadataValue::I32(_) => ValueType::I32,
            OwnedMetadataValue::U64(_) => ValueType::U64,
            OwnedMetadataValue::I64(_) => ValueType::I64,
            OwnedMetadataValue::F32(_) => ValueType::F32,
            OwnedMetadataValue::F64(_) => ValueType::F64,
            OwnedMetadataValue::Bool(_) => ValueType::Bool,
            OwnedMetadataValue::String(_) => ValueType::String,
            OwnedMetadataValue::Array(_) => ValueType::Array,
        }
    }
}

impl OwnedArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            OwnedArray::U8(v) => v.len(),
            OwnedArray::I8(v) => v.len(),
            OwnedArray::U16(v) => v.len(),
            OwnedArray::I16(v) => v.len(),
            OwnedArray::U32(v) => v.len(),
            OwnedArray::I32(v) => v.len(),
            OwnedArray::U64(v) => v.len(),
            OwnedArray::I64(v) => v.len(),
            OwnedArray::F32(v) => v.len(),
            OwnedArray::F64(v) => v.len(),
            OwnedArray::Bool(v) => v.len(),
            OwnedArray::String(v) => v.len(),
            OwnedArray::Array(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements' GGUF type.
    pub fn element_type(&self) -> ValueType {
        match self {
            OwnedArray::U8(_) => ValueType::U8,
            OwnedArray::I8(_) => ValueType::I8,
            OwnedArray::U16(_) => ValueType::U16,
            OwnedArray::I16(_) => ValueType::I16,
            OwnedArray::U32(_) => ValueType::U32,
            OwnedArray::I32(_) => ValueType::I32,
            OwnedArray::U64(_) => ValueType::U64,
            OwnedArray::I64(_) => ValueType::I64,
            OwnedArray::F32(_) => ValueType::F32,
            OwnedArray::F64(_) => ValueType::F64,
            OwnedArray::Bool(_) => ValueType::Bool,
            OwnedArray::String(_) => ValueType::String,
            OwnedArray::Array(_) => ValueType::Array,
        }
    }
}

impl From<&MetadataValue<'_>> for OwnedMetadataValue {
    fn from(v: &MetadataValue<'_>) -> Self {
        match v {
            MetadataValue::U8(x) => OwnedMetadataValue::U8(*x),
            MetadataValue::I8(x) => OwnedMetadataValue::I8(*x),
            MetadataValue::U16(x) => OwnedMetadataValue::U16(*x),
            MetadataValue::I16(x) => OwnedMetadataValue::I16(*x),
            MetadataValue::U32(x) => OwnedMetadataValue::U32(*x),
            MetadataValue::I32(x) => OwnedMetadataValue::I32(*x),
            MetadataValue::U64(x) => OwnedMetadataValue::U64(*x),
            MetadataValue::I64(x) => OwnedMetadataValue::I64(*x),
            MetadataValue::F32(x) => OwnedMetadataValue::F32(*x),
            MetadataValue::F64(x) => OwnedMetadataValue::F64(*x),
            MetadataValue::Bool(x) => OwnedMetadataValue::Bool(*x),
            MetadataValue::String(x) => OwnedMetadataValue::String((*x).to_owned()),
            MetadataValue::Array(a) => OwnedMetadataValue::Array(a.into()),
        }
    }
}

impl From<&MetadataArray<'_>> for OwnedArray {
    fn from(a: &MetadataArray<'_>) -> Self {
        match a {
            MetadataArray::U8(v) => OwnedArray::U8(v.clone()),
            MetadataArray::I8(v) => OwnedArray::I8(v.clone()),
            MetadataArray::U16(v) => OwnedArray::U16(v.clone()),
            MetadataArray::I16(v) => OwnedArray::I16(v.clone()),
            MetadataArray::U32(v) => OwnedArray::U32(v.clone()),
            MetadataArray::I32(v) => OwnedArray::I32(v.clone()),
            MetadataArray::U64(v) => OwnedArray::U64(v.clone()),
            MetadataArray::I64(v) => OwnedArray::I64(v.clone()),
            MetadataArray::F32(v) => OwnedArray::F32(v.clone()),
            MetadataArray::F64(v) => OwnedArray::F64(v.clone()),
            MetadataArray::Bool(v) => OwnedArray::Bool(v.clone()),
            MetadataArray::String(v) => {
                OwnedArray::String(v.iter().map(|s| (*s).to_owned()).collect())
            }
            MetadataArray::Array(v) => OwnedArray::Array(v.iter().map(OwnedArray::from).collect()),
        }
    }
}

macro_rules! owned_from_scalar {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for OwnedMetadataValue {
            fn from(v: $t) -> Self {
                OwnedMetadataValue::$variant(v)
            }
        })*
    };
}

owned_from_scalar!(
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32,
    u64 => U64, i64 => I64, f32 => F32, f64 => F64, bool => Bool, String => String,
    OwnedArray => Array,
);

impl From<&str> for OwnedMetadataValue {
    fn from(v: &str) -> Self {
        OwnedMetadataValue::String(v.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_getters_accept_any_integer_that_fits() {
        assert_eq!(MetadataValue::U8(7).as_u32(), Some(7));
        assert_eq!(MetadataValue::I32(-1).as_u32(), None);
        assert_eq!(MetadataValue::I64(5).as_u64(), Some(5));
        assert_eq!(MetadataValue::U64(u64::MAX).as_u32(), None);
        assert_eq!(MetadataValue::U64(u64::MAX).as_i64(), None);
        assert_eq!(MetadataValue::I16(-3).as_i64(), Some(-3));
        assert_eq!(MetadataValue::F32(1.0).as_u32(), None);
        assert_eq!(MetadataValue::F64(0.5).as_f32(), Some(0.5));
        assert_eq!(MetadataValue::U32(1).as_f32(), None);
        assert_eq!(MetadataValue::String("x").as_str(), Some("x"));
        assert_eq!(MetadataValue::Bool(true).as_str(), None);
    }

    #[test]
    fn value_type_ids_round_trip() {
        for id in 0..=12 {
            assert_eq!(ValueType::from_id(id).map(ValueType::id), Some(id));
        }
        assert_eq!(ValueType::from_id(13), None);
    }

    #[test]
    fn owned_copy_keeps_nested_arrays() {
        let v = MetadataValue::Array(MetadataArray::Array(vec![
            MetadataArray::String(vec!["a", "b"]),
            MetadataArray::I8(vec![-1]),
        ]));
        let owned = v.to_owned_value();
        assert_eq!(
            owned,
            OwnedMetadataValue::Array(OwnedArray::Array(vec![
                OwnedArray::String(vec!["a".into(), "b".into()]),
                OwnedArray::I8(vec![-1]),
            ]))
        );
    }
}
