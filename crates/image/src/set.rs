//! [`ImageSet`]: a set of same-sized images in memory.

use anyhow::{bail, ensure};
use candle_core::{Device, Tensor};
use sugarcube_core::domain::DataInfo;
use sugarcube_core::rng::Rng;

/// Images of one size in memory, with optional class labels.
///
/// `images` holds `len() * channels * height * width` floats laid out `N x C x H x W`
/// (row-major, channels first), with values in [-1, 1]; -1 is black.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    /// Pixel values, `N x C x H x W`, in [-1, 1].
    pub images: Vec<f32>,
    /// One class id per image, when the set is labelled.
    pub labels: Option<Vec<u32>>,
    /// Class names indexed by class id (empty when unlabelled).
    pub class_names: Vec<String>,
    /// Channels per image: 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
}

impl ImageSet {
    /// Builds a set, checking that the buffer holds a whole number of images, that there is one
    /// label per image and that every label has a class name.
    pub fn new(
        images: Vec<f32>,
        labels: Option<Vec<u32>>,
        class_names: Vec<String>,
        channels: usize,
        height: usize,
        width: usize,
    ) -> anyhow::Result<Self> {
        let set = Self {
            images,
            labels,
            class_names,
            channels,
            height,
            width,
        };
        set.validate()?;
        Ok(set)
    }

