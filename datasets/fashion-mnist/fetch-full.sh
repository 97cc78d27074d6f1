#!/usr/bin/env bash
# Fetches the full Fashion-MNIST set (60,000 training + 10,000 test images) on a Debian
# machine into datasets/fashion-mnist/full/, from the Debian package dataset-fashion-mnist.
# The package is downloaded and unpacked, not installed; nothing outside full/ is changed
# (apart from `apt-get update` refreshing the package lists, which needs root).
#
# Usage: datasets/fashion-mnist/fetch-full.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="$here/full"
files="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ "$(id -u)" = 0 ]; then apt-get update -qq; else echo "not root: using the current package lists"; fi
# apt-get download writes into the current folder; _apt must be able to write there
chmod 777 "$work"
(cd "$work" && apt-get download dataset-fashion-mnist)
dpkg-deb -x "$work"/dataset-fashion-mnist_*.deb "$work/pkg"

mkdir -p "$dest"
for f in $files; do
    cp "$work/pkg/usr/share/datasets/fashion-mnist/$f" "$dest/$f"
done
echo "Fashion-MNIST ($(dpkg-deb -f "$work"/dataset-fashion-mnist_*.deb Version)) written to $dest:"
ls -l "$dest"
