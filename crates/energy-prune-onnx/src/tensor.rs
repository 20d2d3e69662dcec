//! Reading and writing the numbers inside ONNX `TensorProto`s and attributes.

use std::path::Path;

use super::proto::{AttributeProto, NodeProto, TensorProto, tensor_proto::DataLocation};
use energy_prune::error::{Error, Result};

/// [`Error::CorruptData`] for the model file `src`.
pub(crate) fn corrupt(src: &Path, reason: impl Into<String>) -> Error {
    Error::CorruptData {
        path: src.to_path_buf(),
        reason: reason.into(),
    }
}

/// `TensorProto.DataType` codes this module reads.
pub(crate) const FLOAT: i32 = 1;
pub(crate) const INT32: i32 = 6;
const INT64: i32 = 7;
const DOUBLE: i32 = 11;

/// An integer element type of `QuantizeLinear`/`DequantizeLinear` tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IntType {
    /// `TensorProto.DataType` code.
    pub code: i32,
    /// Smallest and largest value.
    pub lo: i32,
    pub hi: i32,
}

impl IntType {
    pub const UINT8: IntType = IntType {
        code: 2,
        lo: 0,
        hi: 255,
    };
    pub const INT8: IntType = IntType {
        code: 3,
        lo: -128,
        hi: 127,
    };
    pub const UINT16: IntType = IntType {
        code: 4,
        lo: 0,
        hi: 65535,
    };
    pub const INT16: IntType = IntType {
        code: 5,
        lo: -32768,
        hi: 32767,
    };
    pub const INT32: IntType = IntType {
        code: INT32,
        lo: i32::MIN,
        hi: i32::MAX,
    };
    pub const UINT4: IntType = IntType {
        code: 21,
        lo: 0,
        hi: 15,
    };
    pub const INT4: IntType = IntType {
        code: 22,
        lo: -8,
        hi: 7,
    };

    /// The type of ONNX data type `code`, if it is one of the integer types above.
    pub fn of(code: i32) -> Option<IntType> {
        [
            Self::UINT8,
            Self::INT8,
            Self::UINT16,
            Self::INT16,
            Self::INT32,
            Self::UINT4,
            Self::INT4,
        ]
        .into_iter()
        .find(|t| t.code == code)
    }

    /// Bytes per element in `raw_data` (0 for the packed 4-bit types).
    fn width(self) -> usize {
        match self.code {
            2 | 3 => 1,
            4 | 5 => 2,
            6 => 4,
            _ => 0,
        }
    }
}

/// The values of an integer tensor of a quantized model (8-, 16-, 32- or packed
/// 4-bit, signed or unsigned), checked against its dims.
pub(crate) fn quantized(t: &TensorProto, src: &Path) -> Result<(IntType, Vec<i32>)> {
    reject_external(t)?;
    let n = numel(t, src)?;
    let ty = IntType::of(t.data_type).ok_or_else(|| {
        corrupt(
            src,
            format!(
                "tensor `{}` of a QuantizeLinear/DequantizeLinear node has ONNX data type {} \
                 (int4, int8, int16, int32 or their unsigned forms expected)",
                t.name, t.data_type
            ),
        )
    })?;
    let values: Vec<i32> = if t.raw_data.is_empty() {
        t.int32_data.clone()
    } else if ty.width() == 0 {
        if t.raw_data.len() != n.div_ceil(2) {
            return Err(raw_len_error(
                t,
                n,
                1,
                "packed 4-bit values (two per byte)",
                src,
            ));
        }
        let signed = ty.lo < 0;
        (0..n)
            .map(|i| {
                let nibble = i32::from((t.raw_data[i / 2] >> (4 * (i % 2))) & 0xF);
                if signed && nibble > 7 {
                    nibble - 16
                } else {
                    nibble
                }
            })
            .collect()
    } else {
        let w = ty.width();
        if t.raw_data.len() != n.saturating_mul(w) {
            return Err(raw_len_error(t, n, w, "integers", src));
        }
        t.raw_data
            .chunks_exact(w)
            .map(|b| match ty.code {
                2 => i32::from(b[0]),
                3 => i32::from(b[0] as i8),
                4 => i32::from(u16::from_le_bytes([b[0], b[1]])),
                5 => i32::from(i16::from_le_bytes([b[0], b[1]])),
                _ => i32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            })
            .collect()
    };
    if values.len() != n {
        return Err(corrupt(
            src,
            format!(
                "tensor `{}` holds {} integers but its dims say {n}",
                t.name,
                values.len()
            ),
        ));
    }
    if let Some(v) = values.iter().find(|&&v| v < ty.lo || v > ty.hi) {
        return Err(corrupt(
            src,
            format!("tensor `{}` holds {v}, outside its type's range", t.name),
        ));
    }
    Ok((ty, values))
}