    /// Checks the invariants that [`ImageSet::new`] promises.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.channels > 0 && self.height > 0 && self.width > 0,
            "image size must be positive, got {}x{}x{}",
            self.channels,
            self.height,
            self.width
        );
        let item = self.item_len();
        ensure!(
            self.images.len().is_multiple_of(item),
            "{} pixel values are not a whole number of {}x{}x{} images",
            self.images.len(),
            self.channels,
            self.height,
            self.width
        );
        if let Some(labels) = &self.labels {
            ensure!(
                labels.len() == self.len(),
                "{} labels for {} images",
                labels.len(),
                self.len()
            );
            if let Some(&max) = labels.iter().max() {
                ensure!(
                    (max as usize) < self.class_names.len(),
                    "label {max} has no class name ({} names given)",
                    self.class_names.len()
                );
            }
        }
        Ok(())
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len() / self.item_len().max(1)
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shape of one image: `[C, H, W]`.
    pub fn item_shape(&self) -> Vec<usize> {
        vec![self.channels, self.height, self.width]
    }

    /// Number of floats in one image (`C * H * W`).
    pub fn item_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The pixels of image `i` (`C x H x W`). Panics when `i >= len()`.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.item_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// Number of classes when labelled (the length of `class_names`), None otherwise.
    pub fn num_classes(&self) -> Option<usize> {
        self.labels.as_ref().map(|_| self.class_names.len())
    }

    /// Images per class id (empty when unlabelled).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes().unwrap_or(0)];
        for &y in self.labels.iter().flatten() {
            if counts.len() <= y as usize {
                counts.resize(y as usize + 1, 0); // a label without a name: count it anyway
            }
            counts[y as usize] += 1;
        }
        counts
    }

    /// The description a model needs: item shape and, when the set is labelled, one
    /// categorical condition field `class` with the class names.
    pub fn data_info(&self) -> DataInfo {
        let info = DataInfo::new(self.item_shape());
        match &self.labels {
            Some(_) => info.with_cond(sugarcube_core::cond::CondSpec::classes(
                "class",
                self.class_names.clone(),
            )),
            None => info,
        }
    }

    /// The images at `indices` as an `[B, C, H, W]` f32 tensor, with their labels as a `[B]`
    /// u32 tensor when the set is labelled.
    pub fn batch(
        &self,
        indices: &[usize],
        device: &Device,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            candle_core::bail!(
                "image index {bad} out of range: the set has {} images",
                self.len()
            );
        }
        let mut data = Vec::with_capacity(indices.len() * self.item_len());
        for &i in indices {
            data.extend_from_slice(self.image(i));
        }
        let x0 = Tensor::from_vec(
            data,
            (indices.len(), self.channels, self.height, self.width),
            device,
        )?;
        let labels = match &self.labels {
            Some(labels) => {
                let ys: Vec<u32> = indices.iter().map(|&i| labels[i]).collect();
                Some(Tensor::from_vec(ys, indices.len(), device)?)
            }
            None => None,
        };
        Ok((x0, labels))
    }

    /// A new set of the images at `indices` (in that order; repeats allowed), with the same
    /// class names.
    pub fn subset(&self, indices: &[usize]) -> anyhow::Result<ImageSet> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            bail!(
                "image index {bad} out of range: the set has {} images",
                self.len()
            );
        }
        let mut images = Vec::with_capacity(indices.len() * self.item_len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        let labels = self
            .labels
            .as_ref()
            .map(|l| indices.iter().map(|&i| l[i]).collect());
        Ok(ImageSet {
            images,
            labels,
            class_names: self.class_names.clone(),
            channels: self.channels,
            height: self.height,
            width: self.width,
        })
    }

    /// Pads every image symmetrically to `size x size` with the background value -1 (e.g. 28 ->
    /// 32 puts 2 pixels on each side); an odd surplus goes to the bottom / right.
    pub fn pad_to(&self, size: usize) -> anyhow::Result<ImageSet> {
        ensure!(
            size >= self.height && size >= self.width,
            "cannot pad {}x{} images to {size}x{size}: the target is smaller",
            self.height,
            self.width
        );
        let (top, left) = ((size - self.height) / 2, (size - self.width) / 2);
        let planes = self.len() * self.channels;
        let mut images = vec![-1.0f32; planes * size * size];
        for p in 0..planes {
            for r in 0..self.height {
                let src = (p * self.height + r) * self.width;
                let dst = (p * size + top + r) * size + left;
                images[dst..dst + self.width].copy_from_slice(&self.images[src..src + self.width]);
            }
        }
        Ok(ImageSet {
            images,
            labels: self.labels.clone(),
            class_names: self.class_names.clone(),
            channels: self.channels,
            height: size,
            width: size,
        })
    }

    /// A class-balanced random subset: `k` images of every class, drawn without replacement
    /// with `rng`, kept in their original order. Errors when the set is unlabelled or a class
    /// has fewer than `k` images.
    pub fn take_per_class(&self, k: usize, rng: &mut Rng) -> anyhow::Result<ImageSet> {
        let Some(labels) = &self.labels else {
            bail!("take_per_class needs a labelled image set");
        };
        self.validate()?;
        let mut by_class: Vec<Vec<usize>> = vec![vec![]; self.class_names.len()];
        for (i, &y) in labels.iter().enumerate() {
            by_class[y as usize].push(i);
        }
        let mut chosen = Vec::with_capacity(k * by_class.len());
        for (c, members) in by_class.iter_mut().enumerate() {
            ensure!(
                members.len() >= k,
                "class {c} ({}) has {} images, fewer than the {k} asked for",
                self.class_names[c],
                members.len()
            );
            rng.shuffle(members);
            chosen.extend_from_slice(&members[..k]);
        }
        chosen.sort_unstable();
        self.subset(&chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ImageSet {
        // 4 grayscale 2x3 images, image i filled with i / 10, labels 0, 1, 0, 1
        let images = (0..4).flat_map(|i| vec![i as f32 / 10.0; 6]).collect();
        ImageSet::new(
            images,
            Some(vec![0, 1, 0, 1]),
            vec!["a".into(), "b".into()],
            1,
            2,
            3,
        )
        .unwrap()
    }

    #[test]
    fn batch_subset_and_counts() -> anyhow::Result<()> {
        let s = tiny();
        assert_eq!(s.len(), 4);
        assert_eq!(s.item_shape(), vec![1, 2, 3]);
        let (x, y) = s.batch(&[2, 1], &Device::Cpu)?;
        assert_eq!(x.dims(), &[2, 1, 2, 3]);
        assert_eq!(
            x.flatten_all()?.to_vec1::<f32>()?[..7],
            [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.1]
        );
        assert_eq!(y.unwrap().to_vec1::<u32>()?, vec![0, 1]);
        assert!(s.batch(&[4], &Device::Cpu).is_err());
        let sub = s.subset(&[3, 3])?;
        assert_eq!(sub.labels, Some(vec![1, 1]));
        assert_eq!(sub.image(1), s.image(3));
        assert_eq!(s.class_counts(), vec![2, 2]);
        assert_eq!(s.data_info().cond.defaults().len(), 2);
        assert!(ImageSet::new(vec![0.0; 7], None, vec![], 1, 2, 3).is_err());
        assert!(ImageSet::new(vec![0.0; 6], Some(vec![2]), vec!["a".into()], 1, 2, 3).is_err());
        Ok(())
    }

    #[test]
    fn pad_28_to_32() -> anyhow::Result<()> {
        let s = ImageSet::new(vec![0.5; 2 * 28 * 28], None, vec![], 1, 28, 28)?;
        let p = s.pad_to(32)?;
        assert_eq!((p.len(), p.height, p.width), (2, 32, 32));
        let img = p.image(1);
        for r in 0..32 {
            for c in 0..32 {
                let inside = (2..30).contains(&r) && (2..30).contains(&c);
                assert_eq!(
                    img[r * 32 + c],
                    if inside { 0.5 } else { -1.0 },
                    "pixel ({r}, {c})"
                );
            }
        }
        assert!(s.pad_to(27).is_err());
        Ok(())
    }

    #[test]
    fn take_per_class_is_balanced_and_seeded() -> anyhow::Result<()> {
        let labels: Vec<u32> = (0..30).map(|i| (i % 3) as u32).collect();
        let images = (0..30).map(|i| i as f32).collect();
        let s = ImageSet::new(
            images,
            Some(labels),
            vec!["a".into(), "b".into(), "c".into()],
            1,
            1,
            1,
        )?;
        let a = s.take_per_class(4, &mut Rng::new(5))?;
        let b = s.take_per_class(4, &mut Rng::new(5))?;
        assert_eq!(a, b);
        assert_eq!(a.class_counts(), vec![4, 4, 4]);
        assert!(
            a.images.windows(2).all(|w| w[0] < w[1]),
            "original order kept"
        );
        assert!(s.take_per_class(11, &mut Rng::new(5)).is_err());
        Ok(())
    }
}
