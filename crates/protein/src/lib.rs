//! sugarcube-protein: protein backbones as FoldingDiff sees them.
//!
//! - [`structure`]: reading PDB and mmCIF files (gzipped or not) into backbone chains of N, CA
//!   and C atoms (first model, first alternate location, standard residues; chain breaks
//!   split chains; missing atoms reported);
//! - [`angles`]: FoldingDiff's six internal angles per residue;
//! - [`nerf`]: coordinates back from angles (NeRF), with FoldingDiff's or Engh-Huber bond
//!   lengths;
//! - [`superpose`]: Kabsch superposition and RMSD (nalgebra's SVD);
//! - [`pdb`]: writing backbones as PDB files (O placed by ideal geometry);
//! - [`dssp`]: three-state secondary structure by DSSP's H-bond rules;
//! - [`metrics`]: CA-CA spacing, clashes, radius of gyration, Ramachandran histograms;
//! - [`tmscore`]: TM-score by a TM-align-style structural alignment;
//! - [`dataset`]: folders of structure files as training chains: copies dropped, long chains
//!   windowed, a seeded held-out split, circular-mean centring;
//! - [`domain`]: the `protein` domain (FoldingDiff's angle diffusion) with its report
//!   ([`report`]) and Ramachandran plot ([`rama_png`]).

pub mod angles;
pub mod cli;
pub mod dataset;
pub mod domain;
pub mod dssp;
pub mod evaluate;
pub mod geometry;
pub mod metrics;
pub mod nerf;
pub mod pdb;
pub mod rama_png;
pub mod report;
pub mod structure;
pub mod superpose;
pub mod tmscore;

/// A point in space, Å.
pub type Vec3 = [f64; 3];

pub use domain::Protein;
