//! IDX files, the format of MNIST and Fashion-MNIST: a big-endian header (magic number, then
//! one u32 per dimension) followed by unsigned bytes. Images are `N x H x W` (magic
//! 0x00000803), labels `N` (magic 0x00000801). Files may be gzipped.

use crate::{from_u8, read_maybe_gz, to_u8, ImageSet};
use anyhow::{bail, ensure, Context};
use flate2::write::GzEncoder;
use std::io::Write;
use std::path::Path;
use sugarcube_core::checkpoint::write_atomic;
use sugarcube_core::domain::Split;

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Fashion-MNIST's class names, indexed by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Parses an IDX header with the expected magic number, returning the dimensions and the
/// payload, which must be exactly as long as the dimensions say.
fn parse_idx<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
    what: &str,
) -> anyhow::Result<(Vec<usize>, &'a [u8])> {
    let ndim = (magic & 0xff) as usize;
    let header_len = 4 + 4 * ndim;
    let word = |i: usize| {
        u32::from_be_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ])
    };
    ensure!(
        bytes.len() >= 4,
        "{}: {} bytes, too short for an IDX {what} file",
        path.display(),
        bytes.len()
    );
    let found = word(0);
    ensure!(
        found == magic,
        "{}: magic number {found:#010x}, expected {magic:#010x} (IDX {what} file of unsigned bytes)",
        path.display()
    );
    ensure!(
        bytes.len() >= header_len,
        "{}: {} bytes, too short for the {header_len}-byte header of an IDX {what} file",
        path.display(),
        bytes.len()
    );
    let dims: Vec<usize> = (1..=ndim).map(|i| word(i) as usize).collect();
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let Some(expected) = expected else {
        bail!("{}: dimensions {dims:?} overflow", path.display());
    };
    let payload = &bytes[header_len..];
    ensure!(
        payload.len() == expected,
        "{}: header says {dims:?} ({expected} data bytes) but the file has {} data bytes ({})",
        path.display(),
        payload.len(),
        if payload.len() < expected {
            "truncated"
        } else {
            "trailing bytes"
        }
    );
    Ok((dims, payload))
}

/// Loads grayscale images from an IDX file (`N x H x W` bytes, gzipped or not), and their labels
/// from a second IDX file when given. Class names are the label numbers ("0", "1", ...,
/// up to the largest label); see [`load_fashion_mnist`] for named classes.
pub fn load_idx(images_path: &Path, labels_path: Option<&Path>) -> anyhow::Result<ImageSet> {
    let bytes = read_maybe_gz(images_path)?;
    let (dims, pixels) = parse_idx(images_path, &bytes, IMAGES_MAGIC, "images")?;
    let (n, height, width) = (dims[0], dims[1], dims[2]);
    ensure!(
        height > 0 && width > 0,
        "{}: image size {height}x{width} is empty",
        images_path.display()
    );
    let images: Vec<f32> = pixels.iter().map(|&v| from_u8(v)).collect();

    let (labels, class_names) = match labels_path {
        None => (None, vec![]),
        Some(path) => {
            let bytes = read_maybe_gz(path)?;
            let (dims, ys) = parse_idx(path, &bytes, LABELS_MAGIC, "labels")?;
            ensure!(
                dims[0] == n,
                "{} holds {} labels but {} holds {n} images",
                path.display(),
                dims[0],
                images_path.display()
            );
            let classes = ys.iter().max().map_or(0, |&m| m as usize + 1);
            (
                Some(ys.iter().map(|&y| y as u32).collect()),
                (0..classes).map(|c| c.to_string()).collect(),
            )
        }
    };
    ImageSet::new(images, labels, class_names, 1, height, width)
        .with_context(|| format!("bad image set from {}", images_path.display()))
}

/// Loads a Fashion-MNIST split from `dir` (the `train-*` files for [`Split::Train`], the
/// `t10k-*` files for [`Split::Heldout`]), labelled with [`FASHION_MNIST_CLASSES`].
pub fn load_fashion_mnist(dir: &Path, split: Split) -> anyhow::Result<ImageSet> {
    let prefix = match split {
        Split::Train => "train",
        Split::Heldout => "t10k",
    };
    let images = dir.join(format!("{prefix}-images-idx3-ubyte.gz"));
    let labels = dir.join(format!("{prefix}-labels-idx1-ubyte.gz"));
    let mut set = load_idx(&images, Some(&labels))?;
    ensure!(
        set.class_names.len() <= FASHION_MNIST_CLASSES.len(),
        "{}: label {} is not a Fashion-MNIST class (0..9)",
        labels.display(),
        set.class_names.len() - 1
    );
    set.class_names = FASHION_MNIST_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect();
    Ok(set)
}

/// Writes `bytes` to `path`, gzipped when the file name ends in `.gz`, through a temp file.
fn write_maybe_gz(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if path.extension().is_some_and(|e| e == "gz") {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes)?;
        write_atomic(path, &enc.finish()?)
    } else {
        write_atomic(path, bytes)
    }
}

