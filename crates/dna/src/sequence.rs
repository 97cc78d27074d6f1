//! The sequence record, the policy for characters other than A, C, G, T, and the length policy.

use crate::shuffle::SplitMix64 as SplitMix;
use anyhow::bail;
use std::fmt;
use std::str::FromStr;

/// The byte that fills padded positions (after [`fit_length`] with [`LengthPolicy::Pad`]).
/// Padding is always at the end of a record: its real bases are `bases[..real_len()]`.
pub const PAD: u8 = b'-';

/// One DNA sequence: its id, its bases and its labels (zero, one or several class names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqRecord {
    /// The id: a FASTA header's first word, a table's id column or `row<N>`.
    pub id: String,
    /// The rest of a FASTA header, without its `labels=` word (empty for tables).
    pub description: String,
    /// Upper-case `A`, `C`, `G`, `T`, then [`PAD`] bytes when the record was padded.
    pub bases: Vec<u8>,
    /// Class names, in the order the source gave them; no duplicates.
    pub labels: Vec<String>,
}

impl SeqRecord {
    /// A record with no description.
    pub fn new(id: impl Into<String>, bases: impl Into<Vec<u8>>, labels: Vec<String>) -> Self {
        Self {
            id: id.into(),
            description: String::new(),
            bases: bases.into(),
            labels,
        }
    }

    /// The length, padding included.
    pub fn len(&self) -> usize {
        self.bases.len()
    }

    /// Whether the record holds no bases at all.
    pub fn is_empty(&self) -> bool {
        self.bases.is_empty()
    }

    /// The number of real bases: the length less the trailing [`PAD`] bytes.
    pub fn real_len(&self) -> usize {
        self.bases.len() - self.bases.iter().rev().take_while(|&&b| b == PAD).count()
    }

    /// One flag per position, true at real bases and false at padding (the padding mask).
    pub fn mask(&self) -> Vec<bool> {
        let real = self.real_len();
        (0..self.bases.len()).map(|i| i < real).collect()
    }

    /// The reverse complement: the real bases reversed and complemented (A<->T, C<->G), the
    /// padding left at the end, the id, description and labels kept.
    pub fn reverse_complement(&self) -> SeqRecord {
        let real = self.real_len();
        let mut bases: Vec<u8> = self.bases[..real]
            .iter()
            .rev()
            .map(|&b| complement(b))
            .collect();
        bases.extend_from_slice(&self.bases[real..]);
        SeqRecord {
            bases,
            ..self.clone()
        }
    }
}

/// Records as read, with what the invalid-character policy did to the input.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Loaded {
    /// The records kept, in file order.
    pub records: Vec<SeqRecord>,
    /// The ids of the records left out under [`InvalidPolicy::Drop`].
    pub dropped: Vec<String>,
    /// How many characters [`InvalidPolicy::Replace`] replaced.
    pub replaced: usize,
}

/// The complement of one base (A<->T, C<->G, either case); other bytes are returned as they are.
pub fn complement(b: u8) -> u8 {
    match b {
        b'A' => b'T',
        b'T' => b'A',
        b'C' => b'G',
        b'G' => b'C',
        b'a' => b't',
        b't' => b'a',
        b'c' => b'g',
        b'g' => b'c',
        other => other,
    }
}

/// Every label of the records, sorted and without duplicates: the class names, whose
/// positions are the class indices.
pub fn collect_labels(records: &[SeqRecord]) -> Vec<String> {
    let mut names: Vec<String> = records
        .iter()
        .flat_map(|r| r.labels.iter().cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// What a reader does with a character other than A, C, G, T (either case).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InvalidPolicy {
    /// An error naming the file, the line (and column) and the character (the default).
    #[default]
    Error,
    /// Records holding any such character are left out (and counted).
    Drop,
    /// `N` and the other IUPAC ambiguity codes (R Y S W K M B D H V, either case) are
    /// replaced by one of the bases they stand for, drawn uniformly by a generator seeded from
    /// `seed` and the record's index, so a record's draws do not depend on the others. Any
    /// other character is still an error.
    Replace {
        /// The seed of the replacement draws.
        seed: u64,
    },
}

impl FromStr for InvalidPolicy {
    type Err = anyhow::Error;

    /// Parses `error`, `drop` or `replace` (seed 0); `replace:SEED` sets the seed.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "error" => Ok(Self::Error),
            "drop" => Ok(Self::Drop),
            "replace" => Ok(Self::Replace { seed: 0 }),
            _ => match s.strip_prefix("replace:").map(str::parse::<u64>) {
                Some(Ok(seed)) => Ok(Self::Replace { seed }),
                _ => bail!(
                    "invalid-character policy {s:?}: expected \"error\", \"drop\", \"replace\" or \"replace:SEED\""
                ),
            },
        }
    }
}

impl fmt::Display for InvalidPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Error => write!(f, "error"),
            Self::Drop => write!(f, "drop"),
            Self::Replace { seed } => write!(f, "replace:{seed}"),
        }
    }
}

