//! Conditioning as data: a domain declares named condition fields ([`CondSpec`]); each example
//! carries one [`Value`] per field ([`Condition`]); batches of conditions are encoded as one
//! float tensor per field ([`CondBatch`]) that the networks embed ([`crate::nn::CondEmbedding`]).
//!
//! Field kinds:
//! - categorical: one of K classes, encoded one-hot in K + 1 columns (the last is the learned
//!   null, used for classifier-free guidance);
//! - multi-label: any subset of K labels (the empty set included), encoded multi-hot in K + 1
//!   columns (the last, alone, is the null);
//! - scalar: a number, encoded as `[value, 0]`, or `[0, 1]` for the null.
//!
//! Guidance combines conditions ([`Guidance`]): several positive terms and negative terms,
//! composed as in composable diffusion (Liu et al. 2022). On the command line a condition is
//! written `field=value,field=value`; a multi-label value joins labels with `+`
//! (`celltype=HepG2+K562`); fields left out are null.

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

/// What kind of value a condition field holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FieldKind {
    /// One of `classes`.
    Categorical {
        /// Class names, in id order.
        classes: Vec<String>,
    },
    /// Any subset of `labels`.
    MultiLabel {
        /// Label names, in id order.
        labels: Vec<String>,
    },
    /// A real number.
    Scalar,
}

/// One named condition field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Field {
    /// Its name in experiment files and on the command line.
    pub name: String,
    /// What it holds.
    #[serde(flatten)]
    pub kind: FieldKind,
}

impl Field {
    /// A categorical field.
    pub fn categorical(name: &str, classes: Vec<String>) -> Self {
        Self {
            name: name.into(),
            kind: FieldKind::Categorical { classes },
        }
    }

    /// A multi-label field.
    pub fn multi_label(name: &str, labels: Vec<String>) -> Self {
        Self {
            name: name.into(),
            kind: FieldKind::MultiLabel { labels },
        }
    }

    /// A scalar field.
    pub fn scalar(name: &str) -> Self {
        Self {
            name: name.into(),
            kind: FieldKind::Scalar,
        }
    }

    /// Columns of its encoding: K + 1 for categorical and multi-label fields, 2 for scalars.
    pub fn width(&self) -> usize {
        match &self.kind {
            FieldKind::Categorical { classes } => classes.len() + 1,
            FieldKind::MultiLabel { labels } => labels.len() + 1,
            FieldKind::Scalar => 2,
        }
    }

    /// The class or label names (empty for a scalar field).
    pub fn names(&self) -> &[String] {
        match &self.kind {
            FieldKind::Categorical { classes } => classes,
            FieldKind::MultiLabel { labels } => labels,
            FieldKind::Scalar => &[],
        }
    }

    /// The id of a class or label given by name (or by its number).
    fn id_of(&self, text: &str) -> anyhow::Result<u32> {
        let names = self.names();
        if let Some(i) = names.iter().position(|n| n == text) {
            return Ok(i as u32);
        }
        if let Ok(i) = text.parse::<usize>() {
            if i < names.len() {
                return Ok(i as u32);
            }
        }
        anyhow::bail!(
            "field `{}` has no value `{text}`: expected one of {}",
            self.name,
            names.join(", ")
        )
    }

    /// Parses one field's value as written on the command line.
    pub fn parse_value(&self, text: &str) -> anyhow::Result<Value> {
        let text = text.trim();
        if text == "null" {
            return Ok(Value::Null);
        }
        match &self.kind {
            FieldKind::Categorical { .. } => Ok(Value::Class(self.id_of(text)?)),
            FieldKind::MultiLabel { .. } => {
                let mut ids = if text.is_empty() || text == "none" {
                    vec![]
                } else {
                    text.split('+')
                        .map(|t| self.id_of(t.trim()))
                        .collect::<anyhow::Result<Vec<_>>>()?
                };
                ids.sort_unstable();
                ids.dedup();
                Ok(Value::Labels(ids))
            }
            FieldKind::Scalar => {
                let v: f64 = text.parse().map_err(|_| {
                    anyhow::anyhow!("field `{}` is a number, got `{text}`", self.name)
                })?;
                anyhow::ensure!(
                    v.is_finite(),
                    "field `{}` must be finite, got {v}",
                    self.name
                );
                Ok(Value::Scalar(v))
            }
        }
    }