/// Writes a grayscale set as IDX files (gzipped when a file name ends in `.gz`): the images,
/// and the labels when `labels_path` is given (the set must then be labelled). Pixels are
/// quantised with [`to_u8`]; labels must fit in a byte.
pub fn write_idx(
    set: &ImageSet,
    images_path: &Path,
    labels_path: Option<&Path>,
) -> anyhow::Result<()> {
    set.validate()?;
    ensure!(
        set.channels == 1,
        "IDX images must be grayscale, the set has {} channels",
        set.channels
    );
    let mut bytes = Vec::with_capacity(16 + set.images.len());
    for d in [IMAGES_MAGIC as usize, set.len(), set.height, set.width] {
        bytes.extend_from_slice(
            &u32::try_from(d)
                .context("dimension too large for IDX")?
                .to_be_bytes(),
        );
    }
    bytes.extend(set.images.iter().map(|&x| to_u8(x)));
    write_maybe_gz(images_path, &bytes)?;

    if let Some(path) = labels_path {
        let Some(labels) = &set.labels else {
            bail!(
                "cannot write labels to {}: the set is unlabelled",
                path.display()
            );
        };
        let mut bytes = Vec::with_capacity(8 + labels.len());
        bytes.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
        bytes.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        for &y in labels {
            bytes.push(
                u8::try_from(y)
                    .with_context(|| format!("label {y} does not fit in an IDX byte"))?,
            );
        }
        write_maybe_gz(path, &bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{datasets_dir, temp_dir};

    fn tiny() -> ImageSet {
        // 3 images of 2x4 with distinct byte values, labels 2, 0, 1
        let images = (0..24u8).map(|v| from_u8(v * 10)).collect();
        ImageSet::new(
            images,
            Some(vec![2, 0, 1]),
            vec!["0".into(), "1".into(), "2".into()],
            1,
            2,
            4,
        )
        .unwrap()
    }

    #[test]
    fn round_trip_plain_and_gz() -> anyhow::Result<()> {
        let dir = temp_dir("idx-round-trip");
        let set = tiny();
        for (img, lab) in [("i.idx", "l.idx"), ("i.idx.gz", "l.idx.gz")] {
            let (img, lab) = (dir.join(img), dir.join(lab));
            write_idx(&set, &img, Some(&lab))?;
            let back = load_idx(&img, Some(&lab))?;
            assert_eq!(back, set, "{}", img.display());
            let unlabelled = load_idx(&img, None)?;
            assert_eq!((unlabelled.labels.is_none(), unlabelled.len()), (true, 3));
        }
        assert_eq!(std::fs::read(dir.join("i.idx.gz"))?[..2], [0x1f, 0x8b]);
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }

    #[test]
    fn truncated_wrong_magic_and_count_mismatch_are_errors_naming_the_file() -> anyhow::Result<()> {
        let dir = temp_dir("idx-bad");
        let set = tiny();
        let (img, lab) = (dir.join("i.idx"), dir.join("l.idx"));
        write_idx(&set, &img, Some(&lab))?;
        let bytes = std::fs::read(&img)?;

        let short = dir.join("short.idx");
        std::fs::write(&short, &bytes[..bytes.len() - 1])?;
        let err = format!("{:#}", load_idx(&short, None).unwrap_err());
        assert!(
            err.contains("short.idx") && err.contains("truncated"),
            "{err}"
        );

        let long = dir.join("long.idx");
        std::fs::write(&long, [&bytes[..], &[0]].concat())?;
        let err = format!("{:#}", load_idx(&long, None).unwrap_err());
        assert!(
            err.contains("long.idx") && err.contains("trailing"),
            "{err}"
        );

        // labels file given as images: wrong magic
        let err = format!("{:#}", load_idx(&lab, None).unwrap_err());
        assert!(err.contains("l.idx") && err.contains("magic"), "{err}");

        let tiny_file = dir.join("tiny.idx");
        std::fs::write(&tiny_file, [0, 0, 8, 3, 0, 0, 0])?;
        let err = format!("{:#}", load_idx(&tiny_file, None).unwrap_err());
        assert!(
            err.contains("tiny.idx") && err.contains("too short"),
            "{err}"
        );

        // a truncated gzip stream
        let gz = dir.join("i.idx.gz");
        write_idx(&set, &gz, None)?;
        let gz_bytes = std::fs::read(&gz)?;
        let cut = dir.join("cut.idx.gz");
        std::fs::write(&cut, &gz_bytes[..gz_bytes.len() / 2])?;
        let err = format!("{:#}", load_idx(&cut, None).unwrap_err());
        assert!(err.contains("cut.idx.gz"), "{err}");

        // two labels for three images
        let two = dir.join("two.idx");
        write_idx(&set.subset(&[0, 1])?, &dir.join("two-img.idx"), Some(&two))?;
        let err = format!("{:#}", load_idx(&img, Some(&two)).unwrap_err());
        assert!(err.contains("two.idx") && err.contains("2 labels"), "{err}");

        let err = format!(
            "{:#}",
            load_idx(&dir.join("missing.idx"), None).unwrap_err()
        );
        assert!(err.contains("missing.idx"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }

    #[test]
    fn committed_fashion_mnist_subset_is_balanced() -> anyhow::Result<()> {
        let dir = datasets_dir().join("fashion-mnist");
        for (split, n) in [(Split::Train, 6000), (Split::Heldout, 1000)] {
            let set = load_fashion_mnist(&dir, split)?;
            assert_eq!(set.len(), n);
            assert_eq!(set.item_shape(), vec![1, 28, 28]);
            assert_eq!(set.num_classes(), Some(10));
            assert_eq!(set.class_names[9], "Ankle boot");
            assert_eq!(set.class_counts(), vec![n / 10; 10]);
            let (lo, hi) = set
                .images
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            assert_eq!((lo, hi), (-1.0, 1.0));
        }
        Ok(())
    }
}
