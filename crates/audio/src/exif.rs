//! The EXIF block of a PNG file (its `eXIf` chunk, a TIFF directory), with the value types
//! Pillow gives Riffusion's spectrogram tags: integers as SHORT when they fit (LONG
//! otherwise), floats as DOUBLE, text as ASCII, entries sorted by tag. Pillow writes
//! big-endian directories, sugarcube little-endian ones; both are read.

use anyhow::{bail, ensure};

/// One tag's value.
#[derive(Clone, Debug, PartialEq)]
pub enum ExifValue {
    /// An integer (SHORT, LONG, their signed forms or BYTE).
    Int(i64),
    /// A real number (DOUBLE, FLOAT or a RATIONAL).
    Float(f64),
    /// Text (ASCII).
    Text(String),
}

impl ExifValue {
    /// The value as a number, when it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ExifValue::Int(v) => Some(*v as f64),
            ExifValue::Float(v) => Some(*v),
            ExifValue::Text(_) => None,
        }
    }
}

/// TIFF bytes (`II*\0`, one directory) holding `tags`.
pub fn encode_tiff(tags: &[(u16, ExifValue)]) -> anyhow::Result<Vec<u8>> {
    let mut tags = tags.to_vec();
    tags.sort_by_key(|t| t.0);
    let n = tags.len();
    ensure!(n <= u16::MAX as usize, "too many EXIF tags");
    let mut out = b"II\x2a\x00\x08\x00\x00\x00".to_vec();
    out.extend((n as u16).to_le_bytes());
    let data_start = 8 + 2 + 12 * n + 4;
    let mut data: Vec<u8> = vec![];
    for (tag, value) in &tags {
        let (kind, count, bytes): (u16, u32, Vec<u8>) = match value {
            ExifValue::Int(v) if (0..65536).contains(v) => {
                (3, 1, (*v as u16).to_le_bytes().to_vec())
            }
            ExifValue::Int(v) if (-32767..32768).contains(v) => {
                (8, 1, (*v as i16).to_le_bytes().to_vec())
            }
            ExifValue::Int(v) if (0..=u32::MAX as i64).contains(v) => {
                (4, 1, (*v as u32).to_le_bytes().to_vec())
            }
            ExifValue::Int(v) => {
                ensure!(
                    i32::try_from(*v).is_ok(),
                    "EXIF tag {tag}: {v} does not fit 32 bits"
                );
                (9, 1, (*v as i32).to_le_bytes().to_vec())
            }
            ExifValue::Float(v) => (12, 1, v.to_le_bytes().to_vec()),
            ExifValue::Text(s) => {
                let mut b = s.as_bytes().to_vec();
                b.push(0);
                (2, b.len() as u32, b)
            }
        };
        out.extend(tag.to_le_bytes());
        out.extend(kind.to_le_bytes());
        out.extend(count.to_le_bytes());
        if bytes.len() <= 4 {
            let mut field = bytes.clone();
            field.resize(4, 0);
            out.extend(field);
        } else {
            let offset = data_start + data.len();
            out.extend((offset as u32).to_le_bytes());
            data.extend(&bytes);
            if data.len() % 2 == 1 {
                data.push(0);
            }
        }
    }
    out.extend(0u32.to_le_bytes());
    out.extend(data);
    Ok(out)
}