    /// A value as written on the command line.
    pub fn format_value(&self, v: &Value) -> String {
        let name = |i: &u32| {
            self.names()
                .get(*i as usize)
                .cloned()
                .unwrap_or_else(|| i.to_string())
        };
        match v {
            Value::Null => "null".into(),
            Value::Class(i) => name(i),
            Value::Labels(ids) if ids.is_empty() => "none".into(),
            Value::Labels(ids) => ids.iter().map(name).collect::<Vec<_>>().join("+"),
            Value::Scalar(x) => format!("{x}"),
        }
    }

    /// Checks that a value fits this field.
    fn check(&self, v: &Value) -> anyhow::Result<()> {
        let n = self.names().len() as u32;
        match (&self.kind, v) {
            (_, Value::Null) => Ok(()),
            (FieldKind::Categorical { .. }, Value::Class(i)) if *i < n => Ok(()),
            (FieldKind::MultiLabel { .. }, Value::Labels(ids)) if ids.iter().all(|i| *i < n) => {
                Ok(())
            }
            (FieldKind::Scalar, Value::Scalar(x)) if x.is_finite() => Ok(()),
            _ => anyhow::bail!(
                "value {v:?} does not fit condition field `{}` ({:?})",
                self.name,
                self.kind
            ),
        }
    }
}

/// One field's value for one example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// No information (the learned null).
    Null,
    /// A class id.
    Class(u32),
    /// A set of label ids (sorted, no repeats).
    Labels(Vec<u32>),
    /// A number.
    Scalar(f64),
}

/// One example's condition: a value per field of the spec, in its order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Condition(pub Vec<Value>);

impl Condition {
    /// The class id of field `i` when it holds one.
    pub fn class(&self, i: usize) -> Option<u32> {
        match self.0.get(i) {
            Some(Value::Class(c)) => Some(*c),
            _ => None,
        }
    }
}

/// The condition fields of a domain's data (empty: unconditional).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CondSpec {
    /// The fields, in order.
    pub fields: Vec<Field>,
}

impl CondSpec {
    /// A spec of one categorical field.
    pub fn classes(name: &str, classes: Vec<String>) -> Self {
        Self {
            fields: vec![Field::categorical(name, classes)],
        }
    }

    /// True when the data is unconditional.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The all-null condition.
    pub fn null(&self) -> Condition {
        Condition(vec![Value::Null; self.fields.len()])
    }

    /// The field called `name`, with its index.
    pub fn field(&self, name: &str) -> anyhow::Result<(usize, &Field)> {
        self.fields
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.fields.iter().map(|f| f.name.as_str()).collect();
                if names.is_empty() {
                    anyhow::anyhow!(
                        "this model is unconditional: it has no condition field `{name}`"
                    )
                } else {
                    anyhow::anyhow!(
                        "no condition field `{name}`: the fields are {}",
                        names.join(", ")
                    )
                }
            })
    }

    /// Parses `field=value,field=value` (fields left out are null).
    pub fn parse(&self, text: &str) -> anyhow::Result<Condition> {
        let mut values = vec![Value::Null; self.fields.len()];
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("condition `{text}`: expected field=value, got `{part}`")
            })?;
            let (i, field) = self.field(name.trim())?;
            values[i] = field
                .parse_value(value)
                .map_err(|e| anyhow::anyhow!("condition `{text}`: {e}"))?;
        }
        Ok(Condition(values))
    }

    /// A condition as written on the command line (null fields left out).
    pub fn format(&self, c: &Condition) -> String {
        let parts: Vec<String> = self
            .fields
            .iter()
            .zip(&c.0)
            .filter(|(_, v)| **v != Value::Null)
            .map(|(f, v)| format!("{}={}", f.name, f.format_value(v)))
            .collect();
        if parts.is_empty() {
            "null".into()
        } else {
            parts.join(",")
        }
    }

    /// The conditions sample `i` takes by default, `i mod len`: every combination of the
    /// categorical fields' classes (the first field slowest), each label of a multi-label field
    /// alone; scalar fields null. One null condition for unconditional data.
    pub fn defaults(&self) -> Vec<Condition> {
        let mut out = vec![self.null()];
        for (i, f) in self.fields.iter().enumerate() {
            let values: Vec<Value> = match &f.kind {
                FieldKind::Categorical { classes } => {
                    (0..classes.len() as u32).map(Value::Class).collect()
                }
                FieldKind::MultiLabel { labels } => (0..labels.len() as u32)
                    .map(|l| Value::Labels(vec![l]))
                    .collect(),
                FieldKind::Scalar => continue,
            };
            if values.is_empty() {
                continue;
            }
            out = out
                .iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.0[i] = v.clone();
                        c
                    })
                })
                .collect();
        }
        out
    }

    /// Checks a condition against the spec.
    pub fn check(&self, c: &Condition) -> anyhow::Result<()> {
        anyhow::ensure!(
            c.0.len() == self.fields.len(),
            "a condition with {} values for {} fields",
            c.0.len(),
            self.fields.len()
        );
        self.fields
            .iter()
            .zip(&c.0)
            .try_for_each(|(f, v)| f.check(v))
    }

    /// Encodes a batch of conditions, one `[B, width]` float32 tensor per field.
    pub fn encode(&self, conds: &[Condition], device: &Device) -> Result<CondBatch> {
        let b = conds.len();
        let mut fields = Vec::with_capacity(self.fields.len());
        for (i, f) in self.fields.iter().enumerate() {
            let w = f.width();
            let mut data = vec![0f32; b * w];
            for (row, c) in conds.iter().enumerate() {
                let cols = &mut data[row * w..(row + 1) * w];
                match c.0.get(i) {
                    None | Some(Value::Null) => {
                        cols[w - 1] = 1.0;
                    }
                    Some(Value::Class(k)) if (*k as usize) < w - 1 => cols[*k as usize] = 1.0,
                    Some(Value::Labels(ids)) => {
                        for &k in ids {
                            if k as usize >= w - 1 {
                                candle_core::bail!(
                                    "label id {k} out of range for field `{}`",
                                    f.name
                                );
                            }
                            cols[k as usize] = 1.0;
                        }
                    }
                    Some(Value::Scalar(x)) => cols[0] = *x as f32,
                    Some(v) => {
                        candle_core::bail!("value {v:?} does not fit condition field `{}`", f.name)
                    }
                }
            }
            fields.push(Tensor::from_vec(data, (b, w), device)?);
        }
        Ok(CondBatch { fields })
    }
}

