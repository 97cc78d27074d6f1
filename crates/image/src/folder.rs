//! A folder of PNG/JPEG pictures of any size, resized and centre-cropped to one square size.

use crate::{from_u8, ImageSet};
use anyhow::{bail, ensure, Context};
use image::imageops::FilterType;
use image::DynamicImage;
use std::path::{Path, PathBuf};

/// File extensions [`load_folder`] reads (compared case-insensitively); other files are ignored.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn is_image_file(path: &Path) -> bool {
    path.is_file()
        && !is_hidden(path)
        && path.extension().is_some_and(|e| {
            IMAGE_EXTENSIONS
                .iter()
                .any(|x| e.to_string_lossy().eq_ignore_ascii_case(x))
        })
}

/// The entries of `dir`, sorted by path.
fn sorted_entries(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = vec![];
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("cannot read folder {}", dir.display()))?
    {
        out.push(
            entry
                .with_context(|| format!("cannot read folder {}", dir.display()))?
                .path(),
        );
    }
    out.sort();
    Ok(out)
}

/// Decodes one picture (format guessed from its content), resizes it so that its shorter side
/// is `size` (Catmull-Rom filter), centre-crops it to `size x size` and returns its pixels as
/// `C x H x W` floats in [-1, 1]. Alpha is dropped.
fn load_one(path: &Path, size: usize, channels: usize) -> anyhow::Result<Vec<f32>> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", path.display()))?
        .decode()
        .with_context(|| format!("cannot decode image {}", path.display()))?;
    let img = match channels {
        1 => DynamicImage::ImageLuma8(img.to_luma8()),
        _ => DynamicImage::ImageRgb8(img.to_rgb8()),
    };
    let (w, h) = (img.width() as u64, img.height() as u64);
    ensure!(w > 0 && h > 0, "{} is an empty image", path.display());
    let s = size as u64;
    // shorter side to `size`, the longer one scaled alike (rounded, never below `size`)
    let (nw, nh) = if w <= h {
        (s, ((h * s + w / 2) / w).max(s))
    } else {
        (((w * s + h / 2) / h).max(s), s)
    };
    let img = if (nw, nh) == (w, h) {
        img
    } else {
        img.resize_exact(nw as u32, nh as u32, FilterType::CatmullRom)
    };
    let img = img.crop_imm(
        ((nw - s) / 2) as u32,
        ((nh - s) / 2) as u32,
        size as u32,
        size as u32,
    );
    // interleaved H x W x C bytes -> planar C x H x W floats
    let bytes = img.as_bytes();
    let mut out = vec![0.0f32; channels * size * size];
    for (i, &v) in bytes.iter().enumerate() {
        let (pixel, c) = (i / channels, i % channels);
        out[c * size * size + pixel] = from_u8(v);
    }
    Ok(out)
}

