"""Spectrogram images made by Riffusion's own code, for crates/audio's compatibility test.

Usage: python scripts/riffusion-fixture.py RIFFUSION_CHECKOUT OUT_DIR

Imports riffusion/util/image_util.py and riffusion/spectrogram_params.py from a checkout of
riffusion-hobby (they need only numpy and Pillow), turns two small deterministic spectrograms
(mono and stereo, 512 mel bins x 16 frames) into images with `image_from_spectrogram`, stores
Riffusion's parameters and the maximum in EXIF exactly as `SpectrogramImageConverter` does, and
saves them as riffusion's cli does (`image.save(path, exif=image.getexif(), format="PNG")`).
The spectrograms go to spectrograms.json beside them.
"""
import json
import sys

import numpy as np

sys.path.insert(0, sys.argv[1])
from riffusion.spectrogram_params import SpectrogramParams  # noqa: E402
from riffusion.util import image_util  # noqa: E402

out = sys.argv[2]
rng = np.random.default_rng(0)
frames, bins = 16, 512
t = np.arange(frames)[None, :]
f = np.arange(bins)[:, None]
base = np.exp(-f / 90.0) * (1.0 + 0.5 * np.sin(t / 3.0)) * 2.0e6
lines = sum(np.exp(-((f - c) ** 2) / 8.0) * 8.0e6 for c in (40, 81, 122, 163))
noise = rng.uniform(0.0, 1.0e5, size=(bins, frames))
mono = (base + lines + noise)[None].astype(np.float32)
stereo = np.concatenate([mono, (mono * 0.5 + rng.uniform(0, 2e5, size=mono.shape)).astype(np.float32)])

record = {}
for name, spec, stereo_flag in (("mono", mono, False), ("stereo", stereo, True)):
    params = SpectrogramParams(stereo=stereo_flag)
    image = image_util.image_from_spectrogram(spec, power=params.power_for_image)
    exif_data = params.to_exif()
    exif_data[SpectrogramParams.ExifTags.MAX_VALUE.value] = float(np.max(spec))
    exif = image.getexif()
    exif.update(exif_data.items())
    image.save(f"{out}/riffusion-{name}.png", exif=image.getexif(), format="PNG")
    record[name] = spec.tolist()
json.dump(record, open(f"{out}/riffusion-spectrograms.json", "w"))
