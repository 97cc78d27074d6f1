//! sugarcube-dna: DNA sequence data, its evaluation, and the `dna` domain of sugarcube.
//!
//! - [`SeqRecord`]: an id, upper-case bases `A C G T` and zero or more labels.
//! - Readers: [`read_fasta`] (FASTA, multi-line, gzipped or not; labels from the headers'
//!   `labels=L1+L2` word or one label for the whole file) and [`read_table`] (CSV / TSV with
//!   a sequence column and a label column or 0/1 indicator columns; Parquet with the
//!   `parquet` feature). Characters other than A, C, G, T are an error by default, or drop
//!   the record, or (N and IUPAC codes) are replaced by seeded random bases
//!   ([`InvalidPolicy`]). Every error names the file and the line (row) and column.
//! - [`write_fasta`]: labels back in the headers, 80 bases a line, atomically.
//! - [`fit_length`]: one length for all records ([`LengthPolicy`]: error, centre crop, pad
//!   at the end with a padding mask).
//! - [`encode`]: one-hot `4 x L` in {-1, 1} (A, C, G, T), tokens 0..4, decodings and
//!   reverse complements.
//! - [`motif`]: JASPAR count matrices (the bundled marker set in `data/markers.jaspar`, from
//!   JASPAR 2024), log-odds PWMs with FIMO's pseudocount, exact p-values by dynamic programming
//!   over integer-scaled scores (MEME's method), two-strand scanning and per-sequence hit counts.
//! - [`kmer`]: k-mer count vectors and the Jensen-Shannon distance between two sequence sets.
//! - [`metrics`]: GC-content distance, DNA-Diffusion's motif-composition KL divergence and its
//!   class x class matrix, memorization (nearest training sequence by Hamming identity,
//!   bit-packed), uniqueness.
//! - [`shuffle`]: a seeded splitmix64 generator and the dinucleotide-preserving shuffle.
//! - [`domain`]: the `dna` domain ([`Dna`]): one-hot sequences for the Gaussian process, a
//!   cell-type condition (categorical or multi-label), a 1-D UNet, FASTA samples, evaluation.
//! - [`benchmark`]: the planted-motif benchmark with known ground truth (four cell types, their
//!   marker motifs, one held-out pair of cell types).
//!
//! The `parquet` feature (polars 0.55, Parquet reading only) is off by default: polars
//! alone takes about 20 CPU-minutes to build (35 minutes of wall time on a busy 2-core
//! machine, some 10 on an idle one), against seconds for the rest of this crate. Turn it on
//! with `--features sugarcube-dna/parquet`; without it [`read_table`] refuses `.parquet`
//! files with an error saying so.

#![warn(missing_docs)]

pub mod benchmark;
pub mod domain;
pub mod encode;
pub mod evaluate;
pub mod fasta;
#[cfg(test)]
mod fuzz;
pub mod kmer;
pub mod metrics;
pub mod model;
pub mod motif;
#[cfg(feature = "parquet")]
pub mod parquet;
pub mod report;
pub mod sequence;
pub mod shuffle;
pub mod table;

pub use domain::{Dna, DnaData, DnaEval, Representation};
pub use encode::{
    decode_one_hot, decode_tokens, one_hot, one_hot_batch, reverse_complement,
    reverse_complement_one_hot, reverse_complement_tokens, tokens, ALPHABET,
};
pub use fasta::{format_fasta, parse_fasta, read_fasta, write_fasta, FastaOptions, LabelSource};
#[cfg(feature = "parquet")]
pub use parquet::{parse_parquet, read_parquet};
pub use sequence::{
    collect_labels, complement, fit_length, InvalidPolicy, LengthPolicy, Loaded, SeqRecord, PAD,
};
pub use table::{parse_delimited, read_table, TableLabels, TableOptions};

pub use sugarcube_core::files::{read_maybe_gz, write_atomic};

/// Helpers shared by the unit tests.
#[cfg(test)]
pub(crate) mod testutil {
    use std::path::PathBuf;

    /// `n` uniformly random bases.
    pub fn random_dna(rng: &mut crate::shuffle::SplitMix64, n: usize) -> Vec<u8> {
        (0..n).map(|_| b"ACGT"[rng.below(4)]).collect()
    }

    /// A fresh, empty folder under the system's temp dir, unique to this process and `name`.
    pub fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sugarcube-dna-{}-{name}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A committed test file under `tests/data/`.
    pub fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name)
    }

    /// A deterministic generator for property and fuzz tests (SplitMix64).
    pub struct Gen(crate::shuffle::SplitMix64);

    impl Gen {
        /// The generator for `seed`.
        pub fn new(seed: u64) -> Self {
            Gen(crate::shuffle::SplitMix64::for_record(seed, 0))
        }

        /// A uniform index in `0..n` (n > 0).
        pub fn below(&mut self, n: usize) -> usize {
            self.0.below(n)
        }

        /// A random byte.
        pub fn byte(&mut self) -> u8 {
            self.0.next_u64() as u8
        }
    }
}
