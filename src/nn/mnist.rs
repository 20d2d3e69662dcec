//! MNIST in the IDX format (gzip-compressed, as distributed).
//!
//! Files: `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
//! `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`. Every header field is
//! checked (magic numbers 2051 / 2049, counts, sizes, label range) and corrupt or
//! truncated files are reported as [`Error::CorruptData`].

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use crate::error::{Error, Result};
use crate::train::Dataset;

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

fn read_gz(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    GzDecoder::new(std::io::BufReader::new(file))
        .read_to_end(&mut out)
        .map_err(|e| corrupt(path, format!("not a valid gzip stream ({e})")))?;
    Ok(out)
}

fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::CorruptData {
        path: PathBuf::from(path),
        reason: reason.into(),
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Parse an IDX3 image file body: returns `(count, rows, cols, pixels)`.
///
/// # Errors
/// [`Error::CorruptData`] on a bad magic number, zero sizes, or a length mismatch.
fn parse_idx_images(path: &Path, bytes: &[u8]) -> Result<(usize, usize, usize, Vec<u8>)> {
    if bytes.len() < 16 {
        return Err(corrupt(
            path,
            format!(
                "{} bytes is shorter than the 16-byte IDX3 header",
                bytes.len()
            ),
        ));
    }
    let magic = be_u32(bytes, 0);
    if magic != 2051 {
        return Err(corrupt(
            path,
            format!("magic number {magic}, expected 2051 for an image file"),
        ));
    }
    let (n, r, c) = (
        be_u32(bytes, 4) as usize,
        be_u32(bytes, 8) as usize,
        be_u32(bytes, 12) as usize,
    );
    if r == 0 || c == 0 {
        return Err(corrupt(
            path,
            format!("image size {r}x{c} has a zero dimension"),
        ));
    }
    let want = n
        .checked_mul(r * c)
        .ok_or_else(|| corrupt(path, "image count overflows"))?;
    if bytes.len() - 16 != want {
        return Err(corrupt(
            path,
            format!(
                "{n} images of {r}x{c} need {want} bytes, the file holds {} (truncated?)",
                bytes.len() - 16
            ),
        ));
    }
    Ok((n, r, c, bytes[16..].to_vec()))
}

/// Parse an IDX1 label file body, checking every label is `< classes`.
///
/// # Errors
/// [`Error::CorruptData`] on a bad magic number, a length mismatch, or an out-of-range label.
fn parse_idx_labels(path: &Path, bytes: &[u8], classes: u8) -> Result<Vec<u8>> {
    if bytes.len() < 8 {
        return Err(corrupt(
            path,
            format!(
                "{} bytes is shorter than the 8-byte IDX1 header",
                bytes.len()
            ),
        ));
    }
    let magic = be_u32(bytes, 0);
    if magic != 2049 {
        return Err(corrupt(
            path,
            format!("magic number {magic}, expected 2049 for a label file"),
        ));
    }
    let n = be_u32(bytes, 4) as usize;
    if bytes.len() - 8 != n {
        return Err(corrupt(
            path,
            format!(
                "header announces {n} labels, the file holds {} (truncated?)",
                bytes.len() - 8
            ),
        ));
    }
    let labels = bytes[8..].to_vec();
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        return Err(corrupt(
            path,
            format!("label {l} at index {i} is not below {classes}"),
        ));
    }
    Ok(labels)
}

fn load_pair(images: &Path, labels: &Path, opts: MnistOptions) -> Result<Dataset> {
    let (n, r, c, pixels) = parse_idx_images(images, &read_gz(images)?)?;
    let lab = parse_idx_labels(labels, &read_gz(labels)?, 10)?;
    if lab.len() != n {
        return Err(corrupt(
            labels,
            format!(
                "{} labels for {n} images in {}",
                lab.len(),
                images.display()
            ),
        ));
    }
    let (h, w) = (r + 2 * opts.pad, c + 2 * opts.pad);
    let (scale, shift) = match opts.normalization {
        Normalization::Unit => (1.0 / 255.0, 0.0),
        Normalization::Scale => (1.0 / (255.0 * MNIST_STD), 0.0),
        Normalization::Standardize => (1.0 / (255.0 * MNIST_STD), -MNIST_MEAN / MNIST_STD),
    };
    let mut data = vec![shift; n * h * w];
    for i in 0..n {
        for y in 0..r {
            let src = &pixels[(i * r + y) * c..(i * r + y + 1) * c];
            let dst = &mut data[i * h * w + (y + opts.pad) * w + opts.pad..][..c];
            for (d, s) in dst.iter_mut().zip(src) {
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

    #[test]
    fn parses_valid_idx() {
        let p = Path::new("x");
        let mut img = header(2051, &[2, 2, 3]);
        img.extend_from_slice(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        let (n, r, c, px) = parse_idx_images(p, &img).unwrap();
        assert_eq!((n, r, c, px.len()), (2, 2, 3, 12));
        let mut lab = header(2049, &[2]);
        lab.extend_from_slice(&[3, 9]);
        assert_eq!(parse_idx_labels(p, &lab, 10).unwrap(), vec![3, 9]);
    }

    #[test]
    fn rejects_corrupt_idx() {
        let p = Path::new("x");
        let mut img = header(2051, &[2, 2, 3]);
        img.extend_from_slice(&[0; 11]); // one byte short
        assert!(matches!(
            parse_idx_images(p, &img),
            Err(Error::CorruptData { .. })
        ));
        let img = header(2049, &[2, 2, 3]);
        let msg = parse_idx_images(p, &img).unwrap_err().to_string();
        assert!(msg.contains("expected 2051"), "{msg}");
        assert!(parse_idx_images(p, &[0, 0]).is_err());
        let mut lab = header(2049, &[2]);
        lab.extend_from_slice(&[3, 10]);
        let msg = parse_idx_labels(p, &lab, 10).unwrap_err().to_string();
        assert!(msg.contains("label 10"), "{msg}");
        let mut lab = header(2049, &[3]);
        lab.extend_from_slice(&[3, 1]);
        assert!(parse_idx_labels(p, &lab, 10).is_err());
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
