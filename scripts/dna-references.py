#!/usr/bin/env python3
"""Reference values for the unit tests of crates/dna (printed, pasted into the tests).

Needs numpy, scipy and, for the FIMO part, pymemesuite (Python bindings of the MEME suite):
    pip install numpy scipy pymemesuite
Run from the repository root:  python3 scripts/dna-references.py
Values in the tests were made with numpy 2.4.6, scipy 1.17.1, pymemesuite 0.1.0a4.
"""
import itertools

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr
from scipy.stats import ks_2samp, wasserstein_distance


def rc(s):
    return s[::-1].translate(str.maketrans("ACGT", "TGCA"))


def kmer_counts(seqs, k, canonical=False):
    kmers = ["".join(p) for p in itertools.product("ACGT", repeat=k)]
    c = dict.fromkeys(kmers, 0)
    for s in seqs:
        for i in range(len(s) - k + 1):
            w = s[i:i + k]
            c[min(w, rc(w)) if canonical else w] += 1
    return np.array([c[x] for x in kmers], float)


def kmer_refs():
    a = ["CAGATTTTCATATTATGCAGAAAATCTACTTCGCCTGATACGAGTCGGTTATCTTCGGAT",
         "ACTGTATAGTCCCACCTGGTGATCCTATGCTTGTGAGTACCCAGAAAATAGCGACGGACC",
         "GCGGTGTTAAGTGTCGAGCTACATCACTTCTCATGTAGCCAGAAGGCTGCAACTCATCGA"]
    b = ["CAGATTTTCATATTATGCAGAAAATCTACTCTCTATGTAGTGACCGCGTCGATGTCAAAC",
         "CCCGGGGGGAGCTCAGATATGATCCTATGCTTGTGAGTACCCAGAAAATAGCGACGGACC",
         "AACATTGATTATACCCTTAGCAACATTAAGAAAATGAAGATAATAGGTCTCTGCAATCAA"]
    print("kmer.rs JS_SMALL", repr(float(jensenshannon([1, 2, 3, 0], [0, 1, 1, 2], base=2))))
    per_k = [float(jensenshannon(kmer_counts(a, k), kmer_counts(b, k), base=2)) for k in range(1, 8)]
    print("kmer.rs JS_PER_K", per_k, "JS_K6", per_k[5], "JS_MEAN", float(np.mean(per_k)))
    print("kmer.rs JS_K2_CANONICAL",
          float(jensenshannon(kmer_counts(a, 2, True), kmer_counts(b, 2, True), base=2)))


def compare_motif_list(a, b):
    """DNA-Diffusion's compare_motif_list on per-motif totals over one motif list."""
    keep = [i for i in range(len(a)) if a[i] > 0 or b[i] > 0]
    pa = np.array([a[i] if a[i] > 0 else 1 for i in keep], float)
    pb = np.array([b[i] if b[i] > 0 else 1 for i in keep], float)
    return float(np.sum(rel_entr(pa / pa.sum(), pb / pb.sum())))


def metrics_refs():
    a = [0.1, 0.4, 0.4, 0.55, 0.9]
    b = [0.3, 0.35, 0.6, 0.8]
    print("metrics.rs W1_AB", wasserstein_distance(a, b), "KS_AB", ks_2samp(a, b).statistic)
    gc = lambda s: sum(c in "GC" for c in s) / len(s)
    print("metrics.rs W1_GC", wasserstein_distance([gc(s) for s in ["ACGT", "AATG", "GCGC"]],
                                                   [gc(s) for s in ["GGCA", "ATGC"]]))
    g, r = [3, 0, 4, 0, 10], [5, 0, 0, 2, 1]
    print("metrics.rs KL_GR", compare_motif_list(g, r), "KL_RG", compare_motif_list(r, g))


MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.s = seed

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        zone = MASK - (MASK % n)
        while True:
            v = self.next()
            if v < zone:
                return v % n


def read_jaspar(path):
    out, cur = [], None
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        if line.startswith(">"):
            cur = {"id": line[1:].split()[0], "name": line[1:].split(None, 1)[1], "rows": {}}
            out.append(cur)
        else:
            cur["rows"][line[0]] = [float(x) for x in line[line.index("[") + 1:line.index("]")].split()]
    return out


def fimo_refs(own_pseudocounts=True):
    """FIMO hits on a splitmix64(2024) sequence. With own_pseudocounts the MEME file holds our
    per-column (c + 0.1 / 4) / (N + 0.1) and FIMO adds none (exact check of the scaling, DP and
    scan); otherwise FIMO's own pseudocount 0.1 with nsites = the first column's total (equal to
    ours for matrices whose columns all have the same total)."""
    from pymemesuite.common import Array, Background, MotifFile, Sequence
    from pymemesuite.fimo import FIMO

    motifs = read_jaspar("crates/dna/data/markers.jaspar")
    path = "/tmp/dna-metrics-markers.meme"
    with open(path, "w") as f:
        f.write("MEME version 4\n\nALPHABET= ACGT\n\nstrands: + -\n\n"
                "Background letter frequencies\nA 0.25 C 0.25 G 0.25 T 0.25\n\n")
        for m in motifs:
            rows = m["rows"]
            w = len(rows["A"])
            n1 = sum(rows[b][0] for b in "ACGT")
            f.write(f"MOTIF {m['id']} {m['name']}\n"
                    f"letter-probability matrix: alength= 4 w= {w} nsites= {int(round(n1))} E= 0\n")
            for j in range(w):
                tot = sum(rows[b][j] for b in "ACGT")
                if own_pseudocounts:
                    p = [(rows[b][j] + 0.1 * 0.25) / (tot + 0.1) for b in "ACGT"]
                else:
                    p = [rows[b][j] / tot for b in "ACGT"]
                f.write(" ".join(repr(x) for x in p) + "\n")
            f.write("\n")
    rng = SplitMix64(2024)
    seq = "".join("ACGT"[rng.below(4)] for _ in range(2000))
    mf = MotifFile(path, pseudocount=0.0 if own_pseudocounts else 0.1)
    read = []
    while (m := mf.read()) is not None:
        read.append(m)
    # MotifFile.background defaults to NRDB frequencies: pass the uniform one explicitly.
    bg = Background(read[0].alphabet, Array([0.25] * 4))
    fimo = FIMO(both_strands=True, threshold=1e-3)
    print(f"motif.rs FIMO_HITS (own pseudocounts: {own_pseudocounts})")
    for m in read:
        for me in fimo.score_motif(m, [Sequence(seq, name=b"s")], bg).matched_elements:
            left = min(me.start, me.stop) - 1
            fwd = "true" if me.strand == "+" else "false"
            print(f'("{m.accession.decode()}", {left}, {fwd}, {me.score:.4f}, {me.pvalue:.6e}),')


if __name__ == "__main__":
    kmer_refs()
    metrics_refs()
    fimo_refs(True)
    fimo_refs(False)
