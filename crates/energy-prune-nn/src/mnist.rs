//! MNIST in the IDX format (gzip-compressed, as distributed).
//!
//! Files: `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
//! `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`. Every header field is
//! checked (magic numbers 2051 / 2049, counts, sizes, label range) and corrupt or
//! truncated files are reported as [`Error::CorruptData`].

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::bufread::GzDecoder;

use energy_prune::error::{Error, Result};
use energy_prune::train::Dataset;

/// Mean of the MNIST training pixels (in [0, 1]).
pub const MNIST_MEAN: f32 = 0.1307;
/// Standard deviation of the MNIST training pixels.
pub const MNIST_STD: f32 = 0.3081;

/// How pixel bytes `p` become inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    /// `p / 255`, in `[0, 1]`.
    Unit,
    /// `p / (255 * MNIST_STD)`: unit variance, black stays exactly 0, so masking an
    /// input element (multiplying it by 0) leaves background pixels unchanged.
    Scale,
    /// `(p / 255 - MNIST_MEAN) / MNIST_STD`: zero mean, unit variance.
    Standardize,
}

/// Loading options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MnistOptions {
    /// Zero-pad each 28x28 image by this many pixels per side (2 gives LeNet-5's 32x32).
    /// Padding pixels get the value of a black pixel.
    pub pad: usize,
    /// Pixel normalisation (default [`Normalization::Standardize`]).
    pub normalization: Normalization,
}

impl Default for MnistOptions {
    fn default() -> Self {
        Self {
            pad: 2,
            normalization: Normalization::Standardize,
        }
    }
}

/// The MNIST training and test sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Mnist {
    /// 60 000 training samples.
    pub train: Dataset,
    /// 10 000 test samples.
    pub test: Dataset,
}

impl Mnist {
    /// Load the four `.gz` files from `dir`.
    ///
    /// # Errors
    /// [`Error::Io`] if a file is missing or unreadable, [`Error::CorruptData`] if a
    /// file is not valid gzip/IDX, is truncated, or images and labels disagree.
    pub fn load(dir: impl AsRef<Path>, opts: MnistOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let train = load_pair(
            &dir.join("train-images-idx3-ubyte.gz"),
            &dir.join("train-labels-idx1-ubyte.gz"),
            opts,
        )?;
        let test = load_pair(
            &dir.join("t10k-images-idx3-ubyte.gz"),
            &dir.join("t10k-labels-idx1-ubyte.gz"),
            opts,
        )?;
        Ok(Self { train, test })
    }
}

/// Largest pixel count accepted in one image file (2^31 bytes; MNIST's training
/// set holds 47 M). Checked from the header, before anything is allocated.
pub const MAX_PIXELS: usize = 1 << 31;
/// Largest padding accepted per side, in pixels.
pub const MAX_PAD: usize = 1024;

/// A gzip stream over a file, read header-first: sizes are checked before the body
/// is read, and memory only grows with data that actually arrives.
struct IdxReader<R: BufRead> {
    path: PathBuf,
    gz: GzDecoder<R>,
}

impl<R: BufRead> IdxReader<R> {
    fn new(path: &Path, inner: R) -> Self {
        Self {
            path: path.to_path_buf(),
            gz: GzDecoder::new(inner),
        }
    }

    fn corrupt(&self, reason: impl Into<String>) -> Error {
        corrupt(&self.path, reason)
    }

    /// Exactly `n` bytes of the decompressed stream, or an error naming what was short.
    fn read(&mut self, n: usize, what: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let got = (&mut self.gz)
            .take(n as u64)
            .read_to_end(&mut out)
            .map_err(|e| self.corrupt(format!("not a valid gzip stream ({e})")))?;
        if got < n {
            return Err(self.corrupt(format!(
                "{what}: needs {n} bytes, the file holds {got} (truncated?)"
            )));
        }
        Ok(out)
    }

