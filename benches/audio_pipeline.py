#!/usr/bin/env python3
"""Riffusion's spectrogram conversions in PyTorch, beside `sugarcube bench --workload audio_to_image
--workload audio_to_wav`, on the same clip and the same machine.

    pip install torch torchaudio pillow numpy
    sugarcube bench --workload audio_to_image --workload audio_to_wav --json > sugarcube-audio.jsonl
    python benches/audio_pipeline.py --threads 2 --compare sugarcube-audio.jsonl

The pipeline is riffusion-hobby's (riffusion/spectrogram_converter.py and
spectrogram_image_converter.py) at its default SpectrogramParams: 44.1 kHz mono, STFT with
n_fft 17640 (400 ms), hop 441 (10 ms), a 4410-sample (100 ms) Hann window, 512 HTK mel bins from
0 to 10 kHz without norm, images of 512 frames with power 0.25, inverted and flipped, EXIF tags
11000-11080; back: torchaudio's InverseMelScale (least squares, clamped at zero) and GriffinLim
with 32 iterations and momentum 0.99. Where torchaudio is not installed the same functions are
written out below with torch operations (torchaudio.functional's algorithms: melscale_fbanks,
the lstsq inverse, griffinlim).

The clip: the first 5.11 s (511 hops: one 512-frame image) of
datasets/audio/music/ode-to-joy-fluidr3.wav, as sugarcube's workloads take it. audio_to_image:
WAV bytes -> PNG bytes; audio_to_wav: PNG bytes -> WAV bytes. audio_to_wav reports the
reconstruction's spectral convergence (dB, over the 0-10 kHz bins), computed as sugarcube
computes it, so speed compares at equal quality.
"""
import argparse
import io
import json
import math
import os
import platform
import statistics
import time
import wave

import numpy as np
import torch
from PIL import Image

try:
    import torchaudio
except ImportError:  # the same algorithms below
    torchaudio = None

HERE = os.path.dirname(os.path.abspath(__file__))
CLIP = os.path.join(HERE, "..", "datasets", "audio", "music", "ode-to-joy-fluidr3.wav")

RATE, N_FFT, HOP, WIN = 44100, 17640, 441, 4410
N_MELS, F_MIN, F_MAX, POWER_FOR_IMAGE = 512, 0.0, 10000.0, 0.25
FRAMES_PER_IMAGE, N_ITER, MOMENTUM = 512, 32, 0.99
EXIF_TAGS = {"SAMPLE_RATE": 11000, "STEREO": 11005, "STEP_SIZE_MS": 11010,
             "WINDOW_DURATION_MS": 11020, "PADDED_DURATION_MS": 11030,
             "NUM_FREQUENCIES": 11040, "MIN_FREQUENCY": 11050, "MAX_FREQUENCY": 11060,
             "POWER_FOR_IMAGE": 11070, "MAX_VALUE": 11080}


def read_wav(data):
    """The clip's first image's worth of samples, mono, at int16 scale (as pydub hands them)."""
    with wave.open(io.BytesIO(data)) as w:
        assert w.getsampwidth() == 2, "16-bit clip expected"
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32)
        x = x.reshape(-1, w.getnchannels()).mean(axis=1)
        assert w.getframerate() == RATE
    return torch.from_numpy(x[:(FRAMES_PER_IMAGE - 1) * HOP].copy())


def write_wav(x):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(x.clamp(-32768, 32767).round().to(torch.int16).numpy().tobytes())
    return buf.getvalue()


