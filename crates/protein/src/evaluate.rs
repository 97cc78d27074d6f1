//! Structure-level evaluation of generated backbones against real ones, each figure beside its
//! floor (the same figure for held-out real chains against the training chains):
//!
//! - `rama_kl` (`_floor`): KL divergence of the (phi, psi) histogram (36 x 36 bins of 10
//!   degrees, a pseudocount of 0.001 of a count per bin) from the training chains';
//! - `clash_rate` (`_floor`): the fraction of structures with at least one backbone clash;
//! - `ca_ca_valid` (`_floor`): the fraction of CA-CA distances within 3.6 to 4.0 Å (trans) or
//!   2.7 to 3.1 Å (cis);
//! - `helix_fraction`, `strand_fraction` (`_floor`), beside `train_helix_fraction` and
//!   `train_strand_fraction`: DSSP-rule secondary structure per residue;
//! - `rg_ratio`: the mean absolute deviation of log Rg from the training chains' log Rg - log L
//!   line, over the same for held-out chains;
//! - `max_tm_to_train_mean` (`_floor`): the mean over structures of the highest TM-score
//!   (normalised by the structure's length) to any training chain, aligned in full against
//!   the [`TM_CANDIDATES`] training chains that score best by gapless threading ([`max_tm`]).

use crate::dssp::{secondary_structure, Ss};
use crate::metrics::{
    ca_ca_distances, clashes, kl_divergence, phi_psi, radius_of_gyration, ramachandran_histogram,
};
use crate::structure::Backbone;
use crate::tmscore::{threading_score, tm_score};

/// Bins per axis of the Ramachandran histogram.
pub const RAMA_BINS: usize = 36;

/// The normalised (phi, psi) histogram of all residues of `chains`, [`RAMA_BINS`] per axis.
pub fn rama(chains: &[Backbone]) -> Vec<f64> {
    let pairs: Vec<(f64, f64)> = chains.iter().flat_map(phi_psi).collect();
    ramachandran_histogram(&pairs, RAMA_BINS)
}

fn clash_rate(chains: &[Backbone]) -> f64 {
    chains.iter().filter(|c| !clashes(c).is_empty()).count() as f64 / chains.len().max(1) as f64
}

fn ca_ca_valid(chains: &[Backbone]) -> f64 {
    let d: Vec<f64> = chains.iter().flat_map(ca_ca_distances).collect();
    d.iter()
        .filter(|&&x| (3.6..=4.0).contains(&x) || (2.7..=3.1).contains(&x))
        .count() as f64
        / d.len().max(1) as f64
}

fn ss_fractions(chains: &[Backbone]) -> (f64, f64) {
    let ss: Vec<Ss> = chains
        .iter()
        .flat_map(|c| secondary_structure(c, None))
        .collect();
    let n = ss.len().max(1) as f64;
    (
        ss.iter().filter(|s| **s == Ss::Helix).count() as f64 / n,
        ss.iter().filter(|s| **s == Ss::Strand).count() as f64 / n,
    )
}

/// The least-squares line of log Rg against log L.
fn rg_fit(chains: &[Backbone]) -> (f64, f64) {
    let pts: Vec<(f64, f64)> = chains
        .iter()
        .filter(|c| c.len() >= 3)
        .map(|c| ((c.len() as f64).ln(), radius_of_gyration(c).max(1e-6).ln()))
        .collect();
    let n = pts.len().max(1) as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    // a single length gives no slope: the textbook 0.38 of compact globules
    let b = if sxx > 1e-9 { sxy / sxx } else { 0.38 };
    (my - b * mx, b)
}

fn rg_deviation(chains: &[Backbone], fit: (f64, f64)) -> f64 {
    let d: Vec<f64> = chains
        .iter()
        .filter(|c| c.len() >= 3)
        .map(|c| {
            (radius_of_gyration(c).max(1e-6).ln() - (fit.0 + fit.1 * (c.len() as f64).ln())).abs()
        })
        .collect();
    d.iter().sum::<f64>() / d.len().max(1) as f64
}

/// Training chains aligned in full per structure for its highest TM-score: those that score
/// best by gapless threading.
pub const TM_CANDIDATES: usize = 10;

/// The highest TM-score of `chain` (normalised by its length) to any of `train`: a full
/// TM-align-style alignment against the [`TM_CANDIDATES`] training chains with the best
/// gapless threading (every chain when there are no more).
pub fn max_tm(chain: &Backbone, train: &[Backbone]) -> f64 {
    let mut quick: Vec<(f64, usize)> = train
        .iter()
        .enumerate()
        .map(|(k, t)| (threading_score(chain, t), k))
        .collect();
    quick.sort_by(|a, b| b.0.total_cmp(&a.0));
    quick
        .iter()
        .take(TM_CANDIDATES)
        .map(|&(_, k)| tm_score(chain, &train[k]).0)
        .fold(0.0, f64::max)
}

fn max_tm_mean(chains: &[Backbone], train: &[Backbone]) -> f64 {
    use rayon::prelude::*;
    let best: Vec<f64> = chains.par_iter().map(|c| max_tm(c, train)).collect();
    best.iter().sum::<f64>() / best.len().max(1) as f64
}

/// The figures of `generated` against `train`, with floors from `held` (see the module docs).
pub fn evaluate(
    generated: &[Backbone],
    train: &[Backbone],
    held: &[Backbone],
) -> anyhow::Result<Vec<(String, f64)>> {
    anyhow::ensure!(
        !generated.is_empty() && !train.is_empty() && !held.is_empty(),
        "evaluation needs generated, training and held-out chains ({}, {}, {})",
        generated.len(),
        train.len(),
        held.len()
    );
    let train_rama = rama(train);
    let pseudo = 1e-3 / train.iter().map(|c| c.len()).sum::<usize>().max(1) as f64;
    let mut m: Vec<(String, f64)> = vec![];
    let pair = |m: &mut Vec<(String, f64)>, name: &str, g: f64, h: f64| {
        m.push((name.to_string(), g));
        m.push((format!("{name}_floor"), h));
    };
    pair(
        &mut m,
        "rama_kl",
        kl_divergence(&rama(generated), &train_rama, pseudo),
        kl_divergence(&rama(held), &train_rama, pseudo),
    );
    pair(
        &mut m,
        "clash_rate",
        clash_rate(generated),
        clash_rate(held),
    );
    pair(
        &mut m,
        "ca_ca_valid",
        ca_ca_valid(generated),
        ca_ca_valid(held),
    );
    let ((gh, gs), (hh, hs), (th, ts)) = (
        ss_fractions(generated),
        ss_fractions(held),
        ss_fractions(train),
    );
    pair(&mut m, "helix_fraction", gh, hh);
    pair(&mut m, "strand_fraction", gs, hs);
    m.push(("train_helix_fraction".into(), th));
    m.push(("train_strand_fraction".into(), ts));
    let fit = rg_fit(train);
    m.push((
        "rg_ratio".into(),
        rg_deviation(generated, fit) / rg_deviation(held, fit).max(1e-9),
    ));
    pair(
        &mut m,
        "max_tm_to_train_mean",
        max_tm_mean(generated, train),
        max_tm_mean(held, train),
    );
    m.push(("n".into(), generated.len() as f64));
    m.push(("n_floor".into(), held.len() as f64));
    Ok(m)
}