    /// The stream must end here: no extra decompressed bytes, no bytes after the gzip member.
    fn finish(mut self) -> Result<()> {
        let mut extra = [0u8; 1];
        let n = self
            .gz
            .read(&mut extra)
            .map_err(|e| self.corrupt(format!("not a valid gzip stream ({e})")))?;
        if n > 0 {
            return Err(self.corrupt("more data than the header announces"));
        }
        let path = self.path.clone();
        let mut inner = self.gz.into_inner();
        let rest = inner.fill_buf().map_err(|e| Error::io(&path, e))?;
        if !rest.is_empty() {
            return Err(corrupt(&path, "trailing bytes after the gzip stream"));
        }
        Ok(())
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::CorruptData {
        path: PathBuf::from(path),
        reason: reason.into(),
    }
}

fn be_u32(bytes: &[u8], at: usize) -> usize {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
}

/// Read a gzip-compressed IDX3 image file: returns `(count, rows, cols, pixels)`.
///
/// # Errors
/// [`Error::CorruptData`] on invalid gzip, a bad magic number, zero or oversized
/// sizes, an empty set, a length mismatch or trailing bytes.
fn read_idx_images<R: BufRead>(path: &Path, inner: R) -> Result<(usize, usize, usize, Vec<u8>)> {
    let mut r = IdxReader::new(path, inner);
    let h = r.read(16, "the IDX3 header")?;
    let magic = be_u32(&h, 0);
    if magic != 2051 {
        return Err(r.corrupt(format!(
            "magic number {magic}, expected 2051 for an image file"
        )));
    }
    let (n, rows, cols) = (be_u32(&h, 4), be_u32(&h, 8), be_u32(&h, 12));
    if rows == 0 || cols == 0 {
        return Err(r.corrupt(format!("image size {rows}x{cols} has a zero dimension")));
    }
    if n == 0 {
        return Err(r.corrupt("the file holds no images"));
    }
    let want = n
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .filter(|v| *v <= MAX_PIXELS)
        .ok_or_else(|| {
            r.corrupt(format!(
                "{n} images of {rows}x{cols} exceed the limit of {MAX_PIXELS} pixels"
            ))
        })?;
    let pixels = r.read(want, &format!("{n} images of {rows}x{cols}"))?;
    r.finish()?;
    Ok((n, rows, cols, pixels))
}

/// Read a gzip-compressed IDX1 label file, checking every label is `< classes`.
///
/// # Errors
/// [`Error::CorruptData`] on invalid gzip, a bad magic number, an empty set, a
/// length mismatch, trailing bytes or an out-of-range label.
fn read_idx_labels<R: BufRead>(path: &Path, inner: R, classes: u8) -> Result<Vec<u8>> {
    let mut r = IdxReader::new(path, inner);
    let h = r.read(8, "the IDX1 header")?;
    let magic = be_u32(&h, 0);
    if magic != 2049 {
        return Err(r.corrupt(format!(
            "magic number {magic}, expected 2049 for a label file"
        )));
    }
    let n = be_u32(&h, 4);
    if n == 0 {
        return Err(r.corrupt("the file holds no labels"));
    }
    if n > MAX_PIXELS {
        return Err(r.corrupt(format!("{n} labels exceed the limit of {MAX_PIXELS}")));
    }
    let labels = r.read(n, &format!("{n} labels"))?;
    r.finish()?;
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        return Err(corrupt(
            path,
            format!("label {l} at index {i} is not below {classes}"),
        ));
    }
    Ok(labels)
}

fn open(path: &Path) -> Result<BufReader<File>> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| Error::io(path, e))
}

fn load_pair(images: &Path, labels: &Path, opts: MnistOptions) -> Result<Dataset> {
    read_pair(images, open(images)?, labels, open(labels)?, opts)
}

