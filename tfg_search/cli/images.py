"""Save samples as a picture: an image grid (``[N, C, H, W]``) or a scatter plot (``[N, 2]``).

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "grid.png"
    >>> save_samples(torch.rand(16, 1, 8, 8) * 2 - 1, path).name
    'grid.png'
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from tfg_search.errors import TFGSearchError


def image_grid(samples: torch.Tensor, ncol: int | None = None, scale: int = 8, pad: int = 1) -> np.ndarray:
    """Tile images in [-1, 1] ``[N, C, H, W]`` (C = 1 or 3) into a uint8 array ``[H', W', 3]``.

    Each pixel is enlarged ``scale`` times (nearest neighbour); tiles are separated by ``pad``
    enlarged pixels of mid grey.
    """
    x = samples.detach().float().cpu().clamp(-1, 1)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise TFGSearchError(f"an image grid needs samples [N, 1|3, H, W], got {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    n, _, h, w = x.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = torch.full((3, nrow * (h + pad) + pad, ncol * (w + pad) + pad), 0.0)
    for i in range(n):
        r, c = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[:, top : top + h, left : left + w] = x[i]
    arr = ((grid + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    return np.kron(arr, np.ones((scale, scale, 1), dtype=np.uint8))


def save_samples(
    samples: torch.Tensor,
    path: str | Path,
    *,
    title: str | None = None,
    reference: torch.Tensor | None = None,
    ncol: int | None = None,
) -> Path:
    """Write ``samples`` to a PNG: a grid for images, a scatter plot for 2-D points.

    Args:
        samples: ``[N, C, H, W]`` images in [-1, 1] or ``[N, 2]`` points.
        path: output file (its folder must exist).
        title: caption of a scatter plot.
        reference: for points, reference samples drawn in grey underneath (e.g. the exact target).
        ncol: grid columns (default: about sqrt(N)).

    Raises:
        TFGSearchError: unsupported sample shape or an output folder that does not exist.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise TFGSearchError(f"cannot write {path}: folder {path.parent} does not exist")
    if samples.dim() == 2 and samples.shape[1] == 2:
        _scatter(samples, path, title, reference)
    else:
        from PIL import Image

        Image.fromarray(image_grid(samples, ncol)).save(path)
    return path


def _scatter(points: torch.Tensor, path: Path, title: str | None, reference: torch.Tensor | None) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    if reference is not None:
        ref = reference.detach().cpu().numpy()
        ax.scatter(ref[:, 0], ref[:, 1], s=2, c="0.75", label="reference")
    p = points.detach().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=4, c="tab:blue", label="samples")
    ax.set_aspect("equal")
    finite = np.abs(p[np.isfinite(p).all(1)])
    lim = float(min(10.0, max(3.0, finite.max() * 1.05 if finite.size else 3.0)))
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    if title:
        ax.set_title(title, fontsize=9)
    if reference is not None:
        ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
