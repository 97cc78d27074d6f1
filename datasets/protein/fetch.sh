#!/usr/bin/env sh
# Real protein chains for sugarcube-protein, fetched rather than committed (see ../../shared
# notes in the README): run from the repository root, `sh datasets/protein/fetch.sh`.
#
# - mdanalysis-dssp/: the 51 curated single chains of MDAnalysisTests 2.11.0
#   (MDAnalysisTests/data/dssp/*.pdb.gz, 79-173 residues) with their reference three-state
#   secondary structure (*.pdb.dssp), from the PyPI sdist (about 60 MB; MDAnalysis' test data
#   is under GPL-family licences, so it stays out of the repository).
# - prody/: the PDB and mmCIF files of Debian's python3-prody-tests, when that package is
#   installed (apt-get install python3-prody-tests).
set -eu
here="$(dirname "$0")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: mdanalysistests==2.11.0 -d "$tmp"
mkdir -p "$here/mdanalysis-dssp"
tar xzf "$tmp"/mdanalysistests-2.11.0.tar.gz -C "$tmp" --wildcards '*/MDAnalysisTests/data/dssp/*'
cp "$tmp"/mdanalysistests-2.11.0/MDAnalysisTests/data/dssp/* "$here/mdanalysis-dssp/"
echo "wrote $(ls "$here/mdanalysis-dssp" | grep -c '\.pdb\.gz$') chains to $here/mdanalysis-dssp"
prody=/usr/lib/python3/dist-packages/prody/tests/datafiles
if [ -d "$prody" ]; then
    mkdir -p "$here/prody"
    cp "$prody"/pdb*.pdb "$prody"/mmcif_*.cif "$here/prody/"
    echo "copied $(ls "$here/prody" | wc -l) ProDy test structures to $here/prody"
else
    echo "python3-prody-tests is not installed: skipped the ProDy structures"
fi
