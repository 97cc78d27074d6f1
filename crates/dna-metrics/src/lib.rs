//! sugarcube-dna-metrics: evaluation tools for generated DNA (a temporary crate; its modules
//! move into `sugarcube-dna` later).
//!
//! Sequences are plain byte slices of upper-case `A`, `C`, `G`, `T`. Functions that need an
//! encoding report any other byte as an error; scanners skip windows that contain one.
//!
//! - [`motif`]: JASPAR count matrices (the bundled marker set in `data/markers.jaspar`, from
//!   JASPAR 2024), log-odds PWMs with FIMO's pseudocount, exact p-values by dynamic programming
//!   over integer-scaled scores (MEME's method), two-strand scanning and per-sequence hit counts.
//! - [`kmer`]: k-mer count vectors and the Jensen-Shannon distance between two sequence sets.
//! - [`metrics`]: GC-content distance, DNA-Diffusion's motif-composition KL divergence and its
//!   class x class matrix, memorization (nearest training sequence by Hamming identity,
//!   bit-packed), uniqueness.
//! - [`shuffle`]: a seeded splitmix64 generator and the dinucleotide-preserving shuffle.
//! - [`benchmark`]: the planted-motif benchmark with known ground truth (four cell types, their
//!   marker motifs, one held-out pair of cell types).

pub mod benchmark;
pub mod kmer;
pub mod metrics;
pub mod motif;
pub mod shuffle;
