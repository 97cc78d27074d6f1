//! The Ramachandran plot that `sample` writes beside its PDB files: two panels, the samples'
//! (phi, psi) density on the left and the training windows' on the right, phi from -180 to
//! 180 degrees left to right and psi from -180 at the bottom to 180 at the top, each cell's
//! colour the log of its density (white: empty, dark blue: the densest cell of either panel),
//! grey lines at phi = 0 and psi = 0.

use anyhow::{ensure, Context};
use std::path::Path;

/// Pixels per histogram cell.
const CELL: usize = 8;
/// White pixels around and between the panels.
const PAD: usize = 12;

/// The PNG bytes for histograms `samples` and `train` (each `bins x bins`, phi major, as
/// [`crate::metrics::ramachandran_histogram`] makes them).
pub fn encode(samples: &[f64], train: &[f64]) -> anyhow::Result<Vec<u8>> {
    let bins = (samples.len() as f64).sqrt().round() as usize;
    ensure!(
        bins >= 1 && bins * bins == samples.len() && train.len() == samples.len(),
        "Ramachandran histograms must be square and of one size ({} and {} cells)",
        samples.len(),
        train.len()
    );
    let side = bins * CELL;
    let (w, h) = (3 * PAD + 2 * side, 2 * PAD + side);
    let mut rgb = vec![255u8; w * h * 3];
    let top = samples.iter().chain(train).cloned().fold(0.0, f64::max);
    // log scale over three decades below the densest cell
    let shade = |v: f64| -> [u8; 3] {
        if v <= 0.0 || top <= 0.0 {
            return [255, 255, 255];
        }
        let t = ((v / top).log10() / 3.0 + 1.0).clamp(0.05, 1.0);
        let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
        [lerp(235.0, 8.0), lerp(242.0, 48.0), lerp(250.0, 107.0)]
    };
    for (panel, hist) in [samples, train].iter().enumerate() {
        let x0 = PAD + panel * (side + PAD);
        for y in 0..side {
            for x in 0..side {
                let (phi, psi) = (x / CELL, bins - 1 - y / CELL);
                let mut c = shade(hist[phi * bins + psi]);
                let frame = x == 0 || y == 0 || x == side - 1 || y == side - 1;
                if frame {
                    c = [90, 90, 90];
                } else if (x == side / 2 || y == side / 2) && c == [255, 255, 255] {
                    c = [200, 200, 200];
                }
                let p = ((PAD + y) * w + x0 + x) * 3;
                rgb[p..p + 3].copy_from_slice(&c);
            }
        }
    }
    let mut out = vec![];
    {
        let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&rgb)?;
    }
    Ok(out)
}

/// Writes [`encode`]'s image to `path` through a temporary file and a rename.
pub fn write(path: &Path, samples: &[f64], train: &[f64]) -> anyhow::Result<()> {
    let bytes =
        encode(samples, train).with_context(|| format!("cannot write {}", path.display()))?;
    sugarcube_core::checkpoint::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_decode_with_the_densest_cell_darkest() {
        let mut s = vec![0.0; 36 * 36];
        s[5 * 36 + 30] = 0.75;
        s[6 * 36 + 30] = 0.25;
        let bytes = encode(&s, &s).unwrap();
        let img = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut r = img.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!(
            (info.width as usize, info.height as usize),
            (3 * PAD + 2 * 288, 2 * PAD + 288)
        );
        let px = |x: usize, y: usize| {
            let p = (y * info.width as usize + x) * 3;
            [buf[p], buf[p + 1], buf[p + 2]]
        };
        // phi bin 5, psi bin 30: x = 5 * 8 + 4, y from the top = (35 - 30) * 8 + 4
        let dense = px(PAD + 44, PAD + 44);
        let less = px(PAD + 52, PAD + 44);
        assert_eq!(dense, [8, 48, 107]);
        assert!(less[0] > dense[0] && less != [255, 255, 255]);
        assert!(encode(&s, &s[..10]).is_err());
    }
}
