//! ONNX external data: tensors whose bytes live in side files next to the model.
//!
//! A `TensorProto` with `data_location = EXTERNAL` carries, in `external_data`,
//! the keys `location` (a path relative to the model's directory), `offset`
//! (bytes, default 0), `length` (bytes, default: to the end of the file) and an
//! optional `checksum` (not checked). This is how models above the 2 GiB a
//! protobuf message can hold are stored (PyTorch's exporters and
//! `onnx.save(..., save_as_external_data=True)` write it).
//!
//! **Reading** ([`resolve`]) checks every reference before allocating anything
//! for it: the location must be relative and stay inside the model's directory
//! (no absolute path, no `..`), name a regular file, and the region
//! `[offset, offset + length)` must lie inside that file and hold exactly the
//! bytes the tensor's dims and type need; the bytes read in all stay within the
//! sizes of the files referenced (so a hostile file cannot make the reader
//! allocate more than what is on disk: no two regions overlap). Only then are
//! the bytes read: into the tensors, which from there on are ordinary inline
//! tensors, except the float32 weights of prunable layers, which the import reads
//! from the side file straight into the layers' weights, 1 MiB at a time, so that
//! their bytes are never held twice.
//!
//! **Writing** ([`ExternalData`], used by
//! [`OnnxModel::save_with_external_data`](crate::OnnxModel::save_with_external_data))
//! moves every tensor of at least `threshold` bytes into one side file, each at
//! an offset aligned to [`ALIGNMENT`] bytes, and writes both files through
//! temporary files renamed only once both are complete.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use super::proto::{
    GraphProto, ModelProto, StringStringEntryProto, TensorProto, tensor_proto::DataLocation,
};
use super::tensor::{FLOAT, corrupt, numel};
use energy_prune::error::{Error, Result};

/// Offsets of tensors in a side file written by this crate are multiples of this
/// (the page size of common systems: a reader may map each tensor directly).
pub const ALIGNMENT: u64 = 4096;

/// Where and from what size [`OnnxModel::save_with_external_data`](crate::OnnxModel::save_with_external_data)
/// stores tensors outside the `.onnx` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalData {
    /// The side file's name, relative to the model's directory (a plain file
    /// name, or a relative path below that directory without `..`).
    pub location: PathBuf,
    /// Tensors of fewer bytes stay inside the `.onnx` file (shapes, scales,
    /// small biases); ONNX's own default is 1024.
    pub threshold: usize,
}

impl ExternalData {
    /// Every tensor of at least 1 KiB in `location`, the convention of ONNX's
    /// Python tools.
    pub fn new(location: impl Into<PathBuf>) -> Self {
        Self {
            location: location.into(),
            threshold: 1024,
        }
    }

    /// The side file for `model_path`: `<file name>.data` next to it
    /// (`model.onnx` → `model.onnx.data`), tensors of 1 KiB and more.
    pub fn beside(model_path: &Path) -> Self {
        let mut name = model_path
            .file_name()
            .map_or_else(|| "model.onnx".into(), std::ffi::OsStr::to_os_string);
        name.push(".data");
        Self::new(PathBuf::from(name))
    }

    /// Tensors of at least `bytes` bytes go to the side file (0: every tensor
    /// with data).
    #[must_use]
    pub fn with_threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// The location as written into the model (`/`-separated), checked as a
    /// reader checks it.
    pub(crate) fn checked_location(&self) -> Result<String> {
        check_location(&self.location).map_err(|why| {
            Error::param(
                "ExternalData::location",
                self.location.display(),
                format!(
                    "the location {why}; give a file name, or a relative path below the \
                     model's directory"
                ),
            )
        })?;
        let parts: Vec<String> = self
            .location
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        Ok(parts.join("/"))
    }
}

