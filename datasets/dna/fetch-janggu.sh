#!/bin/sh
# Real regulatory DNA in two classes: the ChIP-seq peak sequences that ship with janggu 0.10.2
# (PyPI wheel, GPL-3.0; Kopp et al. 2020, "Deep learning for genomics using Janggu", Nature
# Communications 11, 3488): janggu/resources/sample.fa (3,897 Oct4 peaks) and sample2.fa
# (3,900 Mafk peaks), with sample_test.fa and sample2_test.fa (100 + 100 held out), all
# 200 bp. sugarcube is MIT/Apache, so the files are fetched here, never committed:
# datasets/dna/janggu/ is ignored by git. Needs pip and the PyPI registry (or pass a wheel).
#   sh datasets/dna/fetch-janggu.sh [janggu-0.10.2-py2.py3-none-any.whl]
set -e
cd "$(dirname "$0")"
OUT=janggu
WHEEL=$1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if [ -z "$WHEEL" ]; then
  python3 -m pip download --quiet --no-deps -d "$TMP" janggu==0.10.2
  WHEEL=$(ls "$TMP"/janggu-0.10.2-*.whl)
fi
python3 - "$WHEEL" "$OUT" <<'PY'
import sys, zipfile, os, hashlib
wheel, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
names = {"sample.fa": "oct4.fa", "sample_test.fa": "oct4_test.fa",
         "sample2.fa": "mafk.fa", "sample2_test.fa": "mafk_test.fa"}
with zipfile.ZipFile(wheel) as z:
    for src, dst in names.items():
        data = z.read("janggu/resources/" + src)
        tmp = os.path.join(out, dst + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(out, dst))
        print(f"{out}/{dst}: {data.count(b'>')} sequences, sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    lic = z.read("janggu-0.10.2.dist-info/LICENSE")
    with open(os.path.join(out, "LICENSE-janggu"), "wb") as f:
        f.write(lic)
PY
