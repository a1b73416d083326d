"""Train the demo model: a small CNN on scikit-learn's bundled 8x8 digits.

The data ships inside scikit-learn (nothing is downloaded). The script writes
model/artifacts/: model.pt (TorchScript), labels.json, preprocess.json and
metrics.json, deterministically (fixed seeds, one thread), and prints the
held-out accuracy. Run it with torch importable, e.g. the local target's tree:

    invoke build --target local
    PYTHONPATH=dist/local/efs/site-packages python3 model/train.py
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

SEED = 20261125
HERE = Path(__file__).resolve().parent

# how an image becomes the model's input; the handler reads this, not this file
PREPROCESS = {
    "version": 1,
    "mode": "L",  # grayscale
    "size": [8, 8],  # height, width after resizing (torchvision's order)
    "resample": "box",  # area average: a big digit image shrinks the way the 8x8 data was made
    "invert": False,  # white ink on black, as the digits data
    "scale": 16.0 / 255.0,  # pixel 0..255 -> 0..16, the data's range
    "mean": [8.0],
    "std": [8.0],
}


class DigitNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(64 * 2 * 2, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def normalise(images: np.ndarray) -> torch.Tensor:
    x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8)
    return (x - PREPROCESS["mean"][0]) / PREPROCESS["std"][0]


def strip_debug_info(path: Path) -> None:
    """Make the TorchScript archive reproducible: drop the *.debug_pkl records
    (they hold the absolute paths of torch's own sources on the training
    machine, so the file would differ by where torch is installed, and leak
    that path; loading does not need them), and derive the archive's random
    serialization_id from its content."""
    with zipfile.ZipFile(path) as src:
        records = [(info.filename, src.read(info.filename)) for info in src.infolist() if not info.filename.endswith(".debug_pkl")]
    digest = hashlib.sha256(b"".join(data for name, data in records if not name.endswith("serialization_id"))).hexdigest()
    records = [(name, str(int(digest, 16))[:40].encode() if name.endswith(".data/serialization_id") else data) for name, data in records]
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
        for name, data in records:
            dst.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    tmp.replace(path)


def train(out: Path, epochs: int = 60) -> dict:
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(digits.images, digits.target, test_size=0.25, random_state=0, stratify=digits.target)
    xt, yt = normalise(x_train), torch.tensor(y_train)
    model = DigitNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(normalise(x_test)).argmax(1) == torch.tensor(y_test)).float().mean())
    out.mkdir(parents=True, exist_ok=True)
    scripted = torch.jit.script(model)
    scripted.save(str(out / "model.pt"))
    strip_debug_info(out / "model.pt")
    (out / "labels.json").write_text(json.dumps([str(d) for d in range(10)]) + "\n")
    (out / "preprocess.json").write_text(json.dumps(PREPROCESS, indent=1) + "\n")
    metrics = {"model": "hoist-digits", "version": "1", "held_out_accuracy": round(accuracy, 4), "test_size": len(y_test), "seed": SEED, "torch": torch.__version__}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics


if __name__ == "__main__":
    if os.environ.get("PYTHONHASHSEED") != "0":  # TorchScript's code files follow set order: fix the hash seed
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "artifacts")
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    m = train(args.out, args.epochs)
    print(f"held-out accuracy {m['held_out_accuracy']:.4f} on {m['test_size']} digits -> {args.out}")
    if m["held_out_accuracy"] < 0.95:
        raise SystemExit("held-out accuracy is under 95%")
