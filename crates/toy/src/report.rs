//! The toy domain's report sections: the samples as a scatter plot over the training points,
//! and for token data the bigram frequencies beside the chain's exact ones.

use crate::{markov, points_of, Toy};
use anyhow::Context;
use sugarcube_core::domain::{Domain, Split};
use sugarcube_core::report::{plot, Block, ReportContext, Section, Series};

/// How many points each scatter shows at most.
const POINTS: usize = 2000;

/// The samples file of a run: `x,y` rows (with a label column for conditional data).
fn read_samples_csv(path: &std::path::Path) -> anyhow::Result<Vec<(f64, f64)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = vec![];
    for (i, line) in text.lines().enumerate().skip(1) {
        let mut f = line.split(',');
        let (Some(x), Some(y)) = (f.next(), f.next()) else {
            anyhow::bail!("{} line {}: expected x,y", path.display(), i + 1);
        };
        let parse = |v: &str| {
            v.trim().parse::<f64>().with_context(|| {
                format!("{} line {}: `{v}` is not a number", path.display(), i + 1)
            })
        };
        out.push((parse(x)?, parse(y)?));
        if out.len() == POINTS {
            break;
        }
    }
    Ok(out)
}

fn bigram_matrix(v: &serde_json::Value) -> Option<Vec<Vec<f64>>> {
    v.as_array()?
        .iter()
        .map(|r| r.as_array()?.iter().map(|x| x.as_f64()).collect())
        .collect()
}

/// The toy sections of a run's report.
pub fn sections(ctx: &ReportContext<Toy>) -> anyhow::Result<Vec<Section>> {
    let mut s = Section::new("Samples");
    let data = &ctx.exp.data;
    if data.dataset.is_tokens() {
        let letters: Vec<String> = markov::LETTERS.iter().map(|c| c.to_string()).collect();
        let d = &ctx.run.details;
        match (
            d.get("bigrams_generated").and_then(bigram_matrix),
            d.get("bigrams_true").and_then(bigram_matrix),
        ) {
            (Some(g), Some(t)) => s.push(Block::Row(vec![
                Block::Svg(plot::heatmap(
                    "Bigram frequencies of the samples",
                    "token",
                    "next token",
                    &letters,
                    &letters,
                    &g,
                )?),
                Block::Svg(plot::heatmap(
                    "The chain's exact bigram distribution",
                    "token",
                    "next token",
                    &letters,
                    &letters,
                    &t,
                )?),
            ])),
            _ => s.push(Block::Text(
                "No bigram tables yet: `sugarcube eval` computes them.".into(),
            )),
        };
        if let Some(dir) = ctx.newest_samples("samples.txt") {
            let text = std::fs::read_to_string(dir.join("samples.txt")).unwrap_or_default();
            let head: String = text.lines().take(12).map(|l| format!("{l}\n")).collect();
            s.push(Block::figure(
                Block::Pre(head),
                format!("the first samples, {}", dir.join("samples.txt").display()),
            ));
        }
        return Ok(vec![s]);
    }
    let train = Toy::dataset(data, Split::Train, ctx.exp.seed)?;
    let idx: Vec<usize> = (0..train.len().min(POINTS)).collect();
    let batch = train.batch(&idx, &candle_core::Device::Cpu)?;
    let real: Vec<(f64, f64)> = points_of(&batch.x0)?
        .iter()
        .map(|p| (p[0] as f64, p[1] as f64))
        .collect();
    match ctx.newest_samples("samples.csv") {
        Some(dir) => {
            let file = dir.join("samples.csv");
            let gen = read_samples_csv(&file)?;
            s.push(Block::figure(
                Block::Svg(plot::scatter(
                    "Samples over training data",
                    "",
                    "",
                    &[
                        Series::new("training data", real),
                        Series::new("samples", gen.clone()),
                    ],
                    true,
                )?),
                format!(
                    "{} samples of {} over as many training points ({POINTS} at most)",
                    gen.len(),
                    file.display()
                ),
            ));
        }
        None => {
            s.push(Block::Text(
                "No samples yet: `sugarcube sample RUN` or `sugarcube eval RUN` draws them.".into(),
            ));
        }
    }
    Ok(vec![s])
}