/// Decode a gzip-compressed IDX image file and its label file (`*_name` name them
/// in errors) into a [`Dataset`], from files or from memory.
///
/// # Errors
/// As [`Mnist::load`].
pub fn read_pair(
    images_name: &Path,
    images: impl BufRead,
    labels_name: &Path,
    labels: impl BufRead,
    opts: MnistOptions,
) -> Result<Dataset> {
    if opts.pad > MAX_PAD {
        return Err(Error::param(
            "pad",
            opts.pad,
            format!("must be at most {MAX_PAD} pixels per side"),
        ));
    }
    let (n, r, c, pixels) = read_idx_images(images_name, images)?;
    let lab = read_idx_labels(labels_name, labels, 10)?;
    if lab.len() != n {
        return Err(corrupt(
            labels_name,
            format!(
                "{} labels for {n} images in {}",
                lab.len(),
                images_name.display()
            ),
        ));
    }
    let (h, w) = (r + 2 * opts.pad, c + 2 * opts.pad);
    let total = h
        .checked_mul(w)
        .and_then(|v| v.checked_mul(n))
        .filter(|v| *v <= MAX_PIXELS)
        .ok_or_else(|| {
            Error::param(
                "pad",
                opts.pad,
                format!("{n} padded {h}x{w} images exceed {MAX_PIXELS} pixels; pad less"),
            )
        })?;
    let (scale, shift) = match opts.normalization {
        Normalization::Unit => (1.0 / 255.0, 0.0),
        Normalization::Scale => (1.0 / (255.0 * MNIST_STD), 0.0),
        Normalization::Standardize => (1.0 / (255.0 * MNIST_STD), -MNIST_MEAN / MNIST_STD),
    };
    let mut data = vec![shift; total];
    for (img, src) in data.chunks_exact_mut(h * w).zip(pixels.chunks_exact(r * c)) {
        for (y, row) in src.chunks_exact(c).enumerate() {
            let dst = &mut img[(y + opts.pad) * w + opts.pad..][..c];
            for (d, s) in dst.iter_mut().zip(row) {
                *d = *s as f32 * scale + shift;
            }
        }
    }
    Ok(Dataset {
        images: data,
        labels: lab.into_iter().map(u32::from).collect(),
        channels: 1,
        h,
        w,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(magic: u32, dims: &[u32]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn images(n: u32, px: &[u8]) -> Vec<u8> {
        let mut v = header(2051, &[n, 2, 3]);
        v.extend_from_slice(px);
        gz(&v)
    }

    fn labels(l: &[u8]) -> Vec<u8> {
        let mut v = header(2049, &[l.len() as u32]);
        v.extend_from_slice(l);
        gz(&v)
    }

    fn msg<T: std::fmt::Debug>(r: Result<T>) -> String {
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                Error::CorruptData { .. } | Error::InvalidParameter { .. }
            ),
            "{e}"
        );
        e.to_string()
    }

    #[test]
    fn parses_valid_idx() {
        let p = Path::new("x");
        let px: Vec<u8> = (0..12).collect();
        let (n, r, c, got) = read_idx_images(p, &images(2, &px)[..]).unwrap();
        assert_eq!((n, r, c, &got), (2, 2, 3, &px));
        assert_eq!(
            read_idx_labels(p, &labels(&[3, 9])[..], 10).unwrap(),
            vec![3, 9]
        );
        let opts = MnistOptions {
            pad: 1,
            normalization: Normalization::Unit,
        };
        let d = read_pair(p, &images(2, &px)[..], p, &labels(&[3, 9])[..], opts).unwrap();
        assert_eq!((d.h, d.w, d.images.len()), (4, 5, 40));
        assert_eq!(d.images[6], 0.0 / 255.0);
        assert_eq!(
            d.images[7],
            1.0 / 255.0,
            "row 1, col 1 is pixel 0 of row 0 + 1"
        );
        approx::assert_relative_eq!(d.images[20 + 5 + 1], 6.0 / 255.0, max_relative = 1e-6);
    }

    #[test]
    fn rejects_corrupt_idx() {
        let p = Path::new("x");
        let r = |b: &[u8]| read_idx_images(p, b);
        assert!(msg(r(&images(2, &[0; 11]))).contains("truncated"));
        assert!(msg(r(&images(2, &[0; 13]))).contains("more data than"));
        assert!(msg(r(&gz(&header(2049, &[2, 2, 3])))).contains("expected 2051"));
        assert!(msg(r(&gz(&[0, 0]))).contains("header"));
        assert!(msg(r(&images(0, &[]))).contains("no images"));
        assert!(msg(r(&gz(&header(2051, &[2, 0, 3])))).contains("zero dimension"));
        let huge = gz(&header(2051, &[u32::MAX, 1 << 16, 1 << 16]));
        assert!(msg(r(&huge)).contains("exceed the limit"));
        let mut trailing = images(2, &[0; 12]);
        trailing.extend_from_slice(b"junk");
        assert!(msg(r(&trailing)).contains("trailing bytes"));
        assert!(msg(r(b"not gzip at all")).contains("gzip"));
        let l = |b: &[u8]| read_idx_labels(p, b, 10);
        assert!(msg(l(&labels(&[3, 10]))).contains("label 10"));
        let mut short = header(2049, &[3]);
        short.extend_from_slice(&[3, 1]);
        assert!(msg(l(&gz(&short))).contains("truncated"));
        assert!(msg(l(&labels(&[]))).contains("no labels"));
        let opts = |pad| MnistOptions {
            pad,
            ..MnistOptions::default()
        };
        let pair = |pad| {
            read_pair(
                p,
                &images(2, &[0; 12])[..],
                p,
                &labels(&[1, 2])[..],
                opts(pad),
            )
        };
        assert!(msg(pair(MAX_PAD + 1)).contains("pad"));
        assert!(pair(MAX_PAD).is_ok());
        let mismatch = read_pair(p, &images(2, &[0; 12])[..], p, &labels(&[1])[..], opts(0));
        assert!(msg(mismatch).contains("1 labels for 2 images"));
    }

    #[test]
    fn loads_the_shipped_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist");
        let m = Mnist::load(&dir, MnistOptions::default()).unwrap();
        assert_eq!((m.train.len(), m.test.len()), (60_000, 10_000));
        assert_eq!((m.train.h, m.train.w, m.train.channels), (32, 32, 1));
        assert!(m.test.labels.iter().all(|l| *l < 10));
    }

    #[test]
    fn normalisations_and_the_padded_size_limit() {
        let p = Path::new("x");
        let px: Vec<u8> = vec![255; 12];
        let scale = MnistOptions {
            pad: 0,
            normalization: Normalization::Scale,
        };
        let d = read_pair(p, &images(2, &px)[..], p, &labels(&[3, 9])[..], scale).unwrap();
        approx::assert_relative_eq!(d.images[0], 1.0 / MNIST_STD, max_relative = 1e-6);
        let std = MnistOptions {
            pad: 0,
            normalization: Normalization::Standardize,
        };
        let d = read_pair(p, &images(2, &px)[..], p, &labels(&[3, 9])[..], std).unwrap();
        approx::assert_relative_eq!(
            d.images[0],
            (1.0 - MNIST_MEAN) / MNIST_STD,
            max_relative = 1e-6
        );
        // 600 images padded by the largest pad exceed the pixel limit: an error
        // naming the padding, before anything large is allocated.
        let n = 600;
        let mut img = header(2051, &[n, 2, 3]);
        img.extend(vec![0u8; 6 * n as usize]);
        let lab = labels(&vec![1u8; n as usize]);
        let big = MnistOptions {
            pad: MAX_PAD,
            ..MnistOptions::default()
        };
        let e = read_pair(p, &gz(&img)[..], p, &lab[..], big).unwrap_err();
        assert!(e.to_string().contains("pad less"), "{e}");
    }

    #[test]
    fn a_gzip_bomb_is_rejected_from_its_header() {
        // 64 MB of zeros compress to ~64 KB; with a wrong magic number the reader
        // stops after the 16-byte header instead of inflating everything.
        let bomb = gz(&vec![0u8; 64 << 20]);
        let e = read_idx_images(Path::new("bomb"), &bomb[..]).unwrap_err();
        assert!(e.to_string().contains("magic number 0"), "{e}");
    }

    #[test]
    fn missing_and_non_gzip_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("ep-mnist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(
            Mnist::load(&dir, MnistOptions::default()),
            Err(Error::Io { .. })
        ));
        for f in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"] {
            std::fs::write(dir.join(f), b"not gzip at all").unwrap();
        }
        let err = Mnist::load(&dir, MnistOptions::default()).unwrap_err();
        assert!(matches!(err, Error::CorruptData { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