/// Why a location is refused, if it is.
fn check_location(location: &Path) -> std::result::Result<(), &'static str> {
    if location.as_os_str().is_empty() {
        return Err("is empty");
    }
    let mut normal = 0;
    for c in location.components() {
        match c {
            Component::Normal(_) => normal += 1,
            Component::CurDir => {}
            Component::ParentDir => return Err("leaves the model's directory (`..`)"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    if normal == 0 {
        return Err("names no file");
    }
    Ok(())
}

/// Whether `t` keeps its data in a side file.
pub(crate) fn is_external(t: &TensorProto) -> bool {
    t.data_location == DataLocation::External as i32 || !t.external_data.is_empty()
}

/// Bytes of `n` elements of ONNX data type `code` as stored in `raw_data`, for
/// the types that can be stored externally.
fn stored_bytes(code: i32, n: usize) -> Option<usize> {
    let width = match code {
        // float, uint8, int8, uint16, int16, int32, int64, bool, float16,
        // double, uint32, uint64, bfloat16, the float8 types
        1 | 6 => 4,
        2 | 3 | 9 | 17..=20 => 1,
        4 | 5 | 10 | 16 => 2,
        7 | 11 | 13 => 8,
        12 => 4,
        // uint4, int4: two per byte
        21 | 22 => return Some(n.div_ceil(2)),
        _ => return None,
    };
    n.checked_mul(width)
}

/// A side file opened for reading.
struct SideFile {
    file: std::fs::File,
    len: u64,
}

/// A checked reference of one tensor: `length` bytes at `offset` of `path`.
struct Region {
    path: PathBuf,
    offset: u64,
    length: u64,
}

/// The side files of one model, opened, with every reference checked: what
/// [`resolve`] did not read yet (the weights of prunable layers) is read from
/// here straight into the layers' weights ([`External::floats`]), then
/// [`External::finish`] reads whatever is left.
pub(crate) struct External {
    dir: PathBuf,
    src: PathBuf,
    files: HashMap<PathBuf, SideFile>,
}

impl External {
    /// The side files read, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.files.keys().cloned().collect();
        files.sort();
        files
    }

    /// Parse `t`'s location and open its side file (once per file).
    fn open(&mut self, t: &TensorProto) -> Result<()> {
        if !is_external(t) {
            return Ok(());
        }
        let (location, _, _) = self.keys(t)?;
        let path = self.dir.join(&location);
        if self.files.contains_key(&path) {
            return Ok(());
        }
        let file = std::fs::File::open(&path).map_err(|e| {
            Error::io(
                &path,
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "{e} (side file of tensor `{}` in {}; keep the model's external data \
                         files next to it)",
                        t.name,
                        self.src.display()
                    ),
                ),
            )
        })?;
        let meta = file.metadata().map_err(|e| Error::io(&path, e))?;
        if !meta.is_file() {
            return Err(self.bad(t, format!("location `{location}` is not a regular file")));
        }
        self.files.insert(
            path,
            SideFile {
                file,
                len: meta.len(),
            },
        );
        Ok(())
    }

    fn bad(&self, t: &TensorProto, why: String) -> Error {
        corrupt(
            &self.src,
            format!("tensor `{}`: external data {why}", t.name),
        )
    }

    /// The checked `location` and the `offset` and `length` keys of `t`.
    fn keys(&self, t: &TensorProto) -> Result<(String, u64, Option<u64>)> {
        let (mut location, mut offset, mut length) = (None, 0u64, None);
        for StringStringEntryProto { key, value } in &t.external_data {
            let number = || {
                value.parse::<u64>().map_err(|_| {
                    self.bad(
                        t,
                        format!(
                            "`{key}` is `{value}`, not a number of bytes; re-save the model \
                             with onnx.save(..., save_as_external_data=True)"
                        ),
                    )
                })
            };
            match key.as_str() {
                "location" => location = Some(value.clone()),
                "offset" => offset = number()?,
                "length" => length = Some(number()?),
                _ => {} // checksum, basepath: not needed to read
            }
        }
        let location = location.ok_or_else(|| self.bad(t, "has no `location` key".into()))?;
        check_location(Path::new(&location)).map_err(|why| {
            self.bad(
                t,
                format!(
                    "location `{location}` {why}; side files must lie in the model's directory"
                ),
            )
        })?;
        Ok((location, offset, length))
    }

    /// The region of external tensor `t` (its side file opened), checked against
    /// the file; `None` for a tensor held inline.
    fn region(&self, t: &TensorProto) -> Result<Option<Region>> {
        if !is_external(t) {
            return Ok(None);
        }
        let (location, offset, length) = self.keys(t)?;
        let path = self.dir.join(&location);
        let n = numel(t, &self.src)?;
        let need = stored_bytes(t.data_type, n).ok_or_else(|| {
            self.bad(
                t,
                format!(
                    "of ONNX data type {} and {n} elements cannot be read (numeric types only)",
                    t.data_type
                ),
            )
        })? as u64;
        let file_len = self
            .files
            .get(&path)
            .ok_or_else(|| self.bad(t, format!("location `{location}` was not opened")))?
            .len;
        let length = length.unwrap_or_else(|| file_len.saturating_sub(offset));
        if length != need {
            return Err(self.bad(
                t,
                format!("holds {length} bytes but the tensor's dims and type need {need}"),
            ));
        }
        if offset.checked_add(length).is_none_or(|end| end > file_len) {
            return Err(self.bad(
                t,
                format!(
                    "region at offset {offset} of {length} bytes runs past the end of \
                     `{location}` ({file_len} bytes); the side file is truncated or belongs to \
                     another model"
                ),
            ));
        }
        Ok(Some(Region {
            path,
            offset,
            length,
        }))
    }

    /// Stream `region` into `sink`, 1 MiB at a time.
    fn stream(&self, t: &TensorProto, region: &Region, mut sink: impl FnMut(&[u8])) -> Result<()> {
        let side = self
            .files
            .get(&region.path)
            .ok_or_else(|| self.bad(t, "side file not opened".into()))?;
        let mut f = &side.file;
        f.seek(SeekFrom::Start(region.offset))
            .map_err(|e| Error::io(&region.path, e))?;
        let mut reader = f.take(region.length);
        let mut chunk = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            let got = reader
                .read(&mut chunk)
                .map_err(|e| Error::io(&region.path, e))?;
            if got == 0 {
                break;
            }
            sink(&chunk[..got]);
            done += got as u64;
        }
        if done != region.length {
            return Err(self.bad(
                t,
                format!(
                    "ended after {done} of {} bytes (the side file changed while read)",
                    region.length
                ),
            ));
        }
        Ok(())
    }

    /// Read external tensor `t` into its `raw_data`; it is then held inline.
    fn internalize(&self, t: &mut TensorProto) -> Result<()> {
        let Some(region) = self.region(t)? else {
            return Ok(());
        };
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(region.length as usize)
            .map_err(|_| {
                self.bad(
                    t,
                    format!("of {} bytes does not fit in memory", region.length),
                )
            })?;
        self.stream(t, &region, |c| bytes.extend_from_slice(c))?;
        t.raw_data = bytes;
        inline(t);
        Ok(())
    }

    /// The values of float32 tensor `t` if it is still stored externally, read
    /// straight from its side file (no copy of its bytes is held); `None` for a
    /// tensor held inline.
    pub fn floats(&self, t: &TensorProto) -> Result<Option<Vec<f32>>> {
        if t.data_type != FLOAT {
            return Ok(None);
        }
        let Some(region) = self.region(t)? else {
            return Ok(None);
        };
        let mut values = Vec::new();
        let n = (region.length / 4) as usize;
        values
            .try_reserve_exact(n)
            .map_err(|_| self.bad(t, format!("of {n} floats does not fit in memory")))?;
        let mut decoder = FloatDecoder {
            values,
            carry: [0; 4],
            held: 0,
        };
        self.stream(t, &region, |c| decoder.push(c))?;
        let values = decoder.values;
        Ok(Some(values))
    }

    /// Read every tensor of `proto` still stored externally into the model.
    pub fn finish(&self, proto: &mut ModelProto) -> Result<()> {
        if let Some(graph) = proto.graph.as_mut() {
            for t in &mut graph.initializer {
                self.internalize(t)?;
            }
        }
        Ok(())
    }
}

