//! The UCI optical handwritten digits as scikit-learn ships them (`digits.csv.gz`): one digit
//! per line, 64 pixel values in 0..16 (an 8x8 image, row by row) followed by its label.

use crate::{read_maybe_gz, ImageSet};
use anyhow::{bail, Context};
use std::path::Path;

/// Pixels per digit.
const PIXELS: usize = 64;
/// The largest pixel value (a count of "on" pixels in a 4x4 block).
const MAX_VALUE: f32 = 16.0;

/// Loads the 8x8 digits CSV (gzipped or not) as grayscale 8x8 images in [-1, 1]
/// (`v / 8 - 1`), labelled 0..9 with class names "0".."9". Blank lines are ignored; any
/// other malformed line is an error naming the file and line.
pub fn load_digits_csv(path: &Path) -> anyhow::Result<ImageSet> {
    let bytes = read_maybe_gz(path)?;
    let text = std::str::from_utf8(&bytes)
        .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
    let mut images = vec![];
    let mut labels = vec![];
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), i + 1);
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != PIXELS + 1 {
            bail!(
                "{}: {} values, expected {} pixels and a label",
                at(),
                fields.len(),
                PIXELS + 1
            );
        }
        for (j, field) in fields[..PIXELS].iter().enumerate() {
            let v: f32 = field.parse().map_err(|_| {
                anyhow::anyhow!("{}: pixel {}: {field:?} is not a number", at(), j + 1)
            })?;
            if !(0.0..=MAX_VALUE).contains(&v) {
                bail!("{}: pixel {}: {v} is outside 0..16", at(), j + 1);
            }
            images.push(v / (MAX_VALUE / 2.0) - 1.0);
        }
        let label = fields[PIXELS];
        // labels may be written as "3" or "3.0"
        let y: f64 = label
            .parse()
            .map_err(|_| anyhow::anyhow!("{}: label {label:?} is not a number", at()))?;
        if !(0.0..=9.0).contains(&y) || y.fract() != 0.0 {
            bail!("{}: label {label} is not a digit 0..9", at());
        }
        labels.push(y as u32);
    }
    if labels.is_empty() {
        bail!("{} holds no digits", path.display());
    }
    let class_names = (0..10).map(|c| c.to_string()).collect();
    ImageSet::new(images, Some(labels), class_names, 1, 8, 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{datasets_dir, temp_dir};

    #[test]
    fn committed_digits_load() -> anyhow::Result<()> {
        let set = load_digits_csv(&datasets_dir().join("digits/digits.csv.gz"))?;
        assert_eq!(set.len(), 1797);
        assert_eq!(set.item_shape(), vec![1, 8, 8]);
        assert_eq!(set.num_classes(), Some(10));
        let counts = set.class_counts();
        assert!(
            counts.iter().all(|&c| (170..=190).contains(&c)),
            "{counts:?}"
        );
        assert!(set.images.iter().all(|&x| (-1.0..=1.0).contains(&x)));
        // the first digit is a 0, its first row is 0,0,5,13,9,1,0,0
        assert_eq!(set.labels.as_ref().unwrap()[0], 0);
        assert_eq!(
            set.image(0)[..4],
            [-1.0, -1.0, 5.0 / 8.0 - 1.0, 13.0 / 8.0 - 1.0]
        );
        Ok(())
    }

    #[test]
    fn bad_rows_name_file_and_line() -> anyhow::Result<()> {
        let dir = temp_dir("digits-bad");
        let good = format!("{}7", "1,".repeat(64));
        let cases = [
            (
                "short.csv",
                format!("{good}\n\n{}", "1,".repeat(10)),
                "line 3",
            ),
            (
                "pixel.csv",
                format!("{good}\n{}7", "x,".repeat(64)),
                "line 2: pixel 1",
            ),
            (
                "range.csv",
                format!("{}7", "17,".repeat(64)),
                "line 1: pixel 1",
            ),
            (
                "label.csv",
                format!("{good}\n{}12", "1,".repeat(64)),
                "line 2: label 12",
            ),
        ];
        for (name, text, expected) in cases {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            let err = format!("{:#}", load_digits_csv(&path).unwrap_err());
            assert!(err.contains(name) && err.contains(expected), "{err}");
        }
        let ok = dir.join("ok.csv");
        std::fs::write(&ok, format!("{good}\n{good}\n"))?;
        assert_eq!(load_digits_csv(&ok)?.labels, Some(vec![7, 7]));
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}
