#!/usr/bin/env python3
"""Cut the committed class-balanced Fashion-MNIST subset from the full IDX files.

Usage: make-subset.py SRC_DIR [DST_DIR] [--train-per-class 600] [--test-per-class 100]

SRC_DIR holds the four gzipped IDX files of the full set (as installed by the Debian
package `dataset-fashion-mnist` in /usr/share/datasets/fashion-mnist/, or fetched by
fetch-full.sh into full/). DST_DIR defaults to the folder of this script.

The cut is deterministic: for each split, walk the file in order and keep an image when
fewer than k images of its class have been kept so far (the first k per class in file
order). The kept images stay in file order. Output files are written gzipped with
mtime 0, so the same input gives byte-identical output.

Plain python3 (gzip, struct); no numpy needed.
"""

import argparse
import gzip
import os
import struct
import sys

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def read_gz(path):
    with gzip.open(path, "rb") as f:
        return f.read()


def read_images(path):
    data = read_gz(path)
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != IMAGES_MAGIC:
        sys.exit(f"{path}: magic {magic:#010x}, expected {IMAGES_MAGIC:#010x}")
    size = rows * cols
    if len(data) != 16 + n * size:
        sys.exit(f"{path}: {len(data)} bytes, header says {16 + n * size}")
    return [data[16 + i * size:16 + (i + 1) * size] for i in range(n)], rows, cols


def read_labels(path):
    data = read_gz(path)
    magic, n = struct.unpack(">II", data[:8])
    if magic != LABELS_MAGIC:
        sys.exit(f"{path}: magic {magic:#010x}, expected {LABELS_MAGIC:#010x}")
    if len(data) != 8 + n:
        sys.exit(f"{path}: {len(data)} bytes, header says {8 + n}")
    return list(data[8:])


def write_gz(path, payload):
    # mtime=0 and no file name in the header: reproducible bytes.
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as f:
            f.write(payload)


def cut(src, dst, split, per_class):
    images, rows, cols = read_images(os.path.join(src, f"{split}-images-idx3-ubyte.gz"))
    labels = read_labels(os.path.join(src, f"{split}-labels-idx1-ubyte.gz"))
    if len(images) != len(labels):
        sys.exit(f"{split}: {len(images)} images but {len(labels)} labels")
    counts = {}
    keep = []
    for i, y in enumerate(labels):
        if counts.get(y, 0) < per_class:
            counts[y] = counts.get(y, 0) + 1
            keep.append(i)
    short = {c: n for c, n in counts.items() if n < per_class}
    if short:
        sys.exit(f"{split}: classes with fewer than {per_class} images: {short}")
    n = len(keep)
    write_gz(os.path.join(dst, f"{split}-images-idx3-ubyte.gz"),
             struct.pack(">IIII", IMAGES_MAGIC, n, rows, cols) + b"".join(images[i] for i in keep))
    write_gz(os.path.join(dst, f"{split}-labels-idx1-ubyte.gz"),
             struct.pack(">II", LABELS_MAGIC, n) + bytes(labels[i] for i in keep))
    print(f"{split}: kept {n} of {len(images)} images ({per_class} per class, {len(counts)} classes), "
          f"last source index {keep[-1]}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("dst", nargs="?", default=os.path.dirname(os.path.abspath(__file__)))
    p.add_argument("--train-per-class", type=int, default=600)
    p.add_argument("--test-per-class", type=int, default=100)
    a = p.parse_args()
    os.makedirs(a.dst, exist_ok=True)
    cut(a.src, a.dst, "train", a.train_per_class)
    cut(a.src, a.dst, "t10k", a.test_per_class)


if __name__ == "__main__":
    main()