/// Loads every PNG/JPEG picture under `dir` as a `size x size` image with `channels` channels
/// (1 = grayscale, 3 = RGB): each is resized so that its shorter side is `size`, then
/// centre-cropped.
///
/// When `dir` has subfolders (hidden ones aside), each is a class: class ids follow the sorted
/// folder names, and the pictures directly inside each folder are its images. Otherwise the
/// pictures directly in `dir` form an unlabelled set. Files are read in sorted order, so the
/// result is deterministic; files without an image extension ([`IMAGE_EXTENSIONS`]) are
/// ignored.
///
/// A picture that cannot be decoded is an error naming it, unless `skip_bad` is true: then it
/// is skipped with a warning on stderr, and the number skipped is reported at the end.
pub fn load_folder(
    dir: &Path,
    size: usize,
    channels: usize,
    skip_bad: bool,
) -> anyhow::Result<ImageSet> {
    ensure!(size > 0, "image size must be positive");
    ensure!(
        channels == 1 || channels == 3,
        "channels must be 1 (grayscale) or 3 (RGB), got {channels}"
    );
    let entries = sorted_entries(dir)?;
    let class_dirs: Vec<&PathBuf> = entries
        .iter()
        .filter(|p| p.is_dir() && !is_hidden(p))
        .collect();

    // (file, class id) in load order
    let mut files: Vec<(PathBuf, u32)> = vec![];
    let mut class_names = vec![];
    if class_dirs.is_empty() {
        files.extend(
            entries
                .iter()
                .filter(|p| is_image_file(p))
                .map(|p| (p.clone(), 0)),
        );
    } else {
        if let Some(stray) = entries.iter().find(|p| is_image_file(p)) {
            bail!(
                "{} has class subfolders and also pictures at its top level (such as {}): move them \
                 into a class folder, or remove the subfolders for an unlabelled set",
                dir.display(),
                stray.display()
            );
        }
        for (id, class_dir) in class_dirs.iter().enumerate() {
            let name = class_dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let before = files.len();
            files.extend(
                sorted_entries(class_dir)?
                    .into_iter()
                    .filter(|p| is_image_file(p))
                    .map(|p| (p, id as u32)),
            );
            if files.len() == before {
                eprintln!(
                    "warning: class folder {} holds no pictures",
                    class_dir.display()
                );
            }
            class_names.push(name);
        }
    }
    ensure!(
        !files.is_empty(),
        "no pictures ({}) found in {}",
        IMAGE_EXTENSIONS.join(", "),
        dir.display()
    );

    let mut images = Vec::with_capacity(files.len() * channels * size * size);
    let mut labels = vec![];
    let mut skipped = 0;
    for (path, class) in &files {
        match load_one(path, size, channels) {
            Ok(pixels) => {
                images.extend(pixels);
                labels.push(*class);
            }
            Err(e) if skip_bad => {
                eprintln!("warning: skipping {}: {e:#}", path.display());
                skipped += 1;
            }
            Err(e) => return Err(e.context("(set skip_bad to skip unreadable pictures)")),
        }
    }
    if skipped > 0 {
        eprintln!(
            "warning: skipped {skipped} of {} pictures in {}",
            files.len(),
            dir.display()
        );
    }
    ensure!(
        !labels.is_empty(),
        "none of the {} pictures in {} could be read",
        files.len(),
        dir.display()
    );
    let labels = (!class_names.is_empty()).then_some(labels);
    ImageSet::new(images, labels, class_names, channels, size, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::temp_dir;
    use image::{Rgb, RgbImage};

    /// Writes a `w x h` RGB picture of one colour.
    fn picture(path: &Path, w: u32, h: u32, colour: [u8; 3]) {
        RgbImage::from_pixel(w, h, Rgb(colour)).save(path).unwrap();
    }

    #[test]
    fn class_folders_give_labels_and_size() -> anyhow::Result<()> {
        let dir = temp_dir("folder-classes");
        for class in ["zebra", "apple"] {
            std::fs::create_dir_all(dir.join(class))?;
        }
        picture(&dir.join("apple/b.png"), 40, 20, [255, 0, 0]);
        picture(&dir.join("apple/a.png"), 17, 30, [255, 0, 0]);
        picture(&dir.join("zebra/z.png"), 16, 16, [0, 0, 255]);
        image::RgbImage::from_pixel(50, 60, Rgb([0, 255, 0])).save(dir.join("zebra/y.JPG"))?;
        std::fs::write(dir.join("zebra/notes.txt"), "not a picture")?;

        let set = load_folder(&dir, 16, 3, false)?;
        assert_eq!(set.class_names, vec!["apple", "zebra"]);
        assert_eq!(set.labels, Some(vec![0, 0, 1, 1]));
        assert_eq!(set.item_shape(), vec![3, 16, 16]);
        // apple/a.png first (sorted), a pure red picture stays red after resizing
        let red = set.image(0);
        assert!(red[..256].iter().all(|&x| x == 1.0) && red[256..].iter().all(|&x| x == -1.0));
        // the JPEG is green, roughly
        let green = set.image(2);
        assert!(green[256..512].iter().all(|&x| x > 0.9) && green[..256].iter().all(|&x| x < -0.9));

        let gray = load_folder(&dir, 8, 1, false)?;
        assert_eq!((gray.len(), gray.item_shape()), (4, vec![1, 8, 8]));
        assert!(load_folder(&dir, 8, 2, false).is_err());
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }

    #[test]
    fn flat_folder_is_unlabelled_and_centre_cropped() -> anyhow::Result<()> {
        let dir = temp_dir("folder-flat");
        // 30x10: left third black, middle white, right third black; shorter side 10 -> 10,
        // centre crop keeps the white middle
        let mut img = RgbImage::from_pixel(30, 10, Rgb([0, 0, 0]));
        for x in 10..20 {
            for y in 0..10 {
                img.put_pixel(x, y, Rgb([255, 255, 255]));
            }
        }
        img.save(dir.join("wide.png"))?;
        let set = load_folder(&dir, 10, 1, false)?;
        assert_eq!(
            (set.len(), set.labels.clone(), set.class_names.len()),
            (1, None, 0)
        );
        assert!(set.images.iter().all(|&x| x == 1.0));
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }

    #[test]
    fn corrupt_file_errors_or_is_skipped() -> anyhow::Result<()> {
        let dir = temp_dir("folder-corrupt");
        std::fs::create_dir_all(dir.join("a"))?;
        std::fs::create_dir_all(dir.join("b"))?;
        picture(&dir.join("a/good.png"), 12, 9, [10, 20, 30]);
        picture(&dir.join("b/good.png"), 9, 12, [10, 20, 30]);
        std::fs::write(
            dir.join("b/broken.png"),
            b"\x89PNG\r\n\x1a\n this is not a png",
        )?;

        let err = format!("{:#}", load_folder(&dir, 8, 3, false).unwrap_err());
        assert!(err.contains("broken.png"), "{err}");
        let set = load_folder(&dir, 8, 3, true)?;
        assert_eq!(set.labels, Some(vec![0, 1]));

        std::fs::write(dir.join("stray.png"), b"")?;
        let err = format!("{:#}", load_folder(&dir, 8, 3, true).unwrap_err());
        assert!(err.contains("stray.png"), "{err}");
        let err = format!(
            "{:#}",
            load_folder(&dir.join("nope"), 8, 3, true).unwrap_err()
        );
        assert!(err.contains("nope"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}
