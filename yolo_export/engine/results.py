"""Results of a classification predict: probabilities, top-k, names, path and timings."""

from __future__ import annotations

import json

import numpy as np


class Probs:
    def __init__(self, data: np.ndarray):
        self.data = np.asarray(data, dtype=np.float32)

    @property
    def top1(self) -> int:
        return int(self.data.argmax())

    @property
    def top5(self) -> list[int]:
        k = min(5, self.data.shape[-1])
        return [int(i) for i in np.argsort(-self.data, kind="stable")[:k]]

    @property
    def top1conf(self) -> float:
        return float(self.data[self.top1])

    @property
    def top5conf(self) -> list[float]:
        return [float(self.data[i]) for i in self.top5]

    def numpy(self) -> np.ndarray:
        return self.data

    def __repr__(self):
        return f"Probs(top1={self.top1}, top1conf={self.top1conf:.4f})"


class Results:
    def __init__(self, probs: np.ndarray, names: dict, path: str | None = None, orig_shape=None,
                 speed: dict | None = None):
        self.probs = Probs(probs)
        self.names = names
        self.path = path
        self.orig_shape = orig_shape
        self.speed = speed or {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        self.preprocess = "exact"  # or "fast": the opted-in approximation (yolo_export.data.transforms)
        self.threads: int | None = None     # the runtime's thread count when these timings were taken

    def __len__(self):
        return 1

    def summary(self, top: int = 5) -> list[dict]:
        return [{"class": i, "name": self.names.get(i, str(i)), "confidence": round(c, 5)}
                for i, c in zip(self.probs.top5[:top], self.probs.top5conf[:top])]

    def to_dict(self) -> dict:
        return {"path": self.path, "top1": self.probs.top1, "name": self.names.get(self.probs.top1),
                "confidence": round(self.probs.top1conf, 5), "top5": self.summary(),
                "speed": {k: round(v, 3) for k, v in self.speed.items()}, "preprocess": self.preprocess,
                "threads": self.threads}

    def tojson(self) -> str:
        return json.dumps(self.to_dict())

    def verbose(self) -> str:
        return ", ".join(f"{d['name']} {d['confidence']:.2f}" for d in self.summary())

    def __repr__(self):
        return f"Results(path={self.path!r}, top1={self.probs.top1} {self.names.get(self.probs.top1)!r}, " \
               f"conf={self.probs.top1conf:.3f})"
