//! A small, seedable random number generator whose whole state can be saved.
//!
//! sugarcube draws every random number through [`Rng`] so that a seed fixes a run and a
//! checkpoint can store the generator's state exactly. Independent streams are derived from a
//! seed and an index with [`Rng::stream`]: sample `i` of a sampling run always draws from stream
//! `i`, which makes samples independent of the batch size.

use serde::{Deserialize, Serialize};

/// xoshiro256++ (Blackman and Vigna), seeded through SplitMix64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator seeded from one 64-bit seed.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let s = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
        ];
        Self { s }
    }

    /// An independent stream for `(seed, index)`; different indices give unrelated sequences.
    pub fn stream(seed: u64, index: u64) -> Self {
        let mut x = seed ^ 0xD1B5_4A32_D192_ED03;
        let a = splitmix64(&mut x);
        let mut y = index.wrapping_mul(0xA24B_AED4_963E_E407) ^ a;
        Self::new(splitmix64(&mut y) ^ index.rotate_left(17))
    }

    /// A stream keyed by a name, for example a parameter's path in a model.
    pub fn named(seed: u64, name: &str) -> Self {
        // FNV-1a of the name, mixed with the seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
        Self::stream(seed, h)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` (n > 0), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below needs n > 0");
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }

    /// A standard normal draw (Box-Muller; both values of a pair are not cached, so the state
    /// stays a plain array and resumes exactly).
    pub fn normal(&mut self) -> f64 {
        loop {
            let u1 = self.uniform();
            if u1 > 0.0 {
                let u2 = self.uniform();
                return (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            }
        }
    }

    /// `n` standard normal draws as f32.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal() as f32).collect()
    }

    /// Shuffles a slice in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// Per-row random streams: one [`Rng`] per batch row, each keyed by what the row is (a sample's
/// index in a sampling run, an example's position in a training step), so the numbers a row
/// draws never depend on the batch it sits in or on how a batch is split.
///
/// With lengths set ([`Rows::with_lengths`]), item-shaped draws ([`Rows::normal`]) fill only a
/// row's real positions (those below its length along the item's length axis) and leave
/// padded ones at zero, so a row's draws do not depend on the padding around it either.
#[derive(Clone, Debug)]
pub struct Rows {
    keys: Vec<(u64, u64)>,
    rngs: Vec<Rng>,
    lengths: Option<(Vec<usize>, usize)>,
}

impl Rows {
    /// Streams `Rng::stream(seed, first + i)` for rows `i = 0 .. rows` (sample `first + i` of a
    /// sampling run).
    pub fn new(seed: u64, first: usize, rows: usize) -> Self {
        let keys: Vec<(u64, u64)> = (first..first + rows).map(|i| (seed, i as u64)).collect();
        let rngs = keys.iter().map(|&(s, i)| Rng::stream(s, i)).collect();
        Self {
            keys,
            rngs,
            lengths: None,
        }
    }

    /// Streams for the examples at positions `first .. first + rows` of training step `step`:
    /// keyed by (seed, step, position), so any split of a step's examples into micro-batches (or
    /// ranks) draws the same numbers per example.
    pub fn training(seed: u64, step: usize, first: usize, rows: usize) -> Self {
        let step_seed = Rng::stream(seed ^ 0x7EA1_0000, step as u64).next_u64();
        Self::new(step_seed, first, rows)
    }

    /// Independent streams for another purpose (`tag`) of the same rows: each row's stream is
    /// derived from its key and the tag, so purposes do not share or shift each other's draws.
    pub fn purpose(&self, tag: u64) -> Self {
        let rngs = self
            .keys
            .iter()
            .map(|&(s, i)| Rng::stream(Rng::stream(s, i).next_u64(), tag))
            .collect();
        Self {
            keys: self.keys.clone(),
            rngs,
            lengths: self.lengths.clone(),
        }
    }

    /// Marks row `i` as having `lengths[i]` real positions along axis `axis` of an item (the
    /// axis after the batch axis is 0).
    pub fn with_lengths(mut self, lengths: Vec<usize>, axis: usize) -> Self {
        assert_eq!(lengths.len(), self.rngs.len(), "Rows: one length per row");
        self.lengths = Some((lengths, axis));
        self
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rngs.len()
    }

    /// True without rows.
    pub fn is_empty(&self) -> bool {
        self.rngs.is_empty()
    }

    /// Row `i`'s generator.
    pub fn row(&mut self, i: usize) -> &mut Rng {
        &mut self.rngs[i]
    }

    /// All rows' generators.
    pub fn rngs(&mut self) -> &mut [Rng] {
        &mut self.rngs
    }

    /// One uniform draw in [0, 1) per row.
    pub fn uniform(&mut self) -> Vec<f64> {
        self.rngs.iter_mut().map(|r| r.uniform()).collect()
    }

    /// The number of elements of each row of an item-shaped tensor `shape` (`[rows, ...]`) that
    /// are real: all of them without lengths. Errors on a batch-size mismatch.
    fn check(&self, shape: &[usize]) -> candle_core::Result<()> {
        if shape.first() != Some(&self.rngs.len()) {
            candle_core::bail!(
                "Rows: a draw of shape {shape:?} for {} rows",
                self.rngs.len()
            );
        }
        Ok(())
    }

    /// For each element of one row of `item` shape, whether it is a real position of row `row`.
    fn real(&self, item: &[usize], row: usize) -> Option<Vec<bool>> {
        let (lengths, axis) = self.lengths.as_ref()?;
        let len = lengths[row];
        let inner: usize = item[axis + 1..].iter().product();
        let n: usize = item.iter().product();
        Some((0..n).map(|e| (e / inner) % item[*axis] < len).collect())
    }

    /// `f` applied per element of each row, from that row's generator, for real positions only
    /// (padded positions get `pad`), as a `[rows, ...]` float32 tensor.
    fn per_element(
        &mut self,
        shape: &[usize],
        pad: f32,
        device: &candle_core::Device,
        mut f: impl FnMut(&mut Rng) -> f32,
    ) -> candle_core::Result<candle_core::Tensor> {
        self.check(shape)?;
        let item = &shape[1..];
        let per: usize = item.iter().product();
        let mut data = Vec::with_capacity(per * self.rngs.len());
        for row in 0..self.rngs.len() {
            match self.real(item, row) {
                None => data.extend((0..per).map(|_| f(&mut self.rngs[row]))),
                Some(real) => {
                    data.extend(
                        real.iter()
                            .map(|&r| if r { f(&mut self.rngs[row]) } else { pad }),
                    )
                }
            }
        }
        candle_core::Tensor::from_vec(data, shape, device)
    }

    /// A standard-normal tensor of `shape` (`[rows, ...]`), each row from its own stream (zero at
    /// padded positions), cast to `dtype`.
    pub fn normal(
        &mut self,
        shape: &[usize],
        dtype: candle_core::DType,
        device: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        self.per_element(shape, 0.0, device, |r| r.normal() as f32)?
            .to_dtype(dtype)
    }

    /// A uniform [0, 1) tensor of `shape` (`[rows, ...]`), each row from its own stream (1 at
    /// padded positions), as float32.
    pub fn uniform_like(
        &mut self,
        shape: &[usize],
        device: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        self.per_element(shape, 1.0, device, |r| r.uniform() as f32)
    }

    /// Dropout multipliers for a `[rows, ...]` activation: 0 with probability `p`, else
    /// `1 / (1 - p)`, each row's from its own stream (one uniform per element).
    pub fn dropout_mask(&mut self, shape: &[usize], p: f64) -> candle_core::Result<Vec<f32>> {
        self.check(shape)?;
        if !(0.0..1.0).contains(&p) {
            candle_core::bail!("dropout probability must be in [0, 1), got {p}");
        }
        let scale = (1.0 / (1.0 - p)) as f32;
        let per: usize = shape[1..].iter().product();
        let mut out = Vec::with_capacity(per * self.rngs.len());
        for r in self.rngs.iter_mut() {
            out.extend((0..per).map(|_| if r.uniform() < p { 0.0 } else { scale }));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_streams_differ() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut s0 = Rng::stream(7, 0);
        let mut s1 = Rng::stream(7, 1);
        assert_ne!(s0.next_u64(), s1.next_u64());
    }

    #[test]
    fn normal_moments() {
        let mut r = Rng::new(1);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
    }

    #[test]
    fn rows_are_keyed_by_row_not_batch() -> candle_core::Result<()> {
        let dev = candle_core::Device::Cpu;
        let all =
            Rows::training(3, 7, 0, 4)
                .purpose(2)
                .normal(&[4, 3], candle_core::DType::F32, &dev)?;
        let tail =
            Rows::training(3, 7, 2, 2)
                .purpose(2)
                .normal(&[2, 3], candle_core::DType::F32, &dev)?;
        assert_eq!(
            all.narrow(0, 2, 2)?.to_vec2::<f32>()?,
            tail.to_vec2::<f32>()?
        );
        let other =
            Rows::training(3, 7, 0, 4)
                .purpose(3)
                .normal(&[4, 3], candle_core::DType::F32, &dev)?;
        assert_ne!(all.to_vec2::<f32>()?, other.to_vec2::<f32>()?);
        let next_step =
            Rows::training(3, 8, 0, 4)
                .purpose(2)
                .normal(&[4, 3], candle_core::DType::F32, &dev)?;
        assert_ne!(all.to_vec2::<f32>()?, next_step.to_vec2::<f32>()?);
        Ok(())
    }

    #[test]
    fn padded_draws_do_not_depend_on_the_padding() -> candle_core::Result<()> {
        let dev = candle_core::Device::Cpu;
        // items [L, 2] with the length on axis 0: row 0 has 2 real positions
        let short = Rows::new(1, 0, 1).with_lengths(vec![2], 0).normal(
            &[1, 2, 2],
            candle_core::DType::F32,
            &dev,
        )?;
        let long = Rows::new(1, 0, 1).with_lengths(vec![2], 0).normal(
            &[1, 5, 2],
            candle_core::DType::F32,
            &dev,
        )?;
        assert_eq!(
            short.flatten_all()?.to_vec1::<f32>()?,
            long.narrow(1, 0, 2)?.flatten_all()?.to_vec1::<f32>()?
        );
        assert!(long
            .narrow(1, 2, 3)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|v| *v == 0.0));
        // channels first, [C, L] with the length on axis 1
        let a = Rows::new(1, 0, 1).with_lengths(vec![3], 1).normal(
            &[1, 2, 3],
            candle_core::DType::F32,
            &dev,
        )?;
        let b = Rows::new(1, 0, 1).with_lengths(vec![3], 1).normal(
            &[1, 2, 8],
            candle_core::DType::F32,
            &dev,
        )?;
        assert_eq!(a.to_vec3::<f32>()?, b.narrow(2, 0, 3)?.to_vec3::<f32>()?);
        Ok(())
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut r = Rng::new(3);
        r.next_u64();
        let saved = serde_json::to_string(&r).unwrap();
        let mut back: Rng = serde_json::from_str(&saved).unwrap();
        assert_eq!(r.next_u64(), back.next_u64());
    }
}
