//! The dtype table R sees (R/dtypes.R): the core's dtypes with what R makes
//! of them. R keeps no copy of its own.

use extendr_api::prelude::*;
use safetensors_core::convert::{r_type, RType};
use safetensors_core::dtype::{Dtype, ALL};

use crate::robj::named_list;

/// The R vector type a dtype is read into by default.
pub fn r_type_name(d: Dtype) -> &'static str {
    match r_type(d) {
        RType::Real => "double",
        RType::Integer => "integer",
        RType::Logical => "logical",
        RType::Complex => "complex",
    }
}

/// R torch's function for the torch dtype holding `d`, and the name torch's
/// `dtype$.type()` gives it; `None` for the dtypes R torch has no type for.
fn torch_names(d: Dtype) -> Option<(&'static str, &'static str)> {
    Some(match d {
        Dtype::F64 => ("torch_float64", "Double"),
        Dtype::F32 => ("torch_float32", "Float"),
        Dtype::F16 => ("torch_float16", "Half"),
        Dtype::BF16 => ("torch_bfloat16", "BFloat16"),
        Dtype::I64 => ("torch_int64", "Long"),
        Dtype::I32 => ("torch_int32", "Int"),
        Dtype::I16 => ("torch_int16", "Short"),
        Dtype::I8 => ("torch_int8", "Char"),
        Dtype::U8 => ("torch_uint8", "Byte"),
        Dtype::Bool => ("torch_bool", "Bool"),
        Dtype::C64 => ("torch_cfloat", "ComplexFloat"),
        Dtype::F8E4M3 => ("torch_float8_e4m3fn", "Float8_e4m3fn"),
        Dtype::F8E5M2 => ("torch_float8_e5m2", "Float8_e5m2"),
        _ => return None,
    })
}

/// The R vector type (or class) written as `d` when no dtype is asked for.
fn default_for(d: Dtype) -> Option<&'static str> {
    Some(match d {
        Dtype::F64 => "double",
        Dtype::I32 => "integer",
        Dtype::Bool => "logical",
        Dtype::U8 => "raw",
        Dtype::C64 => "complex",
        Dtype::I64 => "integer64",
        _ => return None,
    })
}

/// Other names users may give `d` by, besides the format's own: numpy's
/// and torch's (`np.dtype(...).name`, `str(torch.float16)` without
/// `torch.`), and ml_dtypes' for the small floats. R compares them without
/// regard to case. Names that mean different dtypes to numpy and torch
/// (`float`, `int`, `long`, `byte`, `cfloat`) are left out.
fn aliases(d: Dtype) -> &'static [&'static str] {
    match d {
        // `bool` is the format's name in lower case.
        Dtype::Bool => &[],
        Dtype::F4 => &["float4_e2m1fn"],
        Dtype::F6E2M3 => &["float6_e2m3fn"],
        Dtype::F6E3M2 => &["float6_e3m2fn"],
        Dtype::U8 => &["uint8"],
        Dtype::I8 => &["int8"],
        Dtype::F8E5M2 => &["float8_e5m2"],
        Dtype::F8E4M3 => &["float8_e4m3fn"],
        Dtype::F8E8M0 => &["float8_e8m0fnu"],
        Dtype::F8E4M3Fnuz => &["float8_e4m3fnuz"],
        Dtype::F8E5M2Fnuz => &["float8_e5m2fnuz"],
        Dtype::I16 => &["int16", "short"],
        Dtype::U16 => &["uint16"],
        Dtype::F16 => &["float16", "half"],
        Dtype::BF16 => &["bfloat16"],
        Dtype::I32 => &["int32"],
        Dtype::U32 => &["uint32"],
        Dtype::F32 => &["float32"],
        Dtype::C64 => &["complex64"],
        Dtype::F64 => &["float64", "double"],
        Dtype::I64 => &["int64"],
        Dtype::U64 => &["uint64"],
    }
}

/// Every dtype of the format in the reference implementation's order:
/// `list(name, bits, r_type, default_for, torch, torch_type, aliases)`,
/// columns of equal length: `r_type` is the R type it is read into,
/// `default_for` the R type (or class) written as it by default (`NA` for
/// the others), `torch` and `torch_type` R torch's dtype function and
/// `$.type()` name (`NA` where R torch has no such type), `aliases` a list
/// of the other names it may be given by (numpy's and torch's).
/// @noRd
#[extendr]
fn dtype_table_() -> Robj {
    let torch: Vec<Option<String>> = ALL
        .iter()
        .map(|&d| torch_names(d).map(|t| t.0.to_string()))
        .collect();
    let torch_type: Vec<Option<String>> = ALL
        .iter()
        .map(|&d| torch_names(d).map(|t| t.1.to_string()))
        .collect();
    let bits: Vec<i32> = ALL.iter().map(|d| d.bits() as i32).collect();
    let na_or = |s: Option<&str>| s.map_or(Rstr::na(), Rstr::from);
    let alias_list: Vec<Robj> = ALL
        .iter()
        .map(|&d| Strings::from_values(aliases(d).iter().copied()).into())
        .collect();
    named_list(
        &[
            "name",
            "bits",
            "r_type",
            "default_for",
            "torch",
            "torch_type",
            "aliases",
        ],
        vec![
            Strings::from_values(ALL.iter().map(|d| d.name())).into(),
            Robj::from(&bits[..]),
            Strings::from_values(ALL.iter().map(|&d| r_type_name(d))).into(),
            Strings::from_values(ALL.iter().map(|&d| na_or(default_for(d)))).into(),
            Strings::from_values(torch.iter().map(|t| na_or(t.as_deref()))).into(),
            Strings::from_values(torch_type.iter().map(|t| na_or(t.as_deref()))).into(),
            List::from_values(alias_list).into(),
        ],
    )
}

extendr_module! {
    mod dtypes;
    fn dtype_table_;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_unique_and_never_a_format_name() {
        let mut seen = std::collections::HashSet::new();
        for d in ALL {
            assert!(seen.insert(d.name().to_lowercase()), "{d}");
        }
        for d in ALL {
            for a in aliases(d) {
                assert_eq!(*a, a.to_lowercase(), "{a}");
                assert!(seen.insert(a.to_string()), "{a} names two dtypes");
            }
        }
    }
}