/// A batch of encoded conditions: one `[B, width]` float32 tensor per field of the spec.
#[derive(Clone, Debug)]
pub struct CondBatch {
    /// The fields' encodings, in the spec's order.
    pub fields: Vec<Tensor>,
}

impl CondBatch {
    /// Rows of the batch.
    pub fn len(&self) -> usize {
        self.fields.first().map_or(0, |t| t.dim(0).unwrap_or(0))
    }

    /// True without rows or fields.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batches stacked along the rows.
    pub fn cat(parts: &[&CondBatch]) -> Result<CondBatch> {
        let n = parts.first().map_or(0, |p| p.fields.len());
        let fields = (0..n)
            .map(|i| Tensor::cat(&parts.iter().map(|p| &p.fields[i]).collect::<Vec<_>>(), 0))
            .collect::<Result<Vec<_>>>()?;
        Ok(CondBatch { fields })
    }
}

/// How label dropout (for classifier-free guidance) drops conditions in training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CondDrop {
    /// Each field is replaced by its null independently, with probability `cond_drop` (the
    /// model learns every partial condition, which guidance by one field needs).
    #[default]
    Each,
    /// The whole condition is replaced by the null, with probability `cond_drop`.
    All,
}

/// Applies label dropout to one example's condition with probability `p`, drawing from `rng`:
/// one uniform per field ([`CondDrop::Each`]) or one in all ([`CondDrop::All`]).
pub fn drop_condition(
    c: &Condition,
    p: f64,
    mode: CondDrop,
    rng: &mut crate::rng::Rng,
) -> Condition {
    match mode {
        CondDrop::Each => Condition(
            c.0.iter()
                .map(|v| {
                    if rng.uniform() < p {
                        Value::Null
                    } else {
                        v.clone()
                    }
                })
                .collect(),
        ),
        CondDrop::All => {
            if rng.uniform() < p {
                Condition(vec![Value::Null; c.0.len()])
            } else {
                c.clone()
            }
        }
    }
}

/// What to generate from: positive conditions (each weighed by `scale`) and negative ones
/// (each weighed by `negative_scale`), composed as
/// `out = null + sum_i w (c_i - null) - sum_j v (n_j - null)`.
///
/// Without positive terms sample `i` takes `defaults[i mod len]` of the spec as its one
/// positive term. With one positive term, no negative ones and `scale = 1`, the network is
/// called once, on the condition alone.
#[derive(Clone, Debug, PartialEq)]
pub struct Guidance {
    /// Positive terms (`--cond`).
    pub positive: Vec<Condition>,
    /// Negative terms (`--not`).
    pub negative: Vec<Condition>,
    /// Weight of each positive term (`--guidance`).
    pub scale: f64,
    /// Weight of each negative term (`--not-guidance`).
    pub negative_scale: f64,
}