/// The bases an IUPAC nucleotide code stands for (upper case), or None for a non-code.
fn iupac(b: u8) -> Option<&'static [u8]> {
    Some(match b.to_ascii_uppercase() {
        b'N' => b"ACGT",
        b'R' => b"AG",
        b'Y' => b"CT",
        b'S' => b"CG",
        b'W' => b"AT",
        b'K' => b"GT",
        b'M' => b"AC",
        b'B' => b"CGT",
        b'D' => b"AGT",
        b'H' => b"ACT",
        b'V' => b"ACG",
        _ => return None,
    })
}

/// What [`clean_base`] made of one byte.
pub(crate) enum Cleaned {
    /// A base (upper case), as read or drawn for an ambiguity code.
    Base(u8, bool),
    /// A byte the policy does not accept (error or drop).
    Invalid,
}

/// Upper-cases one sequence byte; under [`InvalidPolicy::Replace`] draws a base for an
/// ambiguity code (the flag says it was replaced).
pub(crate) fn clean_base(b: u8, policy: InvalidPolicy, rng: &mut SplitMix) -> Cleaned {
    match b {
        b'A' | b'C' | b'G' | b'T' => Cleaned::Base(b, false),
        b'a' | b'c' | b'g' | b't' => Cleaned::Base(b.to_ascii_uppercase(), false),
        _ => match (policy, iupac(b)) {
            (InvalidPolicy::Replace { .. }, Some(options)) => {
                Cleaned::Base(options[rng.below(options.len())], true)
            }
            _ => Cleaned::Invalid,
        },
    }
}

/// A byte as it should appear in an error message: the character, or its hex code.
pub(crate) fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else if b == b' ' {
        "' ' (space)".to_string()
    } else {
        format!("byte 0x{b:02x}")
    }
}

/// The hint appended to an invalid-character error under the default policy.
pub(crate) fn invalid_hint(policy: InvalidPolicy) -> &'static str {
    match policy {
        InvalidPolicy::Replace { .. } => " (only N and IUPAC ambiguity codes can be replaced)",
        _ => " (expected A, C, G or T; set invalid = \"drop\" to leave such records out or \"replace\" to draw bases for N)",
    }
}

/// What [`fit_length`] does with a record whose length is not the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LengthPolicy {
    /// A record of any other length is an error naming it (the default).
    #[default]
    Error,
    /// Longer records are cropped around their centre; shorter ones are an error.
    Crop,
    /// Shorter records are padded at the end with [`PAD`]; longer ones are an error.
    Pad,
    /// Longer records are centre-cropped, shorter ones padded.
    CropOrPad,
}

impl FromStr for LengthPolicy {
    type Err = anyhow::Error;

    /// Parses `error`, `crop`, `pad` or `crop_or_pad`.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "error" => Self::Error,
            "crop" => Self::Crop,
            "pad" => Self::Pad,
            "crop_or_pad" => Self::CropOrPad,
            _ => bail!(
                "length policy {s:?}: expected \"error\", \"crop\", \"pad\" or \"crop_or_pad\""
            ),
        })
    }
}

impl fmt::Display for LengthPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Crop => "crop",
            Self::Pad => "pad",
            Self::CropOrPad => "crop_or_pad",
        })
    }
}

