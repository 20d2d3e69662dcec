//! Data sources: where training and evaluation batches come from.
//!
//! The training layer asks only for [`DataSource`]: a number of samples, the
//! length of one input, and a way to copy a batch of samples (by index) into flat
//! buffers. [`Dataset`] is the in-memory implementation (the MNIST loader of the
//! reference network produces one); a user's own source (files streamed from disk,
//! another framework's loader) implements the trait.

use crate::error::{Error, Result, check_finite};

/// A source of labelled samples, addressed by index `0..len()`.
///
/// Inputs are flat `f32` slices of [`DataSource::sample_len`] elements in the
/// layout the network expects; labels are class indices.
pub trait DataSource {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether the source holds no sample.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements of one input sample.
    fn sample_len(&self) -> usize;

    /// Copy the samples at `indices` (each `< len()`) into `inputs`
    /// (`indices.len() * sample_len()` values) and `labels`, replacing their contents.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] for an index past the end, and the source's own
    /// errors (I/O, decoding).
    fn gather(&self, indices: &[usize], inputs: &mut Vec<f32>, labels: &mut Vec<u32>)
    -> Result<()>;
}

impl<T: DataSource + ?Sized> DataSource for &T {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn sample_len(&self) -> usize {
        (**self).sample_len()
    }
    fn gather(&self, i: &[usize], x: &mut Vec<f32>, y: &mut Vec<u32>) -> Result<()> {
        (**self).gather(i, x, y)
    }
}

/// Images and labels, images stored `[n][channels][h][w]` as f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Pixel data, `len() * channels * h * w` values.
    pub images: Vec<f32>,
    /// One label per image.
    pub labels: Vec<u32>,
    /// Channels per image.
    pub channels: usize,
    /// Image height.
    pub h: usize,
    /// Image width.
    pub w: usize,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Elements per image.
    pub fn image_len(&self) -> usize {
        self.channels * self.h * self.w
    }
    /// Samples whose image and label are both present (the fields are public, so a
    /// hand-built set may disagree with itself; every method stays within this).
    fn complete(&self) -> usize {
        match self.image_len() {
            0 => 0,
            il => self.labels.len().min(self.images.len() / il),
        }
    }

    /// Check that the fields agree: `images.len() == labels.len() * channels * h * w`,
    /// no zero dimension.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] naming the two sizes.
    pub fn check(&self) -> Result<()> {
        let il = self.image_len();
        if il == 0 || self.images.len() != self.labels.len() * il {
            return Err(Error::shape(
                "images (labels * channels * h * w)",
                self.labels.len() * il,
                self.images.len(),
            ));
        }
        Ok(())
    }

    /// The first `n` samples (all if fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.complete());
        Dataset {
            images: self.images[..n * self.image_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            ..*self
        }
    }
    /// Split into the first `n` samples and the rest (e.g. a validation hold-out).
    pub fn split(&self, n: usize) -> (Dataset, Dataset) {
        let total = self.complete();
        let n = n.min(total);
        let il = self.image_len();
        let part = |lo: usize, hi: usize| Dataset {
            images: self.images[lo * il..hi * il].to_vec(),
            labels: self.labels[lo..hi].to_vec(),
            ..*self
        };
        (part(0, n), part(n, total))
    }

    /// An in-memory dataset of `[n][channels][h][w]` images and one label each.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `images.len() != labels.len() * channels * h * w`
    /// or a dimension is zero; [`Error::NonFinite`] for a NaN or infinite pixel.
    pub fn new(
        images: Vec<f32>,
        labels: Vec<u32>,
        channels: usize,
        h: usize,
        w: usize,
    ) -> Result<Self> {
        let set = Self {
            images,
            labels,
            channels,
            h,
            w,
        };
        set.check()?;
        check_finite("images", &set.images)?;
        Ok(set)
    }
}

impl DataSource for Dataset {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn sample_len(&self) -> usize {
        self.image_len()
    }

    fn gather(
        &self,
        indices: &[usize],
        inputs: &mut Vec<f32>,
        labels: &mut Vec<u32>,
    ) -> Result<()> {
        self.check()?;
        let il = self.image_len();
        inputs.clear();
        labels.clear();
        for &i in indices {
            if i >= self.labels.len() {
                return Err(Error::IndexOutOfRange {
                    what: "sample",
                    index: i,
                    len: self.labels.len(),
                });
            }
            inputs.extend_from_slice(&self.images[i * il..(i + 1) * il]);
            labels.push(self.labels[i]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_batches_and_rejects_bad_input() {
        let d = Dataset::new(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], vec![0, 1, 2], 1, 1, 2).unwrap();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        d.gather(&[2, 0], &mut x, &mut y).unwrap();
        assert_eq!(x, vec![4.0, 5.0, 0.0, 1.0]);
        assert_eq!(y, vec![2, 0]);
        assert!(d.gather(&[3], &mut x, &mut y).is_err());
        assert!(Dataset::new(vec![0.0; 5], vec![0, 1, 2], 1, 1, 2).is_err());
        assert!(Dataset::new(vec![f32::NAN, 0.0], vec![0], 1, 1, 2).is_err());
        // A hand-built set that disagrees with itself: errors, never a panic.
        let bad = Dataset {
            images: vec![0.0; 3],
            ..d.clone()
        };
        let e = bad.gather(&[0], &mut x, &mut y).unwrap_err();
        assert!(e.to_string().contains("labels * channels"), "{e}");
        assert_eq!(bad.take(10).len(), 1);
        let (a, b) = bad.split(5);
        assert_eq!((a.len(), b.len()), (1, 0));
        let (a, b) = d.split(1);
        assert_eq!((a.labels, b.labels), (vec![0], vec![1, 2]));
        assert_eq!(d.take(2).images, vec![0.0, 1.0, 2.0, 3.0]);
        let by_ref: &dyn DataSource = &&d;
        assert_eq!(
            (by_ref.len(), by_ref.sample_len(), by_ref.is_empty()),
            (3, 2, false)
        );
        let (a, b) = d.split(1);
        assert_eq!((a.len(), b.len()), (1, 2));
    }
}