def hz_to_mel_htk(f):
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_fbanks():
    """torchaudio.functional.melscale_fbanks(n_freqs, f_min, f_max, n_mels, rate, None, "htk")."""
    if torchaudio is not None:
        return torchaudio.functional.melscale_fbanks(
            N_FFT // 2 + 1, F_MIN, F_MAX, N_MELS, RATE, norm=None, mel_scale="htk")
    freqs = torch.linspace(0, RATE // 2, N_FFT // 2 + 1)
    m = torch.linspace(hz_to_mel_htk(F_MIN), hz_to_mel_htk(F_MAX), N_MELS + 2)
    f_pts = 700.0 * (10 ** (m / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.min(down, up), min=0.0)  # (n_freqs, n_mels)


class Pipeline:
    def __init__(self):
        self.window = torch.hann_window(WIN)
        self.fb = mel_fbanks()

    def stft(self, x):
        return torch.stft(x, N_FFT, HOP, WIN, self.window, center=True, pad_mode="reflect",
                          normalized=False, onesided=True, return_complex=True)

    def to_image(self, wav_bytes):
        """Riffusion's spectrogram_from_audio and image_from_spectrogram: PNG bytes with EXIF."""
        mel = self.fb.T @ self.stft(read_wav(wav_bytes)).abs()  # (n_mels, frames)
        max_value = float(mel.max())
        data = (mel / max_value).numpy() ** POWER_FOR_IMAGE
        data = 255 - data * 255
        img = Image.fromarray(data.astype(np.uint8)).transpose(Image.FLIP_TOP_BOTTOM)
        img = img.convert("RGB")
        exif = img.getexif()
        for key, value in [("SAMPLE_RATE", RATE), ("STEREO", False), ("STEP_SIZE_MS", 10),
                           ("WINDOW_DURATION_MS", 100), ("PADDED_DURATION_MS", 400),
                           ("NUM_FREQUENCIES", N_MELS), ("MIN_FREQUENCY", int(F_MIN)),
                           ("MAX_FREQUENCY", int(F_MAX)), ("POWER_FOR_IMAGE", POWER_FOR_IMAGE),
                           ("MAX_VALUE", max_value)]:
            exif[EXIF_TAGS[key]] = value
        buf = io.BytesIO()
        img.save(buf, format="PNG", exif=exif.tobytes())
        return buf.getvalue()

    def inverse_mel(self, mel):
        """torchaudio's InverseMelScale: least squares (gels), clamped at zero."""
        return torch.relu(torch.linalg.lstsq(self.fb.T, mel, driver="gels").solution)

    def griffin_lim(self, magnitude):
        if torchaudio is not None:
            return torchaudio.functional.griffinlim(
                magnitude, self.window, N_FFT, HOP, WIN, 1.0, N_ITER, MOMENTUM, None, True)
        # torchaudio.functional.griffinlim, written out
        angles = torch.rand(magnitude.shape, dtype=torch.complex64)
        tprev = torch.tensor(0.0, dtype=magnitude.dtype)
        alpha = MOMENTUM / (1 + MOMENTUM)
        for _ in range(N_ITER):
            inverse = torch.istft(magnitude * angles, N_FFT, HOP, WIN, self.window)
            rebuilt = self.stft(inverse)
            angles = rebuilt - tprev.mul_(alpha)
            angles = angles.div(angles.abs().add(1e-16))
            tprev = rebuilt
        return torch.istft(magnitude * angles, N_FFT, HOP, WIN, self.window)

    def to_wav(self, png):
        """Riffusion's spectrogram_from_image and audio_from_spectrogram: WAV bytes."""
        img = Image.open(io.BytesIO(png))
        max_value = float(img.getexif()[EXIF_TAGS["MAX_VALUE"]])
        data = np.array(img.transpose(Image.FLIP_TOP_BOTTOM).convert("L"), dtype=np.float32)
        data = ((255 - data) / 255) ** (1 / POWER_FOR_IMAGE) * max_value
        linear = self.inverse_mel(torch.from_numpy(data))  # (n_freqs, frames)
        return self.griffin_lim(linear)


def spectral_convergence_db(p, original, back):
    n = min(len(original), len(back))
    band = [k for k in range(N_FFT // 2 + 1) if F_MIN <= k * RATE / N_FFT <= F_MAX]
    r = p.stft(original[:n]).abs()[band]
    e = p.stft(back[:n]).abs()[band]
    return 20 * math.log10(float((r - e).norm() / r.norm()))


def median_time(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare", help="sugarcube bench --json output to print beside")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    wav_bytes = open(CLIP, "rb").read()
    p = Pipeline()
    original = read_wav(wav_bytes)
    png = p.to_image(wav_bytes)
    back = {}

    def to_wav():
        back["x"] = p.to_wav(png)
        write_wav(back["x"])

    results = {
        "audio_to_image": {"ms": 1e3 * median_time(lambda: p.to_image(wav_bytes), args.warmup,
                                                   args.iters)},
        "audio_to_wav": {"ms": 1e3 * median_time(to_wav, args.warmup, args.iters)},
    }
    results["audio_to_wav"]["spectral_convergence_db"] = spectral_convergence_db(
        p, original, back["x"])
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    stack = f"torch {torch.__version__}" + (
        f", torchaudio {torchaudio.__version__}" if torchaudio else " (torchaudio's functions written out)")
    theirs = {}
    if args.compare:
        for line in open(args.compare):
            r = json.loads(line)
            theirs[r["workload"]] = r
    for name, r in results.items():
        out = {"workload": name, "framework": stack, "machine": machine,
               "ms_per_step": r["ms"]}
        if "spectral_convergence_db" in r:
            out["spectral_convergence_db"] = r["spectral_convergence_db"]
        if name in theirs:
            s = theirs[name]
            out["sugarcube_ms_per_step"] = s["ms_per_step"]
            out["speedup"] = r["ms"] / s["ms_per_step"]
            if "quality" in s:
                out["sugarcube_spectral_convergence_db"] = s["quality"].get(
                    "spectral_convergence_db")
        print(json.dumps(out))


if __name__ == "__main__":
    main()