/// Store `values` (each within `ty`'s range) in `t` as `raw_data` of type `ty`.
pub(crate) fn set_quantized(t: &mut TensorProto, dims: &[usize], ty: IntType, values: &[i32]) {
    t.dims = dims.iter().map(|&d| d as i64).collect();
    t.data_type = ty.code;
    t.int32_data.clear();
    t.float_data.clear();
    t.raw_data = encode_quantized(ty, values);
}

/// The `raw_data` bytes of `values` as type `ty` (4-bit types packed, low nibble first).
pub(crate) fn encode_quantized(ty: IntType, values: &[i32]) -> Vec<u8> {
    match ty.width() {
        0 => values
            .chunks(2)
            .map(|p| (p[0] as u8 & 0xF) | ((p.get(1).copied().unwrap_or(0) as u8 & 0xF) << 4))
            .collect(),
        1 => values.iter().map(|&v| v as u8).collect(),
        2 => values
            .iter()
            .flat_map(|&v| (v as u16).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
    }
}

/// Number of elements of a tensor, from its dims (checked: no negative dims, no overflow).
pub(crate) fn numel(t: &TensorProto, src: &Path) -> Result<usize> {
    t.dims.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d)
            .ok()
            .and_then(|d| acc.checked_mul(d))
            .ok_or_else(|| {
                corrupt(
                    src,
                    format!("tensor `{}` has an invalid dimension {d}", t.name),
                )
            })
    })
}

/// The dims of a tensor as `usize` (negative dims are an error).
pub(crate) fn dims(t: &TensorProto, src: &Path) -> Result<Vec<usize>> {
    numel(t, src)?;
    Ok(t.dims.iter().map(|&d| d as usize).collect())
}

fn reject_external(t: &TensorProto) -> Result<()> {
    if t.data_location == DataLocation::External as i32 || !t.external_data.is_empty() {
        return Err(Error::unsupported(
            format!(
                "tensor `{}` stores its data in an external file where none is read \
                 (external data is read for initializers and Constant nodes)",
                t.name
            ),
            "save the model with this tensor inside the .onnx file \
             (in Python: onnx.save(onnx.load(path), out, save_as_external_data=False))",
        ));
    }
    Ok(())
}

/// The values of a float tensor (FLOAT, or DOUBLE converted to f32), checked
/// against its dims; `src` names the file in errors.
pub(crate) fn floats(t: &TensorProto, src: &Path) -> Result<Vec<f32>> {
    reject_external(t)?;
    let n = numel(t, src)?;
    let wrong = |got: usize| {
        corrupt(
            src,
            format!(
                "tensor `{}` holds {got} values but its dims say {n}",
                t.name
            ),
        )
    };
    let wrong_bytes = |width: usize| raw_len_error(t, n, width, "values", src);
    let values = match t.data_type {
        FLOAT if !t.raw_data.is_empty() => {
            if t.raw_data.len() != n.saturating_mul(4) {
                return Err(wrong_bytes(4));
            }
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        }
        FLOAT => {
            if t.float_data.len() != n {
                return Err(wrong(t.float_data.len()));
            }
            t.float_data.clone()
        }
        DOUBLE if !t.raw_data.is_empty() => {
            if t.raw_data.len() != n.saturating_mul(8) {
                return Err(wrong_bytes(8));
            }
            t.raw_data
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                .collect()
        }
        DOUBLE => {
            if t.double_data.len() != n {
                return Err(wrong(t.double_data.len()));
            }
            t.double_data.iter().map(|&v| v as f32).collect()
        }
        other => {
            return Err(Error::unsupported(
                format!("tensor `{}` of ONNX data type {other}", t.name),
                "only float32 and float64 tensors can be read here (integer weights are read \
                 through a DequantizeLinear node, the QDQ form); convert the model to float32",
            ));
        }
    };
    Ok(values)
}

/// The error of `raw_data` whose length is not `n` elements of `width` bytes.
fn raw_len_error(t: &TensorProto, n: usize, width: usize, what: &str, src: &Path) -> Error {
    corrupt(
        src,
        format!(
            "tensor `{}` holds {} bytes of raw data but its dims say {n} {what} ({} bytes)",
            t.name,
            t.raw_data.len(),
            n.saturating_mul(width)
        ),
    )
}

