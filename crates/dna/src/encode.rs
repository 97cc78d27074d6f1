//! Encodings of bases for models: one-hot (4 x L float32, DNA-Diffusion's convention) and
//! tokens (u32, for masked diffusion), their decodings, and reverse complements of both for
//! reverse-complement augmentation.
//!
//! Channel and token order is A, C, G, T ([`ALPHABET`]): A = 0, C = 1, G = 2, T = 3, so the
//! complement of index `k` is `3 - k`. One-hot values are 1 for the base and -1 elsewhere
//! (the 0s of a one-hot vector replaced by -1); a padded position ([`PAD`]) is -1 in all
//! four channels.

use crate::sequence::show_byte;
use crate::{SeqRecord, PAD};
use anyhow::{bail, ensure};

/// The bases in channel / token order.
pub const ALPHABET: [u8; 4] = *b"ACGT";
/// The value of the hot channel.
pub const HOT: f32 = 1.0;
/// The value of the other channels (and of every channel at padding).
pub const COLD: f32 = -1.0;

/// The channel / token index of an upper-case base, None for anything else.
pub fn base_index(b: u8) -> Option<usize> {
    match b {
        b'A' => Some(0),
        b'C' => Some(1),
        b'G' => Some(2),
        b'T' => Some(3),
        _ => None,
    }
}

/// The index of `b`, with an error naming its position when it is not a base.
fn index_at(b: u8, i: usize) -> anyhow::Result<usize> {
    base_index(b)
        .ok_or_else(|| anyhow::anyhow!("position {}: {} is not A, C, G or T", i + 1, show_byte(b)))
}

/// One-hot encodes bases as `4 x L` values, channel-major (`x[c * L + i]`): [`HOT`] in the
/// base's channel, [`COLD`] elsewhere; [`PAD`] bytes are cold in all channels.
pub fn one_hot(bases: &[u8]) -> anyhow::Result<Vec<f32>> {
    let len = bases.len();
    let mut x = vec![COLD; 4 * len];
    for (i, &b) in bases.iter().enumerate() {
        if b != PAD {
            x[index_at(b, i)? * len + i] = HOT;
        }
    }
    Ok(x)
}

/// One-hot encodes records of one common length as `N x 4 x L` values (row-major).
pub fn one_hot_batch(records: &[SeqRecord]) -> anyhow::Result<Vec<f32>> {
    let len = common_len(records)?;
    let mut x = Vec::with_capacity(records.len() * 4 * len);
    for (n, r) in records.iter().enumerate() {
        x.extend(
            one_hot(&r.bases).map_err(|e| e.context(format!("record {} ({:?})", n + 1, r.id)))?,
        );
    }
    Ok(x)
}

/// The records' common length, with an error naming the first that differs.
fn common_len(records: &[SeqRecord]) -> anyhow::Result<usize> {
    let len = records.first().map_or(0, |r| r.len());
    if let Some((n, r)) = records.iter().enumerate().find(|(_, r)| r.len() != len) {
        bail!(
            "record {} ({:?}) has length {}, record 1 has {len}: fit the lengths first (fit_length)",
            n + 1,
            r.id,
            r.len()
        );
    }
    Ok(len)
}

/// Decodes `4 x L` channel-major values by taking each position's largest channel (ties go
/// to the first, in A, C, G, T order). Values must be finite.
pub fn decode_one_hot(x: &[f32], len: usize) -> anyhow::Result<Vec<u8>> {
    ensure!(
        x.len() == 4 * len,
        "{} values cannot be 4 x {len} one-hot columns",
        x.len()
    );
    (0..len)
        .map(|i| {
            let mut best = 0;
            for c in 0..4 {
                let v = x[c * len + i];
                ensure!(
                    v.is_finite(),
                    "position {}: channel {} holds {v}",
                    i + 1,
                    ALPHABET[c] as char
                );
                if v > x[best * len + i] {
                    best = c;
                }
            }
            Ok(ALPHABET[best])
        })
        .collect()
}

/// Encodes bases as tokens 0..4 (A, C, G, T); [`PAD`] bytes become `pad` (for a masked
/// process over 4 values its mask id is 4: choose any value the model ignores at padding).
pub fn tokens(bases: &[u8], pad: u32) -> anyhow::Result<Vec<u32>> {
    bases
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if b == PAD {
                Ok(pad)
            } else {
                Ok(index_at(b, i)? as u32)
            }
        })
        .collect()
}

/// Decodes tokens 0..4 to bases; any other token (a mask left in place) is an error naming
/// its position.
pub fn decode_tokens(tokens: &[u32]) -> anyhow::Result<Vec<u8>> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| match ALPHABET.get(t as usize) {
            Some(&b) => Ok(b),
            None => bail!("position {}: token {t} is not a base (0..4)", i + 1),
        })
        .collect()
}

/// The reverse complement of bases: the real part reversed and complemented, trailing
/// [`PAD`] bytes left at the end; bytes other than bases are kept as they are.
pub fn reverse_complement(bases: &[u8]) -> Vec<u8> {
    SeqRecord::new("", bases, vec![]).reverse_complement().bases
}