/// Little-endian float32 values from bytes arriving in chunks of any length (a
/// value may straddle two chunks).
struct FloatDecoder {
    values: Vec<f32>,
    /// The first bytes of a value cut by the end of the last chunk.
    carry: [u8; 4],
    held: usize,
}

impl FloatDecoder {
    fn push(&mut self, mut c: &[u8]) {
        if self.held > 0 {
            let take = (4 - self.held).min(c.len());
            self.carry[self.held..self.held + take].copy_from_slice(&c[..take]);
            self.held += take;
            c = &c[take..];
            if self.held < 4 {
                return;
            }
            self.values.push(f32::from_le_bytes(self.carry));
            self.held = 0;
        }
        let whole = c.len() / 4 * 4;
        self.values.extend(
            c[..whole]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        let rest = &c[whole..];
        self.carry[..rest.len()].copy_from_slice(rest);
        self.held = rest.len();
    }
}

/// Mark `t` as holding its data inline.
pub(crate) fn inline(t: &mut TensorProto) {
    t.data_location = DataLocation::Default as i32;
    t.external_data.clear();
}

/// Whether initializer `name` is read only as the weight (input 1) of `Conv`,
/// `Gemm` or `MatMul` nodes: a prunable layer's weights, read from the side file
/// straight into the layer.
fn layer_weight_only(graph: &GraphProto, name: &str) -> bool {
    let mut used = false;
    for node in &graph.node {
        for (i, input) in node.input.iter().enumerate() {
            if input == name {
                if i != 1 || !matches!(node.op_type.as_str(), "Conv" | "Gemm" | "MatMul") {
                    return false;
                }
                used = true;
            }
        }
    }
    used
}

/// Check every external tensor of `proto` (initializers and tensors held by node
/// attributes) against its side file in `dir`, so that nothing is allocated for
/// a model that is refused; then read each into its tensor, except the float32
/// weights of prunable layers, which the import reads straight into the layers
/// ([`External::floats`]).
///
/// # Errors
/// [`Error::CorruptData`] for a reference a reader must refuse (see the module
/// docs; overlapping regions among them), [`Error::Io`] if a side file cannot be
/// read.
pub(crate) fn resolve(proto: &mut ModelProto, dir: &Path, src: &Path) -> Result<External> {
    let mut ext = External {
        dir: dir.to_path_buf(),
        src: src.to_path_buf(),
        files: HashMap::new(),
    };
    let Some(graph) = proto.graph.as_mut() else {
        return Ok(ext);
    };
    if graph
        .sparse_initializer
        .iter()
        .any(|s| s.values.as_ref().is_some_and(is_external))
    {
        return Err(Error::unsupported(
            "a sparse initializer stored in an external file",
            "store the model's sparse initializers as dense tensors",
        ));
    }
    let tensors = || {
        let attr_tensors = graph
            .node
            .iter()
            .flat_map(|n| n.attribute.iter())
            .flat_map(|a| a.t.iter().chain(a.tensors.iter()));
        graph.initializer.iter().chain(attr_tensors)
    };
    // Check every reference first: inside its file, and no two overlapping.
    for t in tensors() {
        ext.open(t)?;
    }
    let mut regions = Vec::new();
    for t in tensors() {
        regions.push(ext.region(t)?);
    }
    let mut spans: Vec<(&Path, u64, u64, &str)> = regions
        .iter()
        .zip(tensors())
        .filter_map(|(g, t)| {
            g.as_ref()
                .map(|g| (g.path.as_path(), g.offset, g.length, t.name.as_str()))
        })
        .filter(|s| s.2 > 0)
        .collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        let ((p, a_off, a_len, a), (q, b_off, _, b)) = (pair[0], pair[1]);
        if p == q && a_off + a_len > b_off {
            return Err(corrupt(
                src,
                format!(
                    "tensor `{b}`: external data overlaps that of tensor `{a}` in `{}`; \
                     the file is corrupt or hostile",
                    p.display()
                ),
            ));
        }
    }
    drop(spans);
    let deferred: Vec<bool> = graph
        .initializer
        .iter()
        .map(|t| t.data_type == FLOAT && is_external(t) && layer_weight_only(graph, &t.name))
        .collect();
    for (t, deferred) in graph.initializer.iter_mut().zip(deferred) {
        if !deferred {
            ext.internalize(t)?;
        }
    }
    for a in graph.node.iter_mut().flat_map(|n| n.attribute.iter_mut()) {
        for t in a.t.iter_mut().chain(a.tensors.iter_mut()) {
            ext.internalize(t)?;
        }
    }
    Ok(ext)
}

