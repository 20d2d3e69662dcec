//! The reference CNN's helpers for tests and benches: its checked convolution
//! kernels and in-memory parsers, re-exported under one roof.

pub use energy_prune_nn::kernels;

use energy_prune::error::Result;

/// Decode a gzip-compressed IDX image file and label file from memory, as
/// [`Mnist::load`](energy_prune_nn::mnist::Mnist::load) does from disk (for the
/// parser fuzz tests).
///
/// # Errors
/// As [`Mnist::load`](energy_prune_nn::mnist::Mnist::load).
pub fn read_mnist_pair(
    images_gz: &[u8],
    labels_gz: &[u8],
    opts: energy_prune_nn::mnist::MnistOptions,
) -> Result<energy_prune::train::Dataset> {
    energy_prune_nn::mnist::read_pair(
        std::path::Path::new("<images>"),
        images_gz,
        std::path::Path::new("<labels>"),
        labels_gz,
        opts,
    )
}

/// [`Cnn::load`](energy_prune_nn::Cnn::load) from the bytes of a saved file (for
/// the parser fuzz tests).
///
/// # Errors
/// As [`Cnn::load`](energy_prune_nn::Cnn::load).
pub fn load_cnn_bytes(net: &mut energy_prune_nn::Cnn, bytes: &[u8]) -> Result<()> {
    net.load_bytes(std::path::Path::new("<bytes>"), bytes)
}
