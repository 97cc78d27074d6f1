//! The image domain's report sections: the newest sample grid beside real training images in
//! the same layout (one row per class for conditional models), and the grids drawn during
//! training.

use crate::domain::{set_tensor, Image};
use crate::write::{grid_layout, grid_png};
use anyhow::Context;
use candle_core::Device;
use std::path::Path;
use sugarcube_core::domain::Split;
use sugarcube_core::report::{Block, ReportContext, Section};

/// The width a grid is shown at: a whole multiple of its pixels, about `target` CSS pixels.
fn display_width(png: &[u8], target: u32) -> anyhow::Result<u32> {
    let (w, _) = image::ImageReader::new(std::io::Cursor::new(png))
        .with_guessed_format()?
        .into_dimensions()?;
    Ok(w * (target / w.max(1)).max(1))
}

fn png_block(png: Vec<u8>, alt: String, target: u32) -> anyhow::Result<Block> {
    let width = display_width(&png, target)?;
    Ok(Block::Png {
        bytes: png,
        alt,
        width: Some(width),
    })
}

fn read_grid(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The image sections of a run's report.
pub fn sections(ctx: &ReportContext<Image>) -> anyhow::Result<Vec<Section>> {
    let data = &ctx.exp.data;
    let mut s = Section::new("Samples");
    let train = data.load(Split::Train, ctx.exp.seed)?;
    let labels = if data.conditional {
        train
            .labels
            .as_deref()
            .map(|l| (l, train.class_names.len()))
    } else {
        None
    };
    // real images in the grid's layout: the first ten of each class, or the first hundred
    let pick: Vec<usize> = match labels {
        Some((l, k)) => (0..k as u32)
            .flat_map(|c| (0..train.len()).filter(move |&i| l[i] == c).take(10))
            .collect(),
        None => (0..train.len().min(100)).collect(),
    };
    let real = train.subset(&pick)?;
    let real_labels = real.labels.clone();
    let (cells, rows, cols) = grid_layout(
        &set_tensor(&real, &Device::Cpu)?,
        labels
            .and(real_labels.as_deref())
            .map(|l| (l, train.class_names.len())),
    )?;
    let real_grid = png_block(
        grid_png(&cells, rows, cols, 2)?,
        "training images".into(),
        440,
    )?;
    let rows_note = if labels.is_some() {
        format!(
            "; one row per class, top to bottom: {}",
            train.class_names.join(", ")
        )
    } else {
        String::new()
    };
    match ctx.newest_samples("grid.png") {
        Some(dir) => {
            let file = dir.join("grid.png");
            s.push(Block::Row(vec![
                Block::figure(
                    png_block(read_grid(&file)?, "generated samples".into(), 440)?,
                    format!("samples, {}", file.display()),
                ),
                Block::figure(real_grid, format!("training images{rows_note}")),
            ]));
        }
        None => {
            s.push(Block::Text(
                "No samples yet: `sugarcube sample RUN` or `sugarcube eval RUN` draws them.".into(),
            ));
            s.push(Block::figure(
                real_grid,
                format!("training images{rows_note}"),
            ));
        }
    }
    let mut out = vec![s];
    let during = ctx.training_samples();
    if !during.is_empty() {
        // at most six grids, spread evenly over training, always the last
        let n = during.len();
        let shown: Vec<usize> = if n <= 6 {
            (0..n).collect()
        } else {
            let mut v: Vec<usize> = (0..6).map(|i| i * (n - 1) / 5).collect();
            v.dedup();
            v
        };
        let mut row = vec![];
        for i in shown {
            let (step, dir) = &during[i];
            let file = dir.join("grid.png");
            if file.is_file() {
                row.push(Block::figure(
                    png_block(read_grid(&file)?, format!("samples at step {step}"), 200)?,
                    format!("step {step}"),
                ));
            }
        }
        if !row.is_empty() {
            out.push(Section::new("Samples during training").with(Block::Row(row)));
        }
    }
    Ok(out)
}
