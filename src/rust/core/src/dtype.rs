//! The 22 element types of the safetensors format (reference crate 0.8.0).

use std::fmt;

/// An element type as named in a safetensors header.
///
/// The declaration order is the reference implementation's: its writer sorts
/// tensors by this order, so keep it when adding variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dtype {
    /// Boolean, one byte per element.
    Bool,
    /// MXFP4 (E2M1), two elements per byte, first element in the low nibble.
    F4,
    /// MXFP6 E2M3, four elements in three bytes.
    F6E2M3,
    /// MXFP6 E3M2, four elements in three bytes.
    F6E3M2,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// 8-bit float, 5 exponent and 2 mantissa bits, IEEE-like (has infinities).
    F8E5M2,
    /// 8-bit float, 4 exponent and 3 mantissa bits, finite only (`float8_e4m3fn`).
    F8E4M3,
    /// 8-bit power-of-two scale (`float8_e8m0fnu`).
    F8E8M0,
    /// 8-bit float E4M3, finite only, no negative zero (AMD `fnuz`).
    F8E4M3Fnuz,
    /// 8-bit float E5M2, finite only, no negative zero (AMD `fnuz`).
    F8E5M2Fnuz,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// IEEE single precision.
    F32,
    /// Complex number made of two IEEE single precision floats.
    C64,
    /// IEEE double precision.
    F64,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 64-bit integer.
    U64,
}

/// Header names of the dtypes, in declaration order.
pub const NAMES: [&str; 22] = [
    "BOOL",
    "F4",
    "F6_E2M3",
    "F6_E3M2",
    "U8",
    "I8",
    "F8_E5M2",
    "F8_E4M3",
    "F8_E8M0",
    "F8_E4M3FNUZ",
    "F8_E5M2FNUZ",
    "I16",
    "U16",
    "F16",
    "BF16",
    "I32",
    "U32",
    "F32",
    "C64",
    "F64",
    "I64",
    "U64",
];

/// Every dtype, in declaration order.
pub const ALL: [Dtype; 22] = [
    Dtype::Bool,
    Dtype::F4,
    Dtype::F6E2M3,
    Dtype::F6E3M2,
    Dtype::U8,
    Dtype::I8,
    Dtype::F8E5M2,
    Dtype::F8E4M3,
    Dtype::F8E8M0,
    Dtype::F8E4M3Fnuz,
    Dtype::F8E5M2Fnuz,
    Dtype::I16,
    Dtype::U16,
    Dtype::F16,
    Dtype::BF16,
    Dtype::I32,
    Dtype::U32,
    Dtype::F32,
    Dtype::C64,
    Dtype::F64,
    Dtype::I64,
    Dtype::U64,
];

impl Dtype {
    /// The name used in headers, e.g. `"F32"`.
    pub fn name(self) -> &'static str {
        NAMES[self as usize]
    }

    /// Parses a header name; names are case-sensitive, as in the reference.
    pub fn from_name(name: &str) -> Option<Dtype> {
        ALL.iter().copied().find(|d| d.name() == name)
    }

    /// Size of one element in bits (4 and 6 for the packed MX types).
    pub fn bits(self) -> usize {
        match self {
            Dtype::F4 => 4,
            Dtype::F6E2M3 | Dtype::F6E3M2 => 6,
            Dtype::Bool
            | Dtype::U8
            | Dtype::I8
            | Dtype::F8E5M2
            | Dtype::F8E4M3
            | Dtype::F8E8M0
            | Dtype::F8E4M3Fnuz
            | Dtype::F8E5M2Fnuz => 8,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 16,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 32,
            Dtype::C64 | Dtype::F64 | Dtype::I64 | Dtype::U64 => 64,
        }
    }

    /// Whether elements are floating point (complex excluded).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            Dtype::F4
                | Dtype::F6E2M3
                | Dtype::F6E3M2
                | Dtype::F8E5M2
                | Dtype::F8E4M3
                | Dtype::F8E8M0
                | Dtype::F8E4M3Fnuz
                | Dtype::F8E5M2Fnuz
                | Dtype::F16
                | Dtype::BF16
                | Dtype::F32
                | Dtype::F64
        )
    }

    /// Whether elements are integers (BOOL excluded).
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            Dtype::U8
                | Dtype::I8
                | Dtype::I16
                | Dtype::U16
                | Dtype::I32
                | Dtype::U32
                | Dtype::I64
                | Dtype::U64
        )
    }

    /// Number of bytes taken by `n` elements, or `None` when `n` elements do
    /// not end on a byte boundary or the size overflows.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        let bits = n.checked_mul(self.bits())?;
        (bits % 8 == 0).then_some(bits / 8)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for d in ALL {
            assert_eq!(Dtype::from_name(d.name()), Some(d));
        }
        assert_eq!(Dtype::from_name("f32"), None);
        assert_eq!(Dtype::from_name("C128"), None);
    }

    #[test]
    fn order_matches_reference_declaration() {
        let mut sorted = ALL;
        sorted.sort();
        assert_eq!(sorted, ALL);
        assert!(Dtype::U64 > Dtype::F64 && Dtype::Bool < Dtype::F4);
    }

    #[test]
    fn sub_byte_sizes() {
        assert_eq!(Dtype::F4.bytes_for(4), Some(2));
        assert_eq!(Dtype::F4.bytes_for(3), None);
        assert_eq!(Dtype::F6E2M3.bytes_for(4), Some(3));
        assert_eq!(Dtype::F6E3M2.bytes_for(2), None);
        assert_eq!(Dtype::F64.bytes_for(usize::MAX), None);
    }
}