/// Brings every record to `len` positions under `policy`: a centre crop keeps
/// `bases[(n - len) / 2 ..][..len]`, padding appends [`PAD`] bytes (so
/// [`SeqRecord::real_len`] and [`SeqRecord::mask`] give the real part). Padding already
/// present counts as real length here: fit a record once. `source` (a file name) starts
/// the error messages, which name the record by position and id.
pub fn fit_length(
    records: Vec<SeqRecord>,
    len: usize,
    policy: LengthPolicy,
    source: &str,
) -> anyhow::Result<Vec<SeqRecord>> {
    if len == 0 {
        bail!("{source}: the target length must be positive");
    }
    let mut out = Vec::with_capacity(records.len());
    for (i, mut r) in records.into_iter().enumerate() {
        let n = r.bases.len();
        let crop = matches!(policy, LengthPolicy::Crop | LengthPolicy::CropOrPad);
        let pad = matches!(policy, LengthPolicy::Pad | LengthPolicy::CropOrPad);
        if n > len && crop {
            let start = (n - len) / 2;
            r.bases.drain(..start);
            r.bases.truncate(len);
        } else if n < len && pad {
            r.bases.resize(len, PAD);
        } else if n != len {
            let fix = if n > len { "crop" } else { "pad" };
            bail!(
                "{source}: record {} ({:?}) has {n} bases, expected {len} (length policy {policy}; \
                 \"{fix}\" or \"crop_or_pad\" would fit it)",
                i + 1,
                r.id
            );
        }
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(bases: &str) -> SeqRecord {
        SeqRecord::new("r", bases.as_bytes(), vec![])
    }

    #[test]
    fn reverse_complement_twice_is_identity_and_keeps_padding() {
        let r = rec("AACGTTG--");
        let rc = r.reverse_complement();
        assert_eq!(rc.bases, b"CAACGTT--");
        assert_eq!(rc.reverse_complement(), r);
        assert_eq!(r.real_len(), 7);
        assert_eq!(
            r.mask(),
            [true, true, true, true, true, true, true, false, false]
        );
    }

    #[test]
    fn centre_crop_pad_and_errors() -> anyhow::Result<()> {
        let cropped = fit_length(vec![rec("AACCGGTTA")], 4, LengthPolicy::Crop, "x")?;
        assert_eq!(cropped[0].bases, b"CCGG"); // start (9 - 4) / 2 = 2
        let cropped = fit_length(vec![rec("ACGTAC")], 4, LengthPolicy::CropOrPad, "x")?;
        assert_eq!(cropped[0].bases, b"CGTA"); // start (6 - 4) / 2 = 1
        let padded = fit_length(vec![rec("ACG")], 5, LengthPolicy::Pad, "x")?;
        assert_eq!(padded[0].bases, b"ACG--");
        assert_eq!(padded[0].real_len(), 3);
        let same = fit_length(vec![rec("ACGT")], 4, LengthPolicy::Error, "x")?;
        assert_eq!(same[0].bases, b"ACGT");

        let err = fit_length(
            vec![rec("ACGT"), rec("ACG")],
            4,
            LengthPolicy::Error,
            "f.fa",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("f.fa: record 2 (\"r\") has 3 bases, expected 4"),
            "{err}"
        );
        assert!(err.contains("\"pad\""), "{err}");
        let err = fit_length(vec![rec("ACGTA")], 4, LengthPolicy::Pad, "f.fa")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("record 1") && err.contains("\"crop\""),
            "{err}"
        );
        let err = fit_length(vec![rec("ACG")], 4, LengthPolicy::Crop, "f.fa")
            .unwrap_err()
            .to_string();
        assert!(err.contains("has 3 bases"), "{err}");
        assert!(fit_length(vec![], 0, LengthPolicy::Pad, "f.fa").is_err());
        Ok(())
    }

    #[test]
    fn labels_collect_sorted_without_duplicates() {
        let mut a = rec("A");
        a.labels = vec!["K562".into(), "HepG2".into()];
        let mut b = rec("C");
        b.labels = vec!["GM12878".into(), "K562".into()];
        assert_eq!(
            collect_labels(&[a, rec("G"), b]),
            ["GM12878", "HepG2", "K562"]
        );
    }

    #[test]
    fn policies_parse_and_print() {
        for s in ["error", "drop", "replace:7"] {
            assert_eq!(s.parse::<InvalidPolicy>().unwrap().to_string(), s);
        }
        assert_eq!(
            "replace".parse::<InvalidPolicy>().unwrap(),
            InvalidPolicy::Replace { seed: 0 }
        );
        let err = "skip".parse::<InvalidPolicy>().unwrap_err().to_string();
        assert!(
            err.contains("\"skip\"") && err.contains("\"drop\""),
            "{err}"
        );
        assert!("replace:x".parse::<InvalidPolicy>().is_err());
        for s in ["error", "crop", "pad", "crop_or_pad"] {
            assert_eq!(s.parse::<LengthPolicy>().unwrap().to_string(), s);
        }
        assert!("trim"
            .parse::<LengthPolicy>()
            .unwrap_err()
            .to_string()
            .contains("\"crop\""));
    }

    #[test]
    fn replacement_draws_are_uniform_and_seeded() {
        let mut rng = SplitMix::for_record(3, 0);
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            match clean_base(b'n', InvalidPolicy::Replace { seed: 3 }, &mut rng) {
                Cleaned::Base(b, true) => {
                    counts[b"ACGT".iter().position(|&x| x == b).unwrap()] += 1
                }
                _ => panic!("N not replaced"),
            }
        }
        assert!(
            counts.iter().all(|&c| (900..1100).contains(&c)),
            "{counts:?}"
        );
        let mut rng = SplitMix::for_record(3, 0);
        for _ in 0..100 {
            // R stands for A or G only
            assert!(matches!(
                clean_base(b'R', InvalidPolicy::Replace { seed: 3 }, &mut rng),
                Cleaned::Base(b'A' | b'G', true)
            ));
        }
        assert!(matches!(
            clean_base(b'N', InvalidPolicy::Error, &mut rng),
            Cleaned::Invalid
        ));
        assert!(matches!(
            clean_base(b'X', InvalidPolicy::Replace { seed: 3 }, &mut rng),
            Cleaned::Invalid
        ));
        assert!(matches!(
            clean_base(b'g', InvalidPolicy::Error, &mut rng),
            Cleaned::Base(b'G', false)
        ));
    }
}
