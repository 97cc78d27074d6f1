//! Every parser of user files fed random and mutated bytes: WAV files, PNG spectrogram images
//! (with their EXIF blocks), bare EXIF blocks and SF2 soundfonts give errors (naming the file),
//! never panics.

use sugarcube_audio::codec::{images_of_clip, read_image};
use sugarcube_audio::exif::decode_tiff;
use sugarcube_audio::render::Renderer;
use sugarcube_audio::wav::{encode_wav, parse_wav, WavFormat};
use sugarcube_audio::{Audio, SpectrogramParams};
use sugarcube_core::rng::Rng;

fn mutate(good: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = good.to_vec();
    match rng.below(4) {
        0 => {
            let n = rng.below(b.len() as u64 + 1) as usize;
            b.truncate(n);
        }
        1 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len() as u64) as usize;
                b[i] = rng.next_u64() as u8;
            }
        }
        2 => {
            let i = rng.below(b.len() as u64) as usize;
            let junk: Vec<u8> = (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect();
            b.splice(i..i, junk);
        }
        _ => {
            // a length or offset field set huge
            let i = rng.below(b.len().saturating_sub(4) as u64) as usize;
            b[i..i + 4].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
        }
    }
    b
}

#[test]
fn parsers_never_panic() {
    let mut rng = Rng::named(0, "audio-fuzz");
    let clip = Audio {
        rate: 8000,
        channels: vec![(0..4000).map(|i| ((i as f32) * 0.05).sin() * 0.3).collect(); 2],
    };
    let wavs = [
        encode_wav(&clip, WavFormat::Int16).unwrap(),
        encode_wav(&clip, WavFormat::Float32).unwrap(),
    ];
    let mut p = SpectrogramParams::cpu();
    p.stereo = true;
    let png = images_of_clip(&p, &clip, false).unwrap().remove(0);
    let riffusion = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/riffusion-mono.png"),
    )
    .unwrap();
    // an error must say which file it is about
    let names = |r: anyhow::Result<()>, source: &str| {
        if let Err(e) = r {
            let text = format!("{e:#}");
            assert!(
                text.contains(source),
                "an error that does not name {source}: {text}"
            );
        }
    };
    for round in 0..1500 {
        let random: Vec<u8> = (0..rng.below(200)).map(|_| rng.next_u64() as u8).collect();
        assert!(parse_wav(&random, "random.wav").is_err());
        names(parse_wav(&random, "random.wav").map(|_| ()), "random.wav");
        assert!(read_image(&random, "random.png").is_err());
        names(read_image(&random, "random.png").map(|_| ()), "random.png");
        if let Err(e) = decode_tiff(&random) {
            assert!(!format!("{e:#}").is_empty());
        }
        let w = mutate(&wavs[round % 2], &mut rng);
        names(parse_wav(&w, "mutated.wav").map(|_| ()), "mutated.wav");
        let img = mutate(if round % 2 == 0 { &png } else { &riffusion }, &mut rng);
        names(read_image(&img, "mutated.png").map(|_| ()), "mutated.png");
        let exif_start = 8 + 25; // after the PNG signature and header chunk
        let _ = decode_tiff(&img[exif_start.min(img.len())..]);
    }
}

#[test]
fn damaged_soundfonts_are_errors() {
    let dir = std::env::temp_dir().join(format!("sugarcube-sf2-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng::named(1, "sf2-fuzz");
    // a RIFF/sfbk header with random chunks after it, and plain noise
    for i in 0..40 {
        let mut bytes: Vec<u8> = if i % 2 == 0 {
            b"RIFF\x00\x10\x00\x00sfbkLIST".to_vec()
        } else {
            vec![]
        };
        bytes.extend((0..rng.below(600)).map(|_| rng.next_u64() as u8));
        let path = dir.join(format!("bad-{i}.sf2"));
        std::fs::write(&path, &bytes).unwrap();
        let e = Renderer::open(&path, 16000).err().expect("not a soundfont");
        assert!(format!("{e:#}").contains("bad-"), "{e:#}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