/// The values of an integer tensor (INT64 or INT32), checked against its dims.
pub(crate) fn ints(t: &TensorProto, src: &Path) -> Result<Vec<i64>> {
    reject_external(t)?;
    let n = numel(t, src)?;
    let width = if t.data_type == INT32 { 4 } else { 8 };
    if !t.raw_data.is_empty() && t.raw_data.len() != n.saturating_mul(width) {
        return Err(raw_len_error(t, n, width, "integers", src));
    }
    let values: Vec<i64> = match t.data_type {
        INT64 if !t.raw_data.is_empty() => t
            .raw_data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect(),
        INT64 => t.int64_data.clone(),
        INT32 if !t.raw_data.is_empty() => t
            .raw_data
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        INT32 => t.int32_data.iter().map(|&v| i64::from(v)).collect(),
        other => {
            return Err(corrupt(
                src,
                format!(
                    "tensor `{}` should hold integers but has ONNX data type {other}",
                    t.name
                ),
            ));
        }
    };
    if values.len() != n {
        return Err(corrupt(
            src,
            format!(
                "tensor `{}` holds {} integers but its dims say {n}",
                t.name,
                values.len()
            ),
        ));
    }
    Ok(values)
}

/// Store `values` in `t` as little-endian float32 `raw_data` with the given dims.
pub(crate) fn set_floats(t: &mut TensorProto, dims: &[usize], values: &[f32]) {
    t.dims = dims.iter().map(|&d| d as i64).collect();
    t.data_type = FLOAT;
    t.float_data.clear();
    t.double_data.clear();
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
}

/// Store `values` in `t` as INT64 `raw_data` with the given dims.
pub(crate) fn set_ints(t: &mut TensorProto, dims: &[usize], values: &[i64]) {
    t.dims = dims.iter().map(|&d| d as i64).collect();
    t.data_type = INT64;
    t.int64_data.clear();
    t.int32_data.clear();
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
}

/// A named attribute of a node.
pub(crate) fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// An integer attribute, or `default`.
pub(crate) fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

/// A float attribute, or `default`.
pub(crate) fn attr_float(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

/// An integer-list attribute (empty when absent).
pub(crate) fn attr_ints<'a>(node: &'a NodeProto, name: &str) -> &'a [i64] {
    attr(node, name).map_or(&[], |a| a.ints.as_slice())
}

/// A string attribute (empty when absent).
pub(crate) fn attr_str(node: &NodeProto, name: &str) -> String {
    attr(node, name)
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(dims: &[i64], data_type: i32) -> TensorProto {
        TensorProto {
            name: "t".into(),
            dims: dims.to_vec(),
            data_type,
            ..TensorProto::default()
        }
    }

    const SRC: &str = "test.onnx";
    fn floats(t: &TensorProto) -> Result<Vec<f32>> {
        super::floats(t, Path::new(SRC))
    }
    fn ints(t: &TensorProto) -> Result<Vec<i64>> {
        super::ints(t, Path::new(SRC))
    }

    #[test]
    fn floats_round_trip_and_length_checks() {
        let mut t = tensor(&[], FLOAT);
        set_floats(&mut t, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, -6.5]);
        assert_eq!(floats(&t).unwrap()[5], -6.5);
        t.raw_data.pop();
        assert!(matches!(floats(&t), Err(Error::CorruptData { .. })));
        let mut f = tensor(&[2], FLOAT);
        f.float_data = vec![1.0, 2.0];
        assert_eq!(floats(&f).unwrap(), vec![1.0, 2.0]);
        let mut d = tensor(&[1], DOUBLE);
        d.double_data = vec![0.25];
        assert_eq!(floats(&d).unwrap(), vec![0.25]);
        assert!(floats(&tensor(&[-1], FLOAT)).is_err());
        assert!(matches!(
            floats(&tensor(&[1], 10)),
            Err(Error::Unsupported { .. })
        ));
        let mut ext = tensor(&[1], FLOAT);
        ext.data_location = DataLocation::External as i32;
        assert!(matches!(floats(&ext), Err(Error::Unsupported { .. })));
    }

    #[test]
    fn ints_read_both_encodings() {
        let mut t = tensor(&[], INT64);
        set_ints(&mut t, &[2], &[-1, 9216]);
        assert_eq!(ints(&t).unwrap(), vec![-1, 9216]);
        let mut i = tensor(&[2], INT32);
        i.int32_data = vec![3, 4];
        assert_eq!(ints(&i).unwrap(), vec![3, 4]);
        assert!(ints(&tensor(&[1], FLOAT)).is_err());
    }
}