/// The tags of TIFF bytes (little- or big-endian; the first directory only). Malformed bytes
/// are an error, never a panic.
pub fn decode_tiff(bytes: &[u8]) -> anyhow::Result<Vec<(u16, ExifValue)>> {
    let bytes = bytes.strip_prefix(b"Exif\0\0").unwrap_or(bytes);
    ensure!(
        bytes.len() >= 8,
        "EXIF block of {} bytes is too short",
        bytes.len()
    );
    let little = match &bytes[..4] {
        b"II\x2a\x00" => true,
        b"MM\x00\x2a" => false,
        _ => bail!("EXIF block does not start with a TIFF header"),
    };
    let get = |at: usize, n: usize| -> anyhow::Result<&[u8]> {
        bytes
            .get(at..at.saturating_add(n))
            .ok_or_else(|| anyhow::anyhow!("EXIF block truncated at byte {at}"))
    };
    let u16_at = |at: usize| -> anyhow::Result<u16> {
        let b: [u8; 2] = get(at, 2)?.try_into()?;
        Ok(if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |at: usize| -> anyhow::Result<u32> {
        let b: [u8; 4] = get(at, 4)?.try_into()?;
        Ok(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let ifd = u32_at(4)? as usize;
    let n = u16_at(ifd)? as usize;
    let mut tags = vec![];
    for e in 0..n {
        let at = ifd + 2 + 12 * e;
        let (tag, kind, count) = (u16_at(at)?, u16_at(at + 2)?, u32_at(at + 4)? as usize);
        let size: usize = match kind {
            1 | 2 | 6 | 7 => 1,
            3 | 8 => 2,
            4 | 9 | 11 => 4,
            5 | 10 | 12 => 8,
            _ => continue, // unknown types are skipped, as TIFF readers do
        };
        let total = size
            .checked_mul(count)
            .ok_or_else(|| anyhow::anyhow!("EXIF tag {tag}: count {count} overflows"))?;
        let start = if total <= 4 {
            at + 8
        } else {
            u32_at(at + 8)? as usize
        };
        let raw = get(start, total)?;
        if count == 0 {
            continue;
        }
        let word = |k: usize| -> [u8; 4] {
            let mut b = [0u8; 4];
            b.copy_from_slice(&raw[k..k + 4]);
            b
        };
        let w32 = |k: usize| {
            if little {
                u32::from_le_bytes(word(k))
            } else {
                u32::from_be_bytes(word(k))
            }
        };
        let value = match kind {
            2 => ExifValue::Text(
                String::from_utf8_lossy(raw.split(|&b| b == 0).next().unwrap_or(&[])).to_string(),
            ),
            1 | 7 => ExifValue::Int(raw[0] as i64),
            6 => ExifValue::Int(raw[0] as i8 as i64),
            3 => ExifValue::Int(if little {
                u16::from_le_bytes([raw[0], raw[1]])
            } else {
                u16::from_be_bytes([raw[0], raw[1]])
            } as i64),
            8 => ExifValue::Int(if little {
                i16::from_le_bytes([raw[0], raw[1]])
            } else {
                i16::from_be_bytes([raw[0], raw[1]])
            } as i64),
            4 => ExifValue::Int(w32(0) as i64),
            9 => ExifValue::Int(w32(0) as i32 as i64),
            11 => ExifValue::Float(f32::from_bits(w32(0)) as f64),
            5 => ExifValue::Float(w32(0) as f64 / (w32(4).max(1)) as f64),
            10 => ExifValue::Float(w32(0) as i32 as f64 / (w32(4) as i32).max(1) as f64),
            _ => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&raw[..8]);
                ExifValue::Float(if little {
                    f64::from_le_bytes(b)
                } else {
                    f64::from_be_bytes(b)
                })
            }
        };
        tags.push((tag, value));
    }
    Ok(tags)
}

/// PNG bytes with an `eXIf` chunk holding `tiff` inserted after the header chunk (replacing
/// any there was).
pub fn png_with_exif(png: &[u8], tiff: &[u8]) -> anyhow::Result<Vec<u8>> {
    let chunks = png_chunks(png)?;
    let mut out = png[..8].to_vec();
    for (i, (kind, range)) in chunks.iter().enumerate() {
        if kind == b"eXIf" {
            continue;
        }
        out.extend(&png[range.clone()]);
        if i == 0 {
            out.extend((tiff.len() as u32).to_be_bytes());
            let mut body = b"eXIf".to_vec();
            body.extend(tiff);
            out.extend(&body);
            out.extend(crc32fast::hash(&body).to_be_bytes());
        }
    }
    Ok(out)
}

/// The `eXIf` chunk's bytes of a PNG file, if it has one.
pub fn exif_of_png(png: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    for (kind, range) in png_chunks(png)? {
        if &kind == b"eXIf" {
            return Ok(Some(png[range.start + 8..range.end - 4].to_vec()));
        }
    }
    Ok(None)
}

/// Each chunk of a PNG file: its type and the byte range of the whole chunk (length, type,
/// data, CRC).
fn png_chunks(png: &[u8]) -> anyhow::Result<Vec<([u8; 4], std::ops::Range<usize>)>> {
    ensure!(
        png.len() >= 8 && &png[..8] == b"\x89PNG\r\n\x1a\n",
        "not a PNG file (no PNG signature)"
    );
    let mut at = 8;
    let mut out = vec![];
    while at < png.len() {
        ensure!(at + 12 <= png.len(), "PNG chunk at byte {at} is truncated");
        let len = u32::from_be_bytes(png[at..at + 4].try_into()?) as usize;
        let end = at
            .checked_add(12)
            .and_then(|v| v.checked_add(len))
            .filter(|&e| e <= png.len())
            .ok_or_else(|| {
                anyhow::anyhow!("PNG chunk at byte {at} runs past the end of the file")
            })?;
        let kind: [u8; 4] = png[at + 4..at + 8].try_into()?;
        out.push((kind, at..end));
        at = end;
        if &kind == b"IEND" {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let tags = vec![
            (11000u16, ExifValue::Int(44100)),
            (11005, ExifValue::Int(0)),
            (11070, ExifValue::Float(0.25)),
            (11080, ExifValue::Float(3.1e7)),
            (11100, ExifValue::Text("{\"a\":1}".into())),
            (11200, ExifValue::Int(100_000)),
            (11201, ExifValue::Int(-5)),
        ];
        let back = decode_tiff(&encode_tiff(&tags).unwrap()).unwrap();
        assert_eq!(back, tags);
    }

    #[test]
    fn tiff_layout() {
        // one SHORT tag: header, count, entry (tag, type, count, value), no next directory
        let b = encode_tiff(&[(11000, ExifValue::Int(44100))]).unwrap();
        assert_eq!(
            b,
            [
                b"II\x2a\x00\x08\x00\x00\x00".as_slice(),
                &[1, 0],
                &11000u16.to_le_bytes(),
                &[3, 0, 1, 0, 0, 0],
                &44100u16.to_le_bytes(),
                &[0, 0],
                &[0, 0, 0, 0]
            ]
            .concat()
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            &b""[..],
            b"II*\0",
            b"II*\0\xff\xff\xff\xff",
            b"MM\0*\0\0\0\x08\0\x05",
        ] {
            assert!(decode_tiff(bad).is_err());
        }
        assert!(exif_of_png(b"not a png").is_err());
    }
}
