"""The test problems: losses with analytic gradients and Hessian-vector products, in NumPy.

These are the problems the optimizers are run on, not optimizer maths. Every gradient and Hessian here is
checked against finite differences in ``tests/proofs/test_proofs_problems.py``.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


# ------------------------------------------------------------------------------------------ online convex
def logistic_stream(
    rng: np.random.Generator, steps: int, dim: int, label_noise: float = 0.1
) -> Tuple[np.ndarray, np.ndarray]:
    """An online logistic-regression stream: ``x_t`` uniform on the unit sphere, ``y_t in {-1, +1}``.

    Labels follow ``sign(x . w*)`` with ``||w*|| = 2``, flipped with probability ``label_noise``.
    ``||x_t|| = 1`` bounds every gradient: ``||grad f_t|| <= 1``.
    """
    x = rng.standard_normal((steps, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w_star = rng.standard_normal(dim)
    w_star *= 2.0 / np.linalg.norm(w_star)
    y = np.sign(x @ w_star)
    y[y == 0] = 1.0
    flip = rng.random(steps) < label_noise
    y[flip] *= -1.0
    return x, y


def logistic_drifting_stream(
    rng: np.random.Generator, steps: int, dim: int, label_noise: float = 0.1, turns: float = 2.0
) -> Tuple[np.ndarray, np.ndarray]:
    """A drifting online logistic stream: like :func:`logistic_stream`, but the labelling vector rotates in a
    random plane, ``w*_t = 2 (cos(phi_t) u + sin(phi_t) v)`` with ``phi_t = 2 pi turns t / steps``, so no
    fixed point fits the whole sequence (the regret is still against the best fixed point in hindsight)."""
    x = rng.standard_normal((steps, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    u, v = np.linalg.qr(rng.standard_normal((dim, 2)))[0].T
    phi = 2.0 * np.pi * turns * np.arange(steps) / steps
    w_star = 2.0 * (np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * v)
    y = np.sign(np.sum(x * w_star, axis=1))
    y[y == 0] = 1.0
    flip = rng.random(steps) < label_noise
    y[flip] *= -1.0
    return x, y


def logistic_losses(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``log(1 + exp(-y x . theta))`` per sample."""
    return np.logaddexp(0.0, -y * (x @ theta))


