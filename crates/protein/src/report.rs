//! The protein domain's report sections: Ramachandran plots of the samples beside the training
//! and held-out windows (and the iid baseline), the CA-CA distance and secondary-structure
//! figures, and the clash rates, from the run's eval.json and eval-details.json; before any
//! evaluation, the newest samples' ramachandran.png.

use crate::Protein;
use sugarcube_core::report::{plot, Block, ReportContext, Section};

fn numbers(v: Option<&serde_json::Value>) -> Option<Vec<f64>> {
    v?.as_array()?.iter().map(|x| x.as_f64()).collect()
}

/// The report's protein sections.
pub fn sections(ctx: &ReportContext<Protein>) -> anyhow::Result<Vec<Section>> {
    let run = ctx.run;
    let mut out = vec![];
    let rama = run
        .details
        .get("ramachandran")
        .and_then(|r| r.get("density"));
    if let Some(rama) = rama {
        let mut row = vec![];
        for (key, title) in [
            ("samples", "samples"),
            ("train", "training windows"),
            ("held", "held-out windows"),
            ("iid", "iid angle baseline"),
        ] {
            if let Some(v) = numbers(rama.get(key)) {
                row.push(Block::Svg(plot::density(
                    &format!("Ramachandran: {title}"),
                    "phi (degrees)",
                    "psi (degrees)",
                    (-180.0, 180.0),
                    &v,
                )?));
            }
        }
        let kl = |k: &str| run.metric(k).map_or("-".into(), |v| format!("{v:.3}"));
        out.push(
            Section::new("Ramachandran plots")
                .with(Block::Text(format!(
                    "(phi, psi) density in 10-degree cells, log colour scale. KL to training: samples {}, held-out floor {}, iid baseline {}.",
                    kl("rama_kl"),
                    kl("rama_kl_floor"),
                    kl("iid_rama_kl")
                )))
                .with(Block::Row(row)),
        );
    } else if let Some(dir) = ctx.newest_samples("ramachandran.png") {
        let bytes = std::fs::read(dir.join("ramachandran.png"))?;
        out.push(Section::new("Ramachandran plot").with(Block::figure(
            Block::Png {
                bytes,
                alt: "Ramachandran plot of samples and training".into(),
                width: None,
            },
            format!(
                "{}: samples (left) and training windows (right); phi -180..180 left to right, psi -180..180 bottom to top",
                dir.file_name().unwrap_or_default().to_string_lossy()
            ),
        )));
    }
    let mut figures = vec![];
    if let Some(ca) = run.details.get("ca_ca") {
        let range = numbers(ca.get("range")).unwrap_or_else(|| vec![2.5, 4.5]);
        if let (Some(frac), [lo, hi]) = (ca.get("fraction"), range.as_slice()) {
            let mut series = vec![];
            for key in ["samples", "held", "iid"] {
                if let Some(v) = numbers(frac.get(key)) {
                    let w = (hi - lo) / v.len().max(1) as f64;
                    series.push(plot::Series::new(
                        key,
                        v.iter()
                            .enumerate()
                            .map(|(i, f)| (lo + (i as f64 + 0.5) * w, *f))
                            .collect(),
                    ));
                }
            }
            figures.push(Block::Svg(plot::line_chart(
                "CA-CA distances",
                "Å",
                "fraction of pairs",
                &series,
                false,
            )?));
        }
    }
    let m = |k: &str| run.metric(k);
    if let (Some(h), Some(s)) = (m("helix_fraction"), m("strand_fraction")) {
        let mut groups = vec![("samples", vec![h, s])];
        if let (Some(a), Some(b)) = (m("iid_helix_fraction"), m("iid_strand_fraction")) {
            groups.push(("iid baseline", vec![a, b]));
        }
        if let (Some(a), Some(b)) = (m("train_helix_fraction"), m("train_strand_fraction")) {
            groups.push(("training", vec![a, b]));
        }
        if let (Some(a), Some(b)) = (m("helix_fraction_floor"), m("strand_fraction_floor")) {
            groups.push(("held-out", vec![a, b]));
        }
        figures.push(Block::Svg(plot::bars(
            "Secondary structure (DSSP rules)",
            "fraction of residues",
            &["helix".to_string(), "strand".to_string()],
            &groups,
        )?));
    }
    if let Some(c) = m("clash_rate") {
        let mut groups = vec![("samples", vec![c])];
        if let Some(v) = m("iid_clash_rate") {
            groups.push(("iid baseline", vec![v]));
        }
        if let Some(v) = m("clash_rate_floor") {
            groups.push(("held-out", vec![v]));
        }
        figures.push(Block::Svg(plot::bars(
            "Structures with a backbone clash",
            "fraction of structures",
            &["clash rate".to_string()],
            &groups,
        )?));
    }
    if !figures.is_empty() {
        out.push(Section::new("Structure").with(Block::Row(figures)));
    }
    Ok(out)
}