/// The reverse complement of a `4 x L` one-hot encoding whose first `real_len` positions are
/// real (the rest padding, left in place): positions reversed, channel `c` swapped with `3 - c`.
pub fn reverse_complement_one_hot(
    x: &[f32],
    len: usize,
    real_len: usize,
) -> anyhow::Result<Vec<f32>> {
    ensure!(
        x.len() == 4 * len,
        "{} values cannot be 4 x {len} one-hot columns",
        x.len()
    );
    ensure!(
        real_len <= len,
        "real length {real_len} exceeds the length {len}"
    );
    let mut out = x.to_vec();
    for c in 0..4 {
        for i in 0..real_len {
            out[(3 - c) * len + (real_len - 1 - i)] = x[c * len + i];
        }
    }
    Ok(out)
}

/// The reverse complement of tokens whose first `real_len` are real (the rest padding, left
/// in place): reversed, token `t` mapped to `3 - t`. Real tokens must be 0..4.
pub fn reverse_complement_tokens(tokens: &[u32], real_len: usize) -> anyhow::Result<Vec<u32>> {
    ensure!(
        real_len <= tokens.len(),
        "real length {real_len} exceeds the length {}",
        tokens.len()
    );
    let mut out = tokens.to_vec();
    for (i, &t) in tokens[..real_len].iter().enumerate() {
        ensure!(t < 4, "position {}: token {t} is not a base (0..4)", i + 1);
        out[real_len - 1 - i] = 3 - t;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Gen;

    #[test]
    fn one_hot_layout_and_padding() -> anyhow::Result<()> {
        let x = one_hot(b"ACT-")?;
        #[rustfmt::skip]
        let want = [
            1., -1., -1., -1., // A
            -1., 1., -1., -1., // C
            -1., -1., -1., -1., // G
            -1., -1., 1., -1., // T
        ];
        assert_eq!(x, want);
        assert_eq!(tokens(b"ACGT--", 9)?, [0, 1, 2, 3, 9, 9]);
        let e = one_hot(b"ACN").unwrap_err().to_string();
        assert!(e.contains("position 3: 'N'"), "{e}");
        assert!(tokens(b"aC", 4)
            .unwrap_err()
            .to_string()
            .contains("position 1: 'a'"));
        Ok(())
    }

    #[test]
    fn decodings_and_their_errors() {
        assert_eq!(
            decode_one_hot(&[0.2, 0.9, 0.9, -3.0, 0.1, 0.0, 0.0, 0.0], 2).unwrap(),
            b"CA"
        );
        assert!(decode_one_hot(&[0.0; 7], 2)
            .unwrap_err()
            .to_string()
            .contains("4 x 2"));
        let e = decode_one_hot(&[0.0, f32::NAN, 0.0, 0.0], 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("position 1: channel C holds NaN"), "{e}");
        assert_eq!(decode_tokens(&[3, 2, 1, 0]).unwrap(), b"TGCA");
        assert!(decode_tokens(&[0, 4])
            .unwrap_err()
            .to_string()
            .contains("position 2: token 4"));
        assert!(reverse_complement_tokens(&[0, 7], 2).is_err());
        assert!(reverse_complement_tokens(&[0], 2).is_err());
        assert!(reverse_complement_one_hot(&[0.0; 4], 1, 2).is_err());
        assert!(reverse_complement_one_hot(&[0.0; 5], 1, 1).is_err());
    }

    #[test]
    fn batch_needs_one_length() {
        let a = SeqRecord::new("a", b"ACGT".to_vec(), vec![]);
        let b = SeqRecord::new("b", b"AC".to_vec(), vec![]);
        let x = one_hot_batch(&[a.clone(), a.clone()]).unwrap();
        assert_eq!(x.len(), 32);
        let e = one_hot_batch(&[a.clone(), b]).unwrap_err().to_string();
        assert!(
            e.contains("record 2 (\"b\") has length 2, record 1 has 4"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            one_hot_batch(&[a, SeqRecord::new("c", b"ACGX".to_vec(), vec![])]).unwrap_err()
        );
        assert!(e.contains("record 2 (\"c\"): position 4: 'X'"), "{e}");
    }

    /// Random padded sequences: encode/decode round trips, and every reverse complement
    /// (bases, one-hot, tokens) agrees with the others and is its own inverse.
    #[test]
    fn round_trips_and_reverse_complements_agree() -> anyhow::Result<()> {
        let mut g = Gen::new(11);
        for _ in 0..2000 {
            let len = 1 + g.below(60);
            let real = g.below(len + 1);
            let mut bases: Vec<u8> = (0..real).map(|_| ALPHABET[g.below(4)]).collect();
            bases.resize(len, PAD);
            let x = one_hot(&bases)?;
            let t = tokens(&bases, 4)?;
            assert_eq!(&decode_one_hot(&x, len)?[..real], &bases[..real]);
            assert_eq!(&decode_tokens(&t[..real])?[..], &bases[..real]);
            let rc = reverse_complement(&bases);
            assert_eq!(reverse_complement(&rc), bases);
            let xrc = reverse_complement_one_hot(&x, len, real)?;
            assert_eq!(xrc, one_hot(&rc)?);
            assert_eq!(reverse_complement_one_hot(&xrc, len, real)?, x);
            let trc = reverse_complement_tokens(&t, real)?;
            assert_eq!(trc, tokens(&rc, 4)?);
            assert_eq!(reverse_complement_tokens(&trc, real)?, t);
        }
        Ok(())
    }
}
