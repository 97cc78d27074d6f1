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
//! - [`tmscore`]: TM-score by a TM-align-style structural alignment.

pub mod angles;
pub mod cli;
pub mod dssp;
pub mod evaluate;
pub mod geometry;
pub mod metrics;
pub mod nerf;
pub mod pdb;
pub mod structure;
pub mod superpose;
pub mod tmscore;

/// A point in space, Å.
pub type Vec3 = [f64; 3];
