//! Writing images in [-1, 1] as PNG files: one image, or a grid of many.

use anyhow::{bail, ensure, Context};
use candle_core::{DType, Device, Tensor};
use image::{ExtendedColorType, ImageEncoder};
use std::path::Path;
use sugarcube_core::checkpoint::write_atomic;

/// Maps a value in [-1, 1] to a pixel byte (`(x + 1) * 127.5`, rounded; values outside are
/// clamped, NaN gives 0).
pub fn to_u8(x: f32) -> u8 {
    ((x + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
}

/// The tensor's values as f32 on the CPU, with its dims.
fn host_values(t: &Tensor) -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
    let values = t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok((t.dims().to_vec(), values))
}

/// Encodes interleaved `H x W x C` bytes (C = 1 or 3) as a PNG file's bytes.
pub fn encode_png(
    bytes: &[u8],
    channels: usize,
    height: usize,
    width: usize,
) -> anyhow::Result<Vec<u8>> {
    let colour = match channels {
        1 => ExtendedColorType::L8,
        3 => ExtendedColorType::Rgb8,
        c => bail!("PNG images need 1 or 3 channels, got {c}"),
    };
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png).write_image(
        bytes,
        width as u32,
        height as u32,
        colour,
    )?;
    Ok(png)
}

/// Encodes interleaved `H x W x C` bytes (C = 1 or 3) as PNG and writes them atomically.
fn save_png(
    path: &Path,
    bytes: &[u8],
    channels: usize,
    height: usize,
    width: usize,
) -> anyhow::Result<()> {
    let png = encode_png(bytes, channels, height, width)
        .with_context(|| format!("cannot write {}", path.display()))?;
    write_atomic(path, &png)
}

/// Writes one image (`[C, H, W]` tensor, C = 1 grayscale or 3 RGB, values in [-1, 1] and
/// clamped) as a PNG file, through a temporary file and a rename.
pub fn write_png(path: &Path, image: &Tensor) -> anyhow::Result<()> {
    let (dims, values) = host_values(image)?;
    let [c, h, w] = dims[..] else {
        bail!(
            "cannot write {}: expected a [C, H, W] image, got shape {dims:?}",
            path.display()
        );
    };
    let mut bytes = vec![0u8; c * h * w];
    for (i, &x) in values.iter().enumerate() {
        let (ch, pixel) = (i / (h * w), i % (h * w));
        bytes[pixel * c + ch] = to_u8(x);
    }
    save_png(path, &bytes, c, h, w)
}

/// Writes images (`[N, C, H, W]` tensor, C = 1 or 3, values in [-1, 1] and clamped) as one PNG
/// grid of `rows x cols` cells, filled row by row, with `pad` white pixels between cells and
/// around the edge. Cells past the last image are left white; more than `rows * cols` images
/// is an error. Written through a temporary file and a rename.
pub fn write_grid(
    path: &Path,
    images: &Tensor,
    rows: usize,
    cols: usize,
    pad: usize,
) -> anyhow::Result<()> {
    let png = grid_png(images, rows, cols, pad)
        .with_context(|| format!("cannot write {}", path.display()))?;
    write_atomic(path, &png)
}

/// The PNG bytes of [`write_grid`]'s grid.
pub fn grid_png(images: &Tensor, rows: usize, cols: usize, pad: usize) -> anyhow::Result<Vec<u8>> {
    let (dims, values) = host_values(images)?;
    let [n, c, h, w] = dims[..] else {
        bail!("expected [N, C, H, W] images, got shape {dims:?}");
    };
    ensure!(
        rows > 0 && cols > 0,
        "a grid needs at least one row and column"
    );
    ensure!(
        n <= rows * cols,
        "{n} images do not fit a {rows}x{cols} grid"
    );
    let gh = rows * h + (rows + 1) * pad;
    let gw = cols * w + (cols + 1) * pad;
    let mut bytes = vec![255u8; gh * gw * c];
    for k in 0..n {
        let (top, left) = (pad + (k / cols) * (h + pad), pad + (k % cols) * (w + pad));
        for ch in 0..c {
            for r in 0..h {
                for col in 0..w {
                    let x = values[((k * c + ch) * h + r) * w + col];
                    bytes[((top + r) * gw + left + col) * c + ch] = to_u8(x);
                }
            }
        }
    }
    encode_png(&bytes, c, gh, gw)
}

