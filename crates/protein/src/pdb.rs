//! Backbones written as PDB files that PyMOL, DSSP and TM-align read: one MODEL, ATOM records
//! in the standard columns for N, CA, C and O of each residue (O placed by ideal geometry in
//! the peptide plane), TER, no CONECT records; a HEADER line first (DSSP 4 requires it) and a
//! unit CRYST1.

use crate::nerf::place;
use crate::structure::Backbone;
use crate::Vec3;
use anyhow::ensure;
use std::fmt::Write;
use std::path::Path;
use sugarcube_core::checkpoint::write_atomic;

/// C=O bond length, Å.
pub const C_O: f64 = 1.231;
/// CA-C-O angle, degrees.
pub const CA_C_O_DEGREES: f64 = 120.5;

/// The carbonyl O of residue `i`: in the plane of CA(i), C(i), N(i+1), anti to N(i+1); for
/// the last residue anti to its own N across the CA-C bond.
pub fn carbonyl_oxygens(chain: &Backbone) -> Vec<Vec3> {
    let r = &chain.residues;
    let angle = CA_C_O_DEGREES.to_radians();
    (0..r.len())
        .map(|i| {
            let reference = r.get(i + 1).map_or(r[i].n, |next| next.n);
            place(reference, r[i].ca, r[i].c, C_O, angle, std::f64::consts::PI)
        })
        .collect()
}

/// The PDB text of `chain` as chain `chain_id`.
pub fn pdb_text(chain: &Backbone, chain_id: char) -> anyhow::Result<String> {
    let oxygens = carbonyl_oxygens(chain);
    let mut out = String::new();
    // DSSP 4 takes a file for PDB only when it starts with HEADER
    let header = format!("HEADER    {:<40}{:>9}   {}", "BACKBONE", "", "XXXX");
    let _ = writeln!(out, "{header:<80}");
    let _ = writeln!(
        out,
        "REMARK   1 {}",
        chain.id.chars().take(68).collect::<String>()
    );
    let _ = writeln!(
        out,
        "CRYST1    1.000    1.000    1.000  90.00  90.00  90.00 P 1           1"
    );
    let _ = writeln!(out, "MODEL        1");
    let mut serial = 1;
    for (i, (res, o)) in chain.residues.iter().zip(&oxygens).enumerate() {
        let number = i + 1;
        ensure!(
            number <= 9999,
            "a chain of more than 9999 residues does not fit PDB columns"
        );
        for (name, element, xyz) in [
            (" N  ", "N", res.n),
            (" CA ", "C", res.ca),
            (" C  ", "C", res.c),
            (" O  ", "O", *o),
        ] {
            ensure!(
                xyz.iter().all(|v| v.is_finite() && v.abs() < 9999.0),
                "residue {number}: coordinates {xyz:?} do not fit PDB columns"
            );
            let _ = writeln!(
                out,
                "ATOM  {serial:>5} {name} {:>3} {chain_id}{number:>4}    {:>8.3}{:>8.3}{:>8.3}{:>6.2}{:>6.2}          {element:>2}",
                res.name, xyz[0], xyz[1], xyz[2], 1.0, 0.0
            );
            serial += 1;
        }
    }
    if let Some(last) = chain.residues.last() {
        let _ = writeln!(
            out,
            "TER   {serial:>5}      {:>3} {chain_id}{:>4}",
            last.name,
            chain.residues.len()
        );
    }
    let _ = writeln!(out, "ENDMDL");
    let _ = writeln!(out, "END");
    Ok(out)
}

/// Writes `chain` as a PDB file, gzipped when the name ends in `.gz` (through a temporary
/// file and a rename).
pub fn write_pdb(path: &Path, chain: &Backbone) -> anyhow::Result<()> {
    let text = pdb_text(chain, 'A')
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
    {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(vec![], flate2::Compression::best());
        gz.write_all(text.as_bytes())?;
        write_atomic(path, &gz.finish()?)
    } else {
        write_atomic(path, text.as_bytes())
    }
}
