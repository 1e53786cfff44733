"""Standard figures shared by the chapters: image grids, cameras and trajectories on the plan.

Positions are metres in the world frame (x east, y north); orientations are camera-to-world
quaternions (w, x, y, z). Every function draws on a matplotlib axis and returns it (or the figure).
"""

from __future__ import annotations

import numpy as np

SPLIT_COLOURS = {"train": "#1f77b4", "test": "#d62728", "val": "#2ca02c"}


def image_grid(images, titles=None, ncols: int = 3, width: float = 12.0):
    """Show uint8 RGB images in a grid; returns the figure."""
    import matplotlib.pyplot as plt

    n = len(images)
    nrows = int(np.ceil(n / ncols))
    h, w = images[0].shape[:2]
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, width / ncols * h / w * nrows + 0.3 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i])
            if titles is not None:
                ax.set_title(titles[i], fontsize=9)
    fig.tight_layout()
    return fig


def headings(q: np.ndarray) -> np.ndarray:
    """Horizontal viewing direction (unit 2-vectors in the plan) of camera-to-world quaternions."""
    from campose.geometry import quat_to_matrix

    fwd = quat_to_matrix(np.asarray(q, float).reshape(-1, 4))[:, :2, 2]
    return fwd / np.maximum(np.linalg.norm(fwd, axis=1, keepdims=True), 1e-9)


def draw_cameras(ax, x, q, length: float = 1.0, color="k", every: int = 1, fov_deg: float | None = None, **kw):
    """Draw camera positions with heading arrows (or view wedges if ``fov_deg`` is given)."""
    x = np.asarray(x, float).reshape(-1, 3)[::every]
    d = headings(q)[::every]
    if fov_deg is None:
        ax.quiver(x[:, 0], x[:, 1], d[:, 0], d[:, 1], angles="xy", scale_units="xy", scale=1 / length,
                  color=color, width=0.003, zorder=5, **kw)
    else:
        a = np.radians(fov_deg) / 2
        for p, v in zip(x, d):
            rot = lambda t: np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])  # noqa: E731
            l_, r_ = p[:2] + length * rot(a) @ v, p[:2] + length * rot(-a) @ v
            ax.fill([p[0], l_[0], r_[0]], [p[1], l_[1], r_[1]], color=color, alpha=0.35, zorder=5, lw=0)
            ax.plot([p[0]], [p[1]], "o", color=color, ms=4, zorder=6)
    ax.scatter(x[:, 0], x[:, 1], s=4, color=color, zorder=5)
    return ax


def plot_walks(plan, sequences, ax=None, arrows_every: int = 0):
    """Draw sequences (objects with ``name``, ``x``, ``q`` and ``split`` or ``meta['split']``) on the plan."""
    import matplotlib.pyplot as plt

    ax = plan.plot(ax=ax)
    cmap = plt.get_cmap("tab10")
    for i, s in enumerate(sequences):
        split = getattr(s, "split", None) or getattr(s, "meta", {}).get("split", "train")
        ls = "-" if split == "train" else "--"
        ax.plot(s.x[:, 0], s.x[:, 1], ls, color=cmap(i % 10), lw=1.6, label=f"{s.name} ({split}, {len(s.x)} frames)")
        ax.plot(s.x[0, 0], s.x[0, 1], "o", color=cmap(i % 10), ms=6)
        if arrows_every:
            draw_cameras(ax, s.x, s.q, length=0.8, color=cmap(i % 10), every=arrows_every)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=8, frameon=False)
    return ax


def plot_views(plan, walks, views, ax=None, arrows: int = 150, seed: int = 0):
    """Extra training views (a sequence of :mod:`campose.densify`) on the plan around the ``walks``
    they were drawn from: every view's position as a dot, and the heading of ``arrows`` of them
    (a random subset, ``seed``) as arrows, so both their spread and their directions show."""
    ax = plan.plot(ax=ax)
    for s in walks:
        ax.plot(s.x[:, 0], s.x[:, 1], "-", color="0.35", lw=1.0)
    ax.scatter(views.x[:, 0], views.x[:, 1], s=2, color=SPLIT_COLOURS["train"], alpha=0.5, zorder=4,
               label=f"{len(views)} views")
    pick = np.random.default_rng(seed).permutation(len(views))[:arrows]
    draw_cameras(ax, views.x[pick], views.q[pick], length=0.6, color="#ff7f0e", alpha=0.8)
    ax.plot([], [], "-", color="0.35", label="training walks")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8, frameon=False)
    return ax


_PART_COLOURS = {"input": "#dddddd", "backbone": "#9ecae1", "pool": "#fdd0a2", "head": "#a1d99b", "output": "#fc9272"}


def _fmt_count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e3 else str(n)


def plot_architecture(rows, title: str | None = None, ax=None):
    """Draw a network as the chain of blocks it runs (rows of :func:`campose.models.architecture`):
    one box per block, coloured by part (input, backbone, pooling, head, outputs), its height
    growing with the number of channels and its label giving the output shape and parameters.
    The two output heads are drawn side by side at the end. Returns the axis."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    rows = list(rows)
    outputs = [r for r in rows if r["part"] == "output"]
    chain = [r for r in rows if r["part"] != "output"]
    n = len(chain) + 1
    if ax is None:
        _, ax = plt.subplots(figsize=(max(8.0, 0.78 * n + 1), 3.6))
    width, gap = 0.62, 0.16
    chan = [r["shape"][0] for r in rows]
    top = np.log2(max(chan) + 1)

    def box(x0, yc, hgt, r):
        ax.add_patch(FancyBboxPatch((x0, yc - hgt / 2), width, hgt, boxstyle="round,pad=0.01,rounding_size=0.05",
                                    fc=_PART_COLOURS.get(r["part"], "white"), ec="k", lw=0.7))
        shape = "x".join(str(v) for v in r["shape"])
        label = f"{r['name']}\n{shape}" + (f"\n{_fmt_count(r['params'])}" if r["params"] else "")
        ax.text(x0 + width / 2, yc - hgt / 2 - 0.05, label, ha="center", va="top", fontsize=6.5, rotation=0)

    for i, r in enumerate(chain):
        hgt = 0.25 + 0.75 * np.log2(r["shape"][0] + 1) / top
        box(i * (width + gap), 0.0, hgt, r)
        if i:
            ax.annotate("", xy=(i * (width + gap), 0), xytext=(i * (width + gap) - gap, 0),
                        arrowprops=dict(arrowstyle="->", lw=0.8))
    xo = len(chain) * (width + gap)
    for k, r in enumerate(outputs):
        yc = 0.45 * (1 - 2 * k) if len(outputs) == 2 else 0.0
        box(xo, yc, 0.3, r)
        ax.annotate("", xy=(xo, yc), xytext=(xo - gap, 0), arrowprops=dict(arrowstyle="->", lw=0.8))
    total = sum(r["params"] for r in rows)
    handles = [plt.Rectangle((0, 0), 1, 1, fc=c, ec="k", lw=0.5) for c in _PART_COLOURS.values()]
    ax.legend(handles, list(_PART_COLOURS), loc="upper left", ncol=5, fontsize=7, frameon=False,
              bbox_to_anchor=(0, 1.13))
    ax.set_xlim(-0.1, xo + width + 0.1)
    ax.set_ylim(-1.15, 0.75)
    ax.axis("off")
    ax.set_title((title + ": " if title else "") + f"{_fmt_count(total)} parameters", fontsize=10, loc="right")
    return ax
