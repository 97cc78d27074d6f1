#!/bin/sh
# The planted-motif DNA benchmark (experiments/dna-celltypes.toml) from Biostrings' fruit-fly
# promoters (Debian package r-bioc-biostrings, Artistic-2.0: "dm3_upstream2000.fa.gz, 2 kb
# upstream of the transcription starts of dm3 genes", Bioconductor Biostrings 2.66.0) and the
# JASPAR 2024 marker matrices bundled in crates/dna/data (CC-BY 4.0). Writes
# datasets/dna/celltypes/{train,test}.fa (8,000 + 2,000 sequences of 200 bp).
set -e
BG=${1:-/usr/lib/R/site-library/Biostrings/extdata/dm3_upstream2000.fa.gz}
if [ ! -f "$BG" ]; then
  echo "no $BG: install Debian's r-bioc-biostrings (apt-get install r-bioc-biostrings) or pass the file" >&2
  exit 1
fi
cd "$(dirname "$0")/../.."
cargo run --release --quiet -- dna benchmark "$BG" datasets/dna/celltypes --count 8000 --test-count 2000 --seed 0
