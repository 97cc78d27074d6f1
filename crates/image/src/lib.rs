//! sugarcube-image: the data side of sugarcube's image domain.
//!
//! - [`ImageSet`]: images in memory as one `N x C x H x W` float buffer in [-1, 1], with
//!   optional class labels, batching into candle tensors, subsets, padding and class-balanced
//!   sampling.
//! - Loaders: [`load_idx`] (MNIST / Fashion-MNIST IDX files, gzipped or not),
//!   [`load_fashion_mnist`], [`load_folder`] (a folder of PNG/JPEG files, class labels from
//!   subfolders) and [`load_digits_csv`] (the UCI 8x8 digits as shipped by scikit-learn).
//! - Writers: [`write_png`] and [`write_grid`] for generated samples, [`write_idx`] for IDX.
//!
//! Pixel bytes map to floats by `v / 127.5 - 1` (0 -> -1, 255 -> 1) and back by [`to_u8`].
//! Every loader reports bad input as an error naming the file (and the line, for CSV).

pub mod classifier;
mod digits;
pub mod domain;
mod folder;
/// The Fréchet distance (shared with the other domains, from the core).
pub use sugarcube_core::frechet;
mod idx;
pub mod report;
mod set;
mod write;

pub use digits::load_digits_csv;
pub use domain::{Image, ImageData, ImageEval, ImageFormat};
pub use folder::{load_folder, IMAGE_EXTENSIONS};
pub use idx::{load_fashion_mnist, load_idx, write_idx, FASHION_MNIST_CLASSES};
pub use set::ImageSet;
pub use write::{encode_png, grid_layout, grid_png, to_u8, write_grid, write_png};

/// Maps a pixel byte to the model's range [-1, 1].
pub fn from_u8(v: u8) -> f32 {
    v as f32 / 127.5 - 1.0
}

pub use sugarcube_core::files::read_maybe_gz;

/// Helpers shared by the unit tests.
#[cfg(test)]
pub(crate) mod testutil {
    use std::path::PathBuf;

    /// A fresh, empty folder under the system's temp dir, unique to this process and `name`.
    pub fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sugarcube-image-{}-{name}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The repository's `datasets/` folder.
    pub fn datasets_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../datasets")
    }
}