def logistic_grad(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of the SUM of the logistic losses over the rows of ``x``."""
    z = y * (x @ theta)
    weight = -y * 0.5 * (1.0 - np.tanh(0.5 * z))  # -y * sigmoid(-z), stable
    return x.T @ weight


def logistic_hess(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Hessian of the SUM of the logistic losses."""
    s = 0.5 * (1.0 + np.tanh(0.5 * (x @ theta)))
    return (x * (s * (1.0 - s))[:, None]).T @ x


def least_squares_stream(
    rng: np.random.Generator, steps: int, dim: int, noise: float = 0.3
) -> Tuple[np.ndarray, np.ndarray]:
    """An online least-squares stream: ``x_t`` uniform on the unit sphere, ``y_t = x_t . w* + noise``."""
    x = rng.standard_normal((steps, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w_star = rng.standard_normal(dim)
    w_star *= 2.0 / np.linalg.norm(w_star)
    return x, x @ w_star + noise * rng.standard_normal(steps)


def least_squares_losses(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``1/2 (x . theta - y)^2`` per sample."""
    return 0.5 * (x @ theta - y) ** 2


def least_squares_grad(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of the SUM of the squared losses."""
    return x.T @ (x @ theta - y)


def least_squares_hess(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Hessian of the SUM of the squared losses."""
    return x.T @ x


# ----------------------------------------------------------------------------------- tanh regression
class TanhRegression:
    """Smooth non-convex regression: ``f(theta) = 1/n sum_i 1/2 (tanh(x_i . theta) - y_i)^2 + rho R(theta)``.

    ``R(theta) = sum_j theta_j^2 / (1 + theta_j^2)`` (a bounded non-convex regulariser). ``y_i`` come from
    ``tanh(x_i . theta*)`` plus noise, clipped to ``[-y_max, y_max]``; ``|x_ij| <= 1``. Every per-sample
    gradient then obeys ``||g||_inf <= G_inf = (1 + y_max) + 0.65 rho`` (``|2t/(1+t^2)^2| <= 0.6496``).
    """

    def __init__(
        self, rng: np.random.Generator, n: int = 4096, dim: int = 16, rho: float = 0.01, noise: float = 0.2
    ) -> None:
        self.x = rng.uniform(-1.0, 1.0, (n, dim)) / np.sqrt(dim / 3.0)
        self.x = np.clip(self.x, -1.0, 1.0)
        theta_star = rng.standard_normal(dim) * 1.5
        self.y_max = 0.99
        self.y = np.clip(np.tanh(self.x @ theta_star) + noise * rng.standard_normal(n), -self.y_max, self.y_max)
        self.rho = rho
        self.n, self.dim = n, dim
        self.g_inf = (1.0 + self.y_max) * float(np.max(np.abs(self.x))) + 0.65 * rho

    def loss(self, theta: np.ndarray) -> float:
        t = np.tanh(self.x @ theta)
        return float(0.5 * np.mean((t - self.y) ** 2) + self.rho * np.sum(theta**2 / (1.0 + theta**2)))

    def _reg_grad(self, theta: np.ndarray) -> np.ndarray:
        return self.rho * 2.0 * theta / (1.0 + theta**2) ** 2

    def grad(self, theta: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        """The full gradient, or the mini-batch gradient over the rows ``index`` (unbiased)."""
        x = self.x if index is None else self.x[index]
        y = self.y if index is None else self.y[index]
        t = np.tanh(x @ theta)
        return x.T @ ((t - y) * (1.0 - t * t)) / len(y) + self._reg_grad(theta)

    def hvp(self, theta: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The exact full-batch Hessian-vector product ``H(theta) v``."""
        t = np.tanh(self.x @ theta)
        s = 1.0 - t * t
        second = s * (s - 2.0 * t * (t - self.y))
        reg = self.rho * 2.0 * (1.0 - 3.0 * theta**2) / (1.0 + theta**2) ** 3
        return self.x.T @ (second * (self.x @ v)) / self.n + reg * v


# ------------------------------------------------------------------------------------------ valleys
def rosenbrock_valley(p: np.ndarray, scale: float = 10.0) -> np.ndarray:
    """``scale (y - x^2)^2``: the Rosenbrock valley without its ``(1 - x)^2`` term, so that the whole
    parabola ``y = x^2`` is a zero-loss set. ``p[..., 0] = x``, ``p[..., 1] = y``."""
    return scale * (p[..., 1] - p[..., 0] ** 2) ** 2


def rosenbrock_valley_grad(p: np.ndarray, scale: float = 10.0) -> np.ndarray:
    r = p[..., 1] - p[..., 0] ** 2
    return np.stack([-4.0 * scale * r * p[..., 0], 2.0 * scale * r], axis=-1)


def rosenbrock_valley_hvp(p: np.ndarray, v: np.ndarray, scale: float = 10.0) -> np.ndarray:
    x, y = p[..., 0], p[..., 1]
    hxx = scale * (12.0 * x * x - 4.0 * y)
    hxy = -4.0 * scale * x
    hyy = 2.0 * scale * np.ones_like(x)
    return np.stack([hxx * v[..., 0] + hxy * v[..., 1], hxy * v[..., 0] + hyy * v[..., 1]], axis=-1)


def descending_valley(p: np.ndarray, slope: float = 0.01) -> np.ndarray:
    """The Rosenbrock valley whose floor descends slowly towards ``(1, 1)``: ``10 (y - x^2)^2 + slope (1 - x)^2``
    (the Rosenbrock function with a weak ``(1 - x)^2`` term): a better minimum at the end of a long valley."""
    return rosenbrock_valley(p) + slope * (1.0 - p[..., 0]) ** 2


def descending_valley_grad(p: np.ndarray, slope: float = 0.01) -> np.ndarray:
    grad = rosenbrock_valley_grad(p)
    grad[..., 0] += -2.0 * slope * (1.0 - p[..., 0])
    return grad


def rosenbrock_valley_position(p: np.ndarray) -> np.ndarray:
    """Arc length along ``y = x^2`` (from the vertex) of the nearest point of the parabola.

    The nearest point's abscissa ``u`` solves ``2u^3 + (1 - 2y) u - x = 0``; a few Newton steps from ``x``.
    """
    x, y = p[..., 0], p[..., 1]
    u = np.array(x, dtype=float, copy=True)
    for _ in range(12):
        value = 2.0 * u**3 + (1.0 - 2.0 * y) * u - x
        slope = 6.0 * u**2 + (1.0 - 2.0 * y)
        slope = np.where(np.abs(slope) < 1e-8, 1e-8, slope)
        u = u - value / slope
    root = np.sqrt(1.0 + 4.0 * u * u)
    return 0.5 * u * root + 0.25 * np.arcsinh(2.0 * u)


def cardioid_implicit(p: np.ndarray, a: float = 1.0) -> np.ndarray:
    """``c(x, y) = (x^2 + y^2 - a x)^2 - a^2 (x^2 + y^2)``: zero on the cardioid ``r = a (1 + cos phi)``."""
    x, y = p[..., 0], p[..., 1]
    q = x * x + y * y
    return (q - a * x) ** 2 - a * a * q


def cardioid_valley(p: np.ndarray, a: float = 1.0) -> np.ndarray:
    """The squared-cardioid valley ``c(x, y)^2``: zero on the whole cardioid."""
    return cardioid_implicit(p, a) ** 2


def cardioid_valley_grad(p: np.ndarray, a: float = 1.0) -> np.ndarray:
    x, y = p[..., 0], p[..., 1]
    q = x * x + y * y
    c = (q - a * x) ** 2 - a * a * q
    cx = 2.0 * (q - a * x) * (2.0 * x - a) - 2.0 * a * a * x
    cy = 2.0 * (q - a * x) * (2.0 * y) - 2.0 * a * a * y
    return np.stack([2.0 * c * cx, 2.0 * c * cy], axis=-1)


def cardioid_valley_position(p: np.ndarray, a: float = 1.0) -> np.ndarray:
    """Arc length along the cardioid, ``s(phi) = 4 a sin(phi / 2)``, ``phi`` the polar angle seen from the
    cusp (the origin); the polar angle of a point near the curve stands in for its nearest point's."""
    phi = np.arctan2(p[..., 1], p[..., 0])
    return 4.0 * a * np.sin(0.5 * phi)


# ------------------------------------------------------------------------------ sharp and flat minima
def sharp_flat_1d(x: np.ndarray) -> np.ndarray:
    """Two Gaussian wells of equal depth, sharp at ``-1`` (width 0.15) and flat at ``+1.5`` (width 0.8),
    in a weak bowl: ``-exp(-(x+1)^2/(2 0.15^2)) - exp(-(x-1.5)^2/(2 0.8^2)) + 0.02 x^2``."""
    return -np.exp(-((x + 1.0) ** 2) / (2 * 0.15**2)) - np.exp(-((x - 1.5) ** 2) / (2 * 0.8**2)) + 0.02 * x**2


def sharp_flat_1d_grad(x: np.ndarray) -> np.ndarray:
    return (
        (x + 1.0) / 0.15**2 * np.exp(-((x + 1.0) ** 2) / (2 * 0.15**2))
        + (x - 1.5) / 0.8**2 * np.exp(-((x - 1.5) ** 2) / (2 * 0.8**2))
        + 0.04 * x
    )


def sharp_flat_1d_hess(x: np.ndarray) -> np.ndarray:
    def well(center: float, width: float) -> np.ndarray:
        d = x - center
        return (1.0 / width**2 - d * d / width**4) * np.exp(-d * d / (2 * width**2))

    return well(-1.0, 0.15) + well(1.5, 0.8) + 0.04


_SHARP_2D = (np.array([-1.0, 0.0]), np.array([0.12, 0.4]))
_FLAT_2D = (np.array([1.2, 0.0]), np.array([0.7, 0.9]))


def sharp_flat_2d(p: np.ndarray) -> np.ndarray:
    """Two anisotropic Gaussian wells of equal depth in a weak bowl: a sharp one at ``(-1, 0)`` (widths
    0.12, 0.4) and a flat one at ``(1.2, 0)`` (widths 0.7, 0.9), plus ``0.02 ||p||^2``."""
    value = 0.02 * np.sum(p * p, axis=-1)
    for center, width in (_SHARP_2D, _FLAT_2D):
        d = (p - center) / width
        value = value - np.exp(-0.5 * np.sum(d * d, axis=-1))
    return value


def sharp_flat_2d_grad(p: np.ndarray) -> np.ndarray:
    grad = 0.04 * p
    for center, width in (_SHARP_2D, _FLAT_2D):
        d = (p - center) / width
        e = np.exp(-0.5 * np.sum(d * d, axis=-1))[..., None]
        grad = grad + e * d / width
    return grad


def sharp_flat_2d_hess(p: np.ndarray) -> np.ndarray:
    """The 2x2 Hessians, shape ``p.shape[:-1] + (2, 2)``."""
    hess = np.zeros(p.shape[:-1] + (2, 2)) + 0.04 * np.eye(2)
    for center, width in (_SHARP_2D, _FLAT_2D):
        d = (p - center) / width
        e = np.exp(-0.5 * np.sum(d * d, axis=-1))[..., None, None]
        scaled = d / width
        hess = hess + e * (np.diag(1.0 / width**2) - scaled[..., :, None] * scaled[..., None, :])
    return hess


class RandomLabelMLP:
    """A tanh MLP ``d -> width -> classes`` fitted to a fixed random labelling of Gaussian inputs (squared loss on
    one-hot targets): a network that can fit its data exactly, so its training loss has minima at 0.

    ``f(W1, b1, W2, b2) = 1/(2n) sum_i ||W2 tanh(W1 x_i + b1) + b2 - y_i||^2``; gradients by hand (float64).
    """

    def __init__(self, rng: np.random.Generator, n: int = 64, dim: int = 16, width: int = 32, classes: int = 4):
        self.x = rng.standard_normal((n, dim))
        self.y = np.eye(classes)[rng.integers(0, classes, n)]
        self.n, self.dim, self.width, self.classes = n, dim, width, classes

    def init(self, rng: np.random.Generator) -> list:
        """Glorot-scaled weights, zero biases."""
        return [
            rng.standard_normal((self.width, self.dim)) / np.sqrt(self.dim),
            np.zeros(self.width),
            rng.standard_normal((self.classes, self.width)) / np.sqrt(self.width),
            np.zeros(self.classes),
        ]

    def loss_and_grad(self, params: Sequence[np.ndarray]) -> tuple:
        """``(loss, [dW1, db1, dW2, db2])`` over the whole data set (full batch)."""
        w1, b1, w2, b2 = params
        h = np.tanh(self.x @ w1.T + b1)
        r = (h @ w2.T + b2 - self.y) / self.n
        loss = 0.5 * self.n * float(np.sum(r * r))
        dh = (r @ w2) * (1.0 - h * h)
        return loss, [dh.T @ self.x, dh.sum(axis=0), r.T @ h, r.sum(axis=0)]