impl Guidance {
    /// Plain guidance at `scale` from the spec's default conditions.
    pub fn defaults(scale: f64) -> Self {
        Self {
            positive: vec![],
            negative: vec![],
            scale,
            negative_scale: scale,
        }
    }

    /// The positive terms of sample `i`.
    pub fn positive_for(
        &self,
        spec: &CondSpec,
        defaults: &[Condition],
        i: usize,
    ) -> Vec<Condition> {
        if !self.positive.is_empty() {
            self.positive.clone()
        } else if spec.is_empty() {
            vec![]
        } else {
            vec![defaults[i % defaults.len()].clone()]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CondSpec {
        CondSpec {
            fields: vec![
                Field::categorical("instrument", vec!["guitar".into(), "piano".into()]),
                Field::multi_label(
                    "celltype",
                    vec!["HepG2".into(), "K562".into(), "GM12878".into()],
                ),
                Field::scalar("pitch"),
            ],
        }
    }

    #[test]
    fn parses_formats_and_encodes() -> anyhow::Result<()> {
        let s = spec();
        let c = s.parse("instrument=piano, celltype=K562+HepG2,pitch=60")?;
        assert_eq!(
            c,
            Condition(vec![
                Value::Class(1),
                Value::Labels(vec![0, 1]),
                Value::Scalar(60.0)
            ])
        );
        assert_eq!(
            s.format(&c),
            "instrument=piano,celltype=HepG2+K562,pitch=60"
        );
        assert_eq!(s.parse("celltype=none")?.0[1], Value::Labels(vec![]));
        assert_eq!(s.parse("instrument=0")?.0[0], Value::Class(0));
        let e = s.parse("instrument=drum").unwrap_err().to_string();
        assert!(e.contains("guitar, piano"), "{e}");
        assert!(s
            .parse("colour=red")
            .unwrap_err()
            .to_string()
            .contains("instrument, celltype, pitch"));
        assert!(s.parse("pitch=high").is_err());
        let b = s.encode(&[c, s.null()], &Device::Cpu)?;
        assert_eq!(
            b.fields[0].to_vec2::<f32>()?,
            vec![vec![0.0, 1.0, 0.0], vec![0.0, 0.0, 1.0]]
        );
        assert_eq!(
            b.fields[1].to_vec2::<f32>()?,
            vec![vec![1.0, 1.0, 0.0, 0.0], vec![0.0, 0.0, 0.0, 1.0]]
        );
        assert_eq!(
            b.fields[2].to_vec2::<f32>()?,
            vec![vec![60.0, 0.0], vec![0.0, 1.0]]
        );
        assert_eq!(CondBatch::cat(&[&b, &b])?.len(), 4);
        Ok(())
    }

    #[test]
    fn defaults_are_the_product_of_categories() {
        let s = CondSpec {
            fields: vec![
                Field::categorical("a", vec!["x".into(), "y".into()]),
                Field::categorical("b", vec!["p".into(), "q".into(), "r".into()]),
            ],
        };
        let d = s.defaults();
        assert_eq!(d.len(), 6);
        assert_eq!(d[0], Condition(vec![Value::Class(0), Value::Class(0)]));
        assert_eq!(d[1], Condition(vec![Value::Class(0), Value::Class(1)]));
        assert_eq!(d[5], Condition(vec![Value::Class(1), Value::Class(2)]));
        assert_eq!(CondSpec::default().defaults(), vec![Condition(vec![])]);
    }

    #[test]
    fn label_dropout_per_field_or_all() {
        let s = spec();
        let c = s.parse("instrument=piano,celltype=K562,pitch=3").unwrap();
        let mut rng = crate::rng::Rng::new(1);
        let (mut partial, mut whole) = (0, 0);
        for _ in 0..2000 {
            let d = drop_condition(&c, 0.5, CondDrop::Each, &mut rng);
            let nulls = d.0.iter().filter(|v| **v == Value::Null).count();
            partial += (nulls == 1 || nulls == 2) as usize;
            let d = drop_condition(&c, 0.5, CondDrop::All, &mut rng);
            let nulls = d.0.iter().filter(|v| **v == Value::Null).count();
            assert!(nulls == 0 || nulls == 3);
            whole += (nulls == 3) as usize;
        }
        assert!((1300..1700).contains(&partial), "{partial}");
        assert!((850..1150).contains(&whole), "{whole}");
    }
}
