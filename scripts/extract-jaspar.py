#!/usr/bin/env python3
"""Extract the marker motifs used by sugarcube-dna from JASPAR 2024.

Provenance of crates/dna/data/markers.jaspar. The JASPAR 2024 database ships inside the
pyjaspar wheel (no network access to jaspar.elixir.no needed):

    pip download pyjaspar==4.0.0 --no-deps -d /tmp/pyjaspar
    cd /tmp/pyjaspar && unzip -o pyjaspar-4.0.0-py3-none-any.whl
    python3 scripts/extract-jaspar.py /tmp/pyjaspar/pyjaspar/data/JASPAR2024.sqlite \
        crates/dna/data/markers.jaspar

For each (base ID, expected name) below the script takes the latest version of that base ID
that is part of the 2024 release (MATRIX_VERSION.RELEASE = '2024'), checks that it is in the
CORE collection, vertebrates tax group, and that its name matches (case-insensitively), and
writes it in the JASPAR text format (header `>ID.version<TAB>name`, then rows A, C, G, T).
Base IDs are pinned because some names have several matrices (HNF4A: MA0114 is the classic
DR1 matrix from ChIP-seq, MA1494 a HT-SELEX variant; we take MA0114).

JASPAR data is CC-BY 4.0. Cite: Rauluseviciute I. et al. JASPAR 2024: 20th anniversary of the
open-access database of transcription factor binding profiles. Nucleic Acids Res. 2024;52(D1):
D174-D182. doi:10.1093/nar/gkad1059
"""
import sqlite3
import sys

# (base ID, name as used in the benchmark / janggu notes)
MOTIFS = [
    ("MA0140", "GATA1::TAL1"),   # K562 marker
    ("MA0114", "HNF4A"),         # HepG2 marker
    ("MA0047", "FOXA2"),         # HepG2 marker
    ("MA0080", "SPI1"),          # GM12878 marker (JASPAR 2024 spells the latest version Spi1)
    ("MA1419", "IRF4"),          # GM12878 marker
    ("MA0142", "POU5F1::SOX2"),  # hESC marker; also janggu's Oct4 example (Pou5f1::Sox2)
    ("MA1115", "POU5F1"),        # janggu (Oct4 peaks)
    ("MA0496", "MAFK"),          # janggu (Mafk peaks)
    ("MA1520", "MAF"),           # janggu: a MAF family member
]


def main(db_path, out_path):
    con = sqlite3.connect(db_path)
    out = []
    for base_id, want in MOTIFS:
        rows = con.execute(
            """select m.ID, m.VERSION, m.NAME, m.COLLECTION from MATRIX m
               where m.BASE_ID = ? and exists (select 1 from MATRIX_VERSION v
                     where v.ID = m.ID and v.RELEASE = '2024')
               order by m.VERSION desc""",
            (base_id,),
        ).fetchall()
        if not rows:
            sys.exit(f"{base_id}: not in the 2024 release")
        mid, version, name, collection = rows[0]
        tax = [r[0] for r in con.execute(
            "select VAL from MATRIX_ANNOTATION where ID = ? and TAG = 'tax_group'", (mid,))]
        if collection.upper() != "CORE" or "vertebrates" not in tax:
            sys.exit(f"{base_id}.{version} {name}: collection {collection}, tax group {tax}")
        if name.upper() != want.upper():
            sys.exit(f"{base_id}.{version}: name {name}, expected {want}")
        cols = {}
        for row, col, val in con.execute(
                "select row, col, val from MATRIX_DATA where ID = ?", (mid,)):
            cols.setdefault(row.upper(), {})[int(col)] = val
        width = len(cols["A"])
        out.append(f">{base_id}.{version}\t{name}")
        for base in "ACGT":
            vals = [cols[base][i] for i in range(1, width + 1)]
            text = " ".join(str(int(v)) if float(v).is_integer() else f"{v:g}" for v in vals)
            out.append(f"{base}  [ {text} ]")
        print(f"{base_id}.{version}\t{name}\twidth {width}", file=sys.stderr)
    with open(out_path, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: extract-jaspar.py JASPAR2024.sqlite OUT.jaspar")
    main(sys.argv[1], sys.argv[2])