/// Round `offset` up to the next multiple of [`ALIGNMENT`].
pub(crate) fn aligned(offset: u64) -> u64 {
    offset.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// The `external_data` entries of a tensor stored at `offset`, `length` bytes.
pub(crate) fn entries(location: &str, offset: u64, length: u64) -> Vec<StringStringEntryProto> {
    [
        ("location", location.to_string()),
        ("offset", offset.to_string()),
        ("length", length.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| StringStringEntryProto {
        key: k.into(),
        value: v,
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_inside_the_model_directory_only() {
        assert!(check_location(Path::new("w.data")).is_ok());
        assert!(check_location(Path::new("./sub/w.data")).is_ok());
        assert!(check_location(Path::new("")).is_err());
        assert!(check_location(Path::new(".")).is_err());
        assert!(check_location(Path::new("../w.data")).is_err());
        assert!(check_location(Path::new("sub/../../w.data")).is_err());
        assert!(check_location(Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn floats_cut_anywhere_decode_whole() {
        let values: Vec<f32> = (0..50).map(|i| i as f32 * -1.25 + 0.1).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        for cuts in [vec![1usize], vec![3, 1, 2], vec![5, 7], vec![4], vec![199]] {
            let mut d = FloatDecoder {
                values: Vec::new(),
                carry: [0; 4],
                held: 0,
            };
            let mut rest = bytes.as_slice();
            for &n in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let n = n.min(rest.len());
                d.push(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(d.values, values, "{cuts:?}");
            assert_eq!(d.held, 0);
        }
    }

    #[test]
    fn stored_sizes_by_type() {
        assert_eq!(stored_bytes(1, 3), Some(12));
        assert_eq!(stored_bytes(7, 2), Some(16));
        assert_eq!(stored_bytes(22, 5), Some(3));
        assert_eq!(stored_bytes(3, 5), Some(5));
        assert_eq!(stored_bytes(8, 1), None); // strings
        assert_eq!(stored_bytes(1, usize::MAX), None);
        assert_eq!(aligned(0), 0);
        assert_eq!(aligned(1), 4096);
        assert_eq!(aligned(4096), 4096);
    }
}
