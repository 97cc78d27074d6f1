//! Images made by Riffusion's own code (scripts/riffusion-fixture.py runs its image_util and
//! SpectrogramParams): sugarcube encodes the same spectrograms to the same pixels, reads the
//! parameters from Riffusion's EXIF block, and decodes the images back to the spectrograms.

use serde_json::Value;
use sugarcube_audio::codec::{decode_pixels, encode_pixels, png_of, read_image, MelSpectrogram};
use sugarcube_audio::SpectrogramParams;

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The fixture's spectrogram (`[channel][bin][frame]`) as a [`MelSpectrogram`].
fn spectrogram(name: &str) -> MelSpectrogram {
    let all: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("riffusion-spectrograms.json")).unwrap(),
    )
    .unwrap();
    let chans = all[name].as_array().unwrap();
    let bins = chans[0].as_array().unwrap().len();
    let frames = chans[0][0].as_array().unwrap().len();
    let channels = chans
        .iter()
        .map(|c| {
            let mut v = vec![0f32; frames * bins];
            for (m, row) in c.as_array().unwrap().iter().enumerate() {
                for (t, x) in row.as_array().unwrap().iter().enumerate() {
                    v[t * bins + m] = x.as_f64().unwrap() as f32;
                }
            }
            v
        })
        .collect();
    MelSpectrogram {
        frames,
        n_mels: bins,
        channels,
    }
}

#[test]
fn riffusion_images_decode_and_encode_alike() {
    for (name, stereo) in [("mono", false), ("stereo", true)] {
        let file = fixtures().join(format!("riffusion-{name}.png"));
        let bytes = std::fs::read(&file).unwrap();
        let (px, exif) = read_image(&bytes, name).unwrap();
        let (params, max) = exif.expect("Riffusion's EXIF parameters");
        let mut expected = SpectrogramParams::riffusion();
        expected.preset = "exif".into();
        expected.stereo = stereo;
        assert_eq!(params, expected, "{name}: parameters from EXIF");
        assert_eq!((px.width, px.height, px.channels), (16, 512, 3));

        let spec = spectrogram(name);
        assert_eq!(
            max,
            Some(spec.max() as f64),
            "{name}: the maximum in tag 11080"
        );

        // the same spectrogram gives Riffusion's pixels
        let (ours, our_max) = encode_pixels(&params, &spec).unwrap();
        assert_eq!(our_max, spec.max() as f64);
        let differ = ours
            .data
            .iter()
            .zip(&px.data)
            .filter(|(a, b)| a != b)
            .count();
        let worst = ours
            .data
            .iter()
            .zip(&px.data)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(
            worst <= 1 && differ * 1000 <= px.data.len(),
            "{name}: {differ} of {} bytes differ (by up to {worst})",
            px.data.len()
        );

        // and the image decodes to the spectrogram, within one grey level
        let back = decode_pixels(&params, &px, max.unwrap()).unwrap();
        let peak = spec.max();
        for (c, (a, b)) in back.channels.iter().zip(&spec.channels).enumerate() {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                // one grey level at the value's own position on the power curve
                let level = (y / peak).powf(0.25);
                let step = ((level + 1.0 / 255.0).powf(4.0) - level.powf(4.0)) * peak;
                assert!(
                    (x - y).abs() <= step * 1.01 + 1.0,
                    "{name} channel {c} value {i}: {x} vs {y}"
                );
            }
        }

        // sugarcube's own PNG of it reads back with the same parameters
        let png = png_of(&params, &ours, our_max).unwrap();
        let (px2, exif2) = read_image(&png, "ours").unwrap();
        assert_eq!(px2, ours);
        assert_eq!(exif2.unwrap(), (params, Some(our_max)));
    }
}
