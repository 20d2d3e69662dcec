//! Saving and loading the parameters of a [`Cnn`].
//!
//! Format (little-endian): the 8-byte magic `EPCNN001`, a `u32` layer count, then per
//! prunable layer a `u64` weight count, the weights as `f32`, a `u64` bias count and
//! the biases. Files are written to a temporary name and renamed, so an
//! interrupted save never leaves a half-written file; loading validates everything
//! before touching the network.

use std::io::Read;
use std::path::Path;

use super::Cnn;
use energy_prune::error::{Error, Result, check_finite};
use energy_prune::network::Network;

const MAGIC: &[u8; 8] = b"EPCNN001";

impl Cnn {
    /// Save all weights and biases to `path`.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let (weights, biases) = self.params();
        let mut buf = Vec::with_capacity(16 + 4 * self.architecture().param_count());
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&(weights.len() as u32).to_le_bytes());
        for (w, b) in weights.iter().zip(biases) {
            for t in [w, b] {
                buf.extend_from_slice(&(t.len() as u64).to_le_bytes());
                t.iter()
                    .for_each(|v| buf.extend_from_slice(&v.to_le_bytes()));
            }
        }
        energy_prune::files::write_atomic(path, &buf)
    }

    /// Load weights and biases saved by [`Cnn::save`] from a network of the same architecture.
    ///
    /// # Errors
    /// [`Error::Io`] if unreadable; [`Error::CorruptData`] if the file is not in this
    /// format, is truncated, holds non-finite values, or belongs to a different
    /// architecture. The network is unchanged on error.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let corrupt = |reason: String| Error::CorruptData {
            path: path.to_path_buf(),
            reason,
        };
        // The size is known from the architecture: check it before reading anything.
        let expected: u64 = {
            let (w, b) = self.params();
            12 + w
                .iter()
                .chain(b)
                .map(|t| 8 + 4 * t.len() as u64)
                .sum::<u64>()
        };
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if size != expected {
            return Err(corrupt(format!(
                "{size} bytes, a saved `{}` network has {expected} (different architecture, \
                 truncated or not a saved network)",
                self.architecture().name()
            )));
        }
        let mut bytes = Vec::with_capacity(expected as usize);
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, e))?;
        self.load_bytes(path, &bytes)
    }

    /// [`Cnn::load`] from the bytes of a saved file (`path` names it in errors).
    ///
    /// # Errors
    /// As [`Cnn::load`].
    pub fn load_bytes(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        let corrupt = |reason: String| Error::CorruptData {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(corrupt("not an energy-prune Cnn file (bad magic)".into()));
        }
        let layers = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        let (weights, biases) = self.params();
        if layers != weights.len() {
            return Err(corrupt(format!(
                "{layers} layers in the file, the network has {}",
                weights.len()
            )));
        }
        let mut at = 12;
        let mut tensors: Vec<Vec<f32>> = Vec::with_capacity(2 * layers);
        for l in 0..layers {
            for expected in [weights[l].len(), biases[l].len()] {
                let len_bytes = bytes
                    .get(at..at + 8)
                    .ok_or_else(|| corrupt("truncated".into()))?;
                let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
                at += 8;
                if len != expected {
                    return Err(corrupt(format!(
                        "layer {l}: tensor of {len} values, the network expects {expected} (different architecture)"
                    )));
                }
                let data = bytes
                    .get(at..at + 4 * len)
                    .ok_or_else(|| corrupt("truncated".into()))?;
                at += 4 * len;
                let t: Vec<f32> = data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect();
                check_finite("saved parameters", &t).map_err(|e| corrupt(e.to_string()))?;
                tensors.push(t);
            }
        }
        if at != bytes.len() {
            return Err(corrupt(format!("{} trailing bytes", bytes.len() - at)));
        }
        let (w, b) = self.params_mut();
        for (l, pair) in tensors.chunks_exact(2).enumerate() {
            w[l].copy_from_slice(&pair[0]);
            b[l].copy_from_slice(&pair[1]);
        }
        Ok(())
    }
}