/// The cells of a sample grid and its rows and columns: with labels, one row per class (up to
/// 10 images each, white cells where a class has fewer), else a square of up to 100 images.
pub fn grid_layout(
    images: &Tensor,
    labels: Option<(&[u32], usize)>,
) -> anyhow::Result<(Tensor, usize, usize)> {
    let images = images.to_device(&Device::Cpu)?;
    let n = images.dim(0)?;
    ensure!(n > 0, "a grid needs at least one image");
    match labels {
        Some((l, k)) => {
            ensure!(l.len() >= n, "{} labels for {n} images", l.len());
            let cols = 10.min(n.div_ceil(k).max(1));
            let mut rows: Vec<Tensor> = vec![];
            for class in 0..k as u32 {
                let idx: Vec<u32> = (0..n as u32)
                    .filter(|&i| l[i as usize] == class)
                    .take(cols)
                    .collect();
                let mut row = vec![];
                if !idx.is_empty() {
                    row.push(images.index_select(&Tensor::new(idx.as_slice(), &Device::Cpu)?, 0)?);
                }
                let missing = cols - idx.len();
                if missing > 0 {
                    let mut shape = vec![missing];
                    shape.extend(&images.dims()[1..]);
                    // white
                    row.push(Tensor::ones(shape, images.dtype(), &Device::Cpu)?);
                }
                rows.push(Tensor::cat(&row, 0)?);
            }
            Ok((Tensor::cat(&rows, 0)?, k, cols))
        }
        None => {
            let shown = n.min(100);
            let cols = (shown as f64).sqrt().ceil() as usize;
            Ok((images.narrow(0, 0, shown)?, shown.div_ceil(cols), cols))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::temp_dir;

    #[test]
    fn to_u8_maps_and_clamps() {
        assert_eq!(
            [
                to_u8(-1.0),
                to_u8(0.0),
                to_u8(1.0),
                to_u8(-3.0),
                to_u8(7.0),
                to_u8(f32::NAN)
            ],
            [0, 128, 255, 0, 255, 0]
        );
        for v in 0..=255u8 {
            assert_eq!(to_u8(crate::from_u8(v)), v);
        }
    }

    #[test]
    fn png_and_grid_have_the_right_size_and_pixels() -> anyhow::Result<()> {
        let dir = temp_dir("write");
        let dev = Device::Cpu;
        // 5 RGB 4x6 images; image k has red = -1 + k / 2
        let vals: Vec<f32> = (0..5)
            .flat_map(|k| {
                let mut v = vec![-1.0 + k as f32 / 2.0; 24];
                v.extend([-1.0; 48]);
                v
            })
            .collect();
        let imgs = Tensor::from_vec(vals, (5, 3, 4, 6), &dev)?;

        let grid = dir.join("grid.png");
        write_grid(&grid, &imgs, 2, 3, 1)?;
        let g = image::open(&grid)?.to_rgb8();
        assert_eq!(g.dimensions(), (3 * 6 + 4, 2 * 4 + 3));
        assert_eq!(g.get_pixel(0, 0).0, [255, 255, 255]); // padding
        assert_eq!(g.get_pixel(1, 1).0, [0, 0, 0]); // image 0
        assert_eq!(g.get_pixel(1 + 7, 1).0, [64, 0, 0]); // image 1
        assert_eq!(g.get_pixel(1 + 7, 1 + 5).0, [255, 0, 0]); // image 4
        assert_eq!(g.get_pixel(1 + 14, 1 + 5).0, [255, 255, 255]); // empty cell
        assert!(!exists_tmp(&dir));

        let one = dir.join("one.png");
        write_png(&one, &imgs.get(2)?)?;
        let p = image::open(&one)?.to_rgb8();
        assert_eq!((p.dimensions(), p.get_pixel(5, 3).0), ((6, 4), [128, 0, 0]));

        let gray = Tensor::zeros((2, 1, 3, 3), DType::F32, &dev)?;
        write_grid(&dir.join("gray.png"), &gray, 1, 2, 0)?;
        let g = image::open(dir.join("gray.png"))?;
        assert_eq!(
            (g.color(), g.width(), g.height()),
            (image::ColorType::L8, 6, 3)
        );

        assert!(write_grid(&dir.join("x.png"), &imgs, 2, 2, 1).is_err());
        assert!(write_png(&dir.join("x.png"), &imgs).is_err());
        let two = Tensor::zeros((2, 3, 3), DType::F32, &dev)?;
        assert!(
            format!("{:#}", write_png(&dir.join("x.png"), &two).unwrap_err()).contains("x.png")
        );
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }

    fn exists_tmp(dir: &Path) -> bool {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "tmp"))
    }
}
