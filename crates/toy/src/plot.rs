//! Writing toy samples: a CSV table and a PNG scatter plot, each written atomically.

use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Side of the scatter plot in pixels.
pub const PLOT_SIZE: usize = 512;
/// The plot shows [-PLOT_RANGE, PLOT_RANGE]^2 in model coordinates; points outside are left out.
pub const PLOT_RANGE: f32 = 3.0;

/// Colours for class ids (tab10); unlabelled points (and ids past the real classes) are dark.
const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];
const DARK: [u8; 3] = [25, 25, 50];
const AXIS: [u8; 3] = [220, 220, 220];

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so
/// readers never see a half-written file.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The CSV text for points (`x,y`) or labelled points (`x,y,label`), in model coordinates.
pub fn samples_csv(points: &[[f32; 2]], labels: Option<&[u32]>) -> String {
    let mut out = String::from(if labels.is_some() {
        "x,y,label\n"
    } else {
        "x,y\n"
    });
    for (i, p) in points.iter().enumerate() {
        match labels {
            Some(l) => out.push_str(&format!("{},{},{}\n", p[0], p[1], l[i])),
            None => out.push_str(&format!("{},{}\n", p[0], p[1])),
        }
    }
    out
}

/// A `PLOT_SIZE` x `PLOT_SIZE` RGB scatter plot (row-major, 3 bytes per pixel): white
/// background, light grey axes through the origin, each point a half-transparent 3 x 3 dot
/// coloured by its class (dark when unlabelled). `num_classes` bounds the ids that get a colour.
pub fn scatter_rgb(points: &[[f32; 2]], labels: Option<&[u32]>, num_classes: usize) -> Vec<u8> {
    let n = PLOT_SIZE;
    let mut img = vec![255u8; n * n * 3];
    let to_pixel = |v: f32| ((v + PLOT_RANGE) / (2.0 * PLOT_RANGE) * n as f32).floor();
    let set = |img: &mut [u8], x: usize, y: usize, c: [u8; 3], alpha: f32| {
        let o = 3 * (y * n + x);
        for k in 0..3 {
            img[o + k] = (img[o + k] as f32 * (1.0 - alpha) + c[k] as f32 * alpha).round() as u8;
        }
    };
    let zero = to_pixel(0.0) as usize;
    for i in 0..n {
        set(&mut img, zero, i, AXIS, 1.0);
        set(&mut img, i, zero, AXIS, 1.0);
    }
    for (i, p) in points.iter().enumerate() {
        let colour = match labels {
            Some(l) if (l[i] as usize) < num_classes => PALETTE[l[i] as usize % PALETTE.len()],
            _ => DARK,
        };
        // y grows upwards in the plot, downwards in the image.
        let (px, py) = (to_pixel(p[0]), n as f32 - 1.0 - to_pixel(p[1]));
        for dy in -1..=1 {
            for dx in -1..=1 {
                let (x, y) = (px + dx as f32, py + dy as f32);
                if x >= 0.0 && y >= 0.0 && x < n as f32 && y < n as f32 {
                    set(&mut img, x as usize, y as usize, colour, 0.6);
                }
            }
        }
    }
    img
}

/// Writes `samples.csv` and `samples.png` (see [`samples_csv`], [`scatter_rgb`]) under `dir`,
/// creating it if needed; returns both paths.
pub fn write_points(
    points: &[[f32; 2]],
    labels: Option<&[u32]>,
    num_classes: usize,
    dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let csv_path = dir.join("samples.csv");
    write_atomic(&csv_path, samples_csv(points, labels).as_bytes())?;

    let mut png_bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png_bytes, PLOT_SIZE as u32, PLOT_SIZE as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&scatter_rgb(points, labels, num_classes))?;
        writer.finish()?;
    }
    let png_path = dir.join("samples.png");
    write_atomic(&png_path, &png_bytes)?;
    Ok(vec![csv_path, png_path])
}
