"""PNG line plots of per-layer values (probe scores, layer weights, similarities), via matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from telly.files import atomic_open  # noqa: E402

class Panel(NamedTuple):
    title: str
    ylabel: str
    series: dict[str, list[float]]  # series name -> value per layer
    intervals: dict[str, list[list[float]]] | None = None  # series name -> (low, high) per layer, drawn as a band


def plot_layers(path: Path, panels: list[Panel | tuple], title: str) -> None:
    """One panel per entry, side by side; x is the layer (0 = embedding output)."""
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        panel_title, ylabel, series, intervals = Panel(*panel)
        for name, values in series.items():
            line, = axis.plot(range(len(values)), values, marker="o", label=name)
            if intervals and name in intervals and None not in intervals[name]:
                low, high = zip(*intervals[name])
                axis.fill_between(range(len(values)), low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        axis.set_title(panel_title)
        axis.set_xlabel("layer (0 = embeddings)")
        axis.set_ylabel(ylabel)
        axis.set_xticks(range(max(len(values) for values in series.values())))
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_open(path, "wb") as stream:
        figure.savefig(stream, format="png", dpi=100)
    plt.close(figure)


def plot_points(path: Path, series: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str, title: str) -> None:
    """One line per series of (x values, y values); a series named "LoRA" is drawn dashed (a reference level)."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, (xs, ys) in series.items():
        axis.plot(xs, ys, linestyle="--" if name == "LoRA" else "-", marker=None if name == "LoRA" else "o", label=name)
    _label_and_save(figure, axis, path, xlabel, ylabel, title)


def plot_bands(path: Path, series: dict[str, tuple[list[float], list[float], list[float], list[float]]], xlabel: str,
               ylabel: str, title: str) -> None:
    """One step line per series of (x values, y values, band low, band high), its band shaded."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, (xs, ys, low, high) in series.items():
        line, = axis.plot(xs, ys, drawstyle="steps-post", label=name)
        axis.fill_between(xs, low, high, step="post", alpha=0.2, color=line.get_color())
    _label_and_save(figure, axis, path, xlabel, ylabel, title)


def _label_and_save(figure, axis, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    with atomic_open(path, "wb") as stream:
        figure.savefig(stream, format="png", dpi=100)
    plt.close(figure)
