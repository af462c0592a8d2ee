"""Optimisers that run many independent problems at once, each with its own state.

:class:`BatchedAdam` is ``torch.optim.Adam`` with a step count per problem (Adam's state is per element already,
so only the bias correction needs it); the batch attacks of chapter 5 use it with a total-variation prior, as
Geiping et al. (2020) and Geng et al. (2021) do.

:class:`BatchedLBFGS` is PyTorch's ``torch.optim.LBFGS`` without line search (the configuration DLG and iDLG
use: ``lr=1``, ``max_iter=20``, ``history_size=100``), applied to ``T`` independent problems stacked along the
first dimension. Every problem keeps its own curvature history, step size, iteration count and stopping
decisions, so a problem's trajectory does not depend on which others share the batch.

The two-loop recursion (Nocedal and Wright, *Numerical Optimization*, Alg. 7.4) is evaluated without a Python
loop over the history: with ``S`` and ``Y`` the stored steps and gradient differences (oldest first) and
``rho_i = 1/(y_i.s_i)``,

- first loop:  ``alpha_i = rho_i (s_i.q_i)`` with ``q_i = -g - sum_{j>i} alpha_j y_j``, i.e. the upper-triangular
  system ``(I + diag(rho) U) alpha = -rho * (S g)`` with ``U_ij = s_i.y_j`` for ``j > i``;
- second loop: ``c_i = alpha_i - beta_i`` with ``beta_i = rho_i y_i.(H0 q + sum_{j<i} c_j s_j)``, i.e. the
  lower-triangular system ``(I + diag(rho) L) c = alpha - rho * H0 (Y q)`` with ``L_ij = y_i.s_j`` for ``j < i``;

and the direction is ``H0 q + S^T c``. Multiplied by ``diag(1/rho)``, both systems have the Gram matrix
``M = S Y^T`` itself as their matrix (its diagonal is ``y_i.s_i = 1/rho_i``): ``M alpha = -S g`` (its upper
triangle) and ``M^T c = diag(M) alpha - H0 (Y q)`` (the lower triangle of ``M^T``), so no scaled copy of ``M`` is
made. ``M`` and ``Y Y^T`` are updated as pairs arrive. ``S`` and ``Y`` (the large buffers) live in a ring buffer per
problem, so old pairs are overwritten, never shifted; ``M`` is kept in chronological order (the newest pair last, a
unit diagonal where no pair is stored yet), shifted by one when a pair arrives, which costs less than reordering it
from ring order at every iteration.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["BatchedLBFGS", "BatchedAdam"]

Closure = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class BatchedLBFGS:
    """L-BFGS for ``num`` independent problems of ``dim`` variables each (PyTorch's algorithm, no line search).

    ``step(z, closure, mask)`` performs, for every problem selected by ``mask``, exactly what one call of
    ``torch.optim.LBFGS.step`` does: up to ``max_iter`` iterations with their early exits (``tolerance_grad`` on
    the largest gradient entry, ``tolerance_change`` on the step and on the change of the loss). ``closure(z)``
    returns the loss ``(T,)`` and its gradient ``(T, dim)`` of all problems.
    """

    def __init__(
        self,
        num: int,
        dim: int,
        *,
        lr: float = 1.0,
        max_iter: int = 20,
        history_size: int = 100,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be positive; got {lr!r}")
        if max_iter < 1 or history_size < 1:
            raise ValueError(f"max_iter and history_size must be >= 1; got {max_iter}, {history_size}")
        self.lr, self.max_iter, self.history_size = float(lr), int(max_iter), int(history_size)
        self.tolerance_grad, self.tolerance_change = float(tolerance_grad), float(tolerance_change)
        T, H, D = num, history_size, dim
        kw = dict(device=device, dtype=dtype)
        self.S = torch.zeros(T, H, D, **kw)
        self.Y = torch.zeros(T, H, D, **kw)
        # SY[t, i, j] = s_i . y_j in chronological positions (the newest pair at H - 1); 1 on the diagonal of the
        # positions that hold no pair yet, so the triangular systems stay regular
        self.SY = torch.eye(H, **kw).repeat(T, 1, 1)
        self.YY = torch.zeros(T, H, H, **kw)  # YY[t, i, j] = y_i . y_j in slot order
        self.count = torch.zeros(T, dtype=torch.long, device=device)
        self.head = torch.zeros(T, dtype=torch.long, device=device)  # slot the next pair goes to
        self.H_diag = torch.ones(T, **kw)
        self.d = torch.zeros(T, D, **kw)
        self.t = torch.zeros(T, **kw)
        self.prev_g = torch.zeros(T, D, **kw)
        self.prev_loss = torch.zeros(T, dtype=torch.float64, device=device)
        self.n_iter = torch.zeros(T, dtype=torch.long, device=device)  # iterations since the (re)start
        self.func_evals = torch.zeros(T, dtype=torch.long, device=device)

    def reset(self, mask: torch.Tensor) -> None:
        """Forget everything about the problems in ``mask`` (a fresh optimiser, e.g. after a restart)."""
        m = mask
        # zero the stored pairs too: NaNs of a diverged trajectory would survive a zero coefficient (NaN * 0)
        for buf in (self.S, self.Y, self.YY, self.prev_g):
            buf[m] = 0.0
        self.SY[m] = torch.eye(self.history_size, dtype=self.SY.dtype, device=self.SY.device)
        self.count[m] = 0
        self.head[m] = 0
        self.H_diag[m] = 1.0
        self.n_iter[m] = 0
        self.d[m] = 0.0
        self.t[m] = 0.0

    def subset(self, index: torch.Tensor) -> None:
        """Keep only the problems at ``index``, in that order (the engine drops finished trials this way)."""
        for name, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor):
                setattr(self, name, value[index])

    # -------------------------------------------------------------------------------------------- internals

    def _project(self, g: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``S g, S y, Y g, Y y, Y s`` (each ``(T, H)``, slot order) in one pass over each buffer.

        The buffers dominate the optimiser's memory traffic (``T x H x D``, 100 pairs), so every product they enter
        in an iteration is taken at once: one read of ``S`` and one of ``Y`` here, one of each for the direction.
        """
        Sv = torch.einsum("thd,tkd->thk", self.S, torch.stack([g, y], 1))
        Yv = torch.einsum("thd,tkd->thk", self.Y, torch.stack([g, y, s], 1))
        return Sv[..., 0], Sv[..., 1], Yv[..., 0], Yv[..., 1], Yv[..., 2]

    def _push(self, push: torch.Tensor, s: torch.Tensor, y: torch.Tensor, ys: torch.Tensor, S_dot_y: torch.Tensor,
              y_dot_Y: torch.Tensor, s_dot_Y: torch.Tensor) -> torch.Tensor:
        """Store the pair (s, y) for the problems in ``push``, overwriting their oldest pair when full.

        ``S_dot_y``, ``y_dot_Y`` and ``s_dot_Y`` are the products with the buffers *before* the pair is stored
        (:meth:`_project`); the entry of the slot it goes to is replaced here. Returns that slot as a one-hot mask
        ``(T, H)``, false for the problems that stored nothing.
        """
        T, H = s.shape[0], self.history_size
        rows = torch.arange(T, device=s.device)
        slot = self.head
        keep = push[:, None]
        self.S[rows, slot] = torch.where(keep, s, self.S[rows, slot])
        self.Y[rows, slot] = torch.where(keep, y, self.Y[rows, slot])
        # new Gram entries: s_new . y_j, s_j . y_new, y_new . y_j for every slot j (the new slot included)
        new = torch.nn.functional.one_hot(slot, H).bool()
        yy = (y * y).sum(1)
        s_dot_Y = torch.where(new, ys[:, None], s_dot_Y)
        S_dot_y = torch.where(new, ys[:, None], S_dot_y)
        y_dot_Y = torch.where(new, yy[:, None], y_dot_Y)
        # S Y^T in chronological order: drop the oldest position, shift the rest up and left, the new pair last.
        # After the push, chronological position k holds slot (head + 1 - H + k) mod H (the new slot at H - 1).
        after = (slot[:, None] + 1 - H + torch.arange(H, device=s.device)[None, :]) % H
        shifted = torch.empty_like(self.SY)
        shifted[:, :-1, :-1] = self.SY[:, 1:, 1:]
        shifted[:, -1, :] = torch.gather(s_dot_Y, 1, after)
        shifted[:, :, -1] = torch.gather(S_dot_y, 1, after)
        self.SY = torch.where(keep[:, :, None], shifted, self.SY)
        YY_row = torch.where(keep, y_dot_Y, self.YY[rows, slot])
        self.YY[rows, slot] = YY_row
        self.YY[rows, :, slot] = YY_row
        self.H_diag = torch.where(push, ys / yy, self.H_diag)
        self.head = torch.where(push, (self.head + 1) % H, self.head)
        self.count = torch.where(push, torch.clamp(self.count + 1, max=H), self.count)
        return new & keep

    def _direction(self, g: torch.Tensor, Sg: torch.Tensor, Yg: torch.Tensor) -> torch.Tensor:
        """The L-BFGS direction ``-H g`` of every problem, from its stored pairs (two-loop recursion), given
        ``S g`` and ``Y g`` in slot order."""
        H = self.history_size
        # chronological order of the slots, oldest first: slot (head - H + k) mod H for k = 0..H-1. Positions that
        # hold no pair have S g = Y g = 0 (empty slots are zero) and a unit diagonal in SY: their alpha and c are 0.
        k = torch.arange(H, device=g.device)
        order = (self.head[:, None] - H + k[None, :]) % H  # (T, H)
        SY = self.SY  # chronological already; Y Y^T is used in slot order (see Yq)
        Sg = torch.gather(Sg, 1, order)
        Yg = torch.gather(Yg, 1, order)
        # solve_triangular reads only the named triangle of its matrix: the upper one of S Y^T, the lower of Y S^T
        alpha = torch.linalg.solve_triangular(SY, -Sg[:, :, None], upper=True).squeeze(-1)
        # back to slot order: coefficient of slot order[t, k] is alpha[t, k] (resp. c[t, k])
        alpha_slot = torch.zeros_like(alpha).scatter_(1, order, alpha)
        Yq = -Yg - torch.gather(torch.einsum("tij,tj->ti", self.YY, alpha_slot), 1, order)
        ys = torch.diagonal(SY, dim1=1, dim2=2)  # 1/rho
        c = torch.linalg.solve_triangular(SY.transpose(1, 2), (ys * alpha - self.H_diag[:, None] * Yq)[:, :, None],
                                          upper=False).squeeze(-1)
        c_slot = torch.zeros_like(c).scatter_(1, order, c)
        q = -g - torch.einsum("th,thd->td", alpha_slot, self.Y)
        return self.H_diag[:, None] * q + torch.einsum("th,thd->td", c_slot, self.S)

    # -------------------------------------------------------------------------------------------- the step

    def step(
        self,
        z: torch.Tensor,
        closure: Closure,
        mask: torch.Tensor | None = None,
        *,
        stop_below: float | None = None,
        sync: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One ``torch.optim.LBFGS.step`` for the problems in ``mask`` (all when ``None``).

        Returns the new variables and the loss at the start of the step (what ``LBFGS.step`` returns).
        Problems whose loss at the start is already below ``stop_below`` do not move (the caller's early stop,
        decided without an extra evaluation), and a problem whose loss falls below it during the step stops
        iterating there (``LBFGS.step`` would go on to ``max_iter``; the official DLG/iDLG loop checks its loss only
        every tenth step). With ``sync=True`` the inner loop ends early once no problem is
        still iterating (one host sync per iteration; pass ``False`` on CUDA to avoid it).
        """
        T = z.shape[0]
        run = torch.ones(T, dtype=torch.bool, device=z.device) if mask is None else mask.clone()
        loss, g = closure(z)
        self.func_evals += run
        orig_loss = loss
        loss = loss.double()
        run &= ~(g.abs().amax(1) <= self.tolerance_grad)
        if stop_below is not None:
            run &= ~(loss < stop_below)
        for n in range(1, self.max_iter + 1):
            self.n_iter += run
            first = run & (self.n_iter == 1)
            later = run & ~first
            y = g - self.prev_g
            s = self.d * self.t[:, None]
            ys = (y * s).sum(1)
            Sg, Sy, Yg, Yy, Ys = self._project(g, y, s)
            new = self._push(later & (ys > 1e-10), s, y, ys, Sy, Yy, Ys)
            Sg = torch.where(new, (s * g).sum(1)[:, None], Sg)  # the stored pair's products with g
            Yg = torch.where(new, (y * g).sum(1)[:, None], Yg)
            d = torch.where(first[:, None], -g, self._direction(g, Sg, Yg))
            self.d = torch.where(run[:, None], d, self.d)
            self.prev_g = torch.where(run[:, None], g, self.prev_g)
            self.prev_loss = torch.where(run, loss, self.prev_loss)
            t0 = torch.clamp(1.0 / g.abs().sum(1), max=1.0) * self.lr
            t = torch.where(self.n_iter == 1, t0, torch.full_like(t0, self.lr))
            self.t = torch.where(run, t, self.t)
            run &= ~((g * self.d).sum(1) > -self.tolerance_change)
            z = torch.where(run[:, None], z + self.t[:, None] * self.d, z)
            if n == self.max_iter:
                break
            new_loss, new_g = closure(z)
            self.func_evals += run
            loss = torch.where(run, new_loss.double(), loss)
            g = torch.where(run[:, None], new_g, g)
            run &= ~(
                (g.abs().amax(1) <= self.tolerance_grad)
                | ((self.d * self.t[:, None]).abs().amax(1) <= self.tolerance_change)
                | ((loss - self.prev_loss).abs() < self.tolerance_change)
            )
            if stop_below is not None:  # reached the caller's target: spend no more evaluations on it
                run &= ~(loss < stop_below)
            if sync and not bool(run.any()):
                break
        return z, orig_loss


class BatchedAdam:
    """``torch.optim.Adam`` (no weight decay, no amsgrad) for ``num`` independent problems of ``dim`` variables.

    The same interface as :class:`BatchedLBFGS`: ``step(z, closure)`` takes one Adam step for every problem and
    returns the new variables and the loss before the step; ``reset``/``subset`` act per problem.
    """

    def __init__(
        self,
        num: int,
        dim: int,
        *,
        lr: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be positive; got {lr!r}")
        self.lr, self.betas, self.eps = float(lr), betas, float(eps)
        self.m = torch.zeros(num, dim, device=device, dtype=dtype)
        self.v = torch.zeros(num, dim, device=device, dtype=dtype)
        self.t = torch.zeros(num, device=device, dtype=dtype)

    def reset(self, mask: torch.Tensor) -> None:
        """Forget the moments and step count of the problems in ``mask``."""
        self.m[mask] = 0.0
        self.v[mask] = 0.0
        self.t[mask] = 0.0

    def subset(self, index: torch.Tensor) -> None:
        """Keep only the problems at ``index``, in that order."""
        self.m, self.v, self.t = self.m[index], self.v[index], self.t[index]

    def step(
        self,
        z: torch.Tensor,
        closure: Closure,
        mask: torch.Tensor | None = None,
        *,
        stop_below: float | None = None,
        sync: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One Adam step for the problems in ``mask`` (all when ``None``) whose loss is not below ``stop_below``."""
        loss, g = closure(z)
        run = torch.ones(z.shape[0], dtype=torch.bool, device=z.device) if mask is None else mask.clone()
        if stop_below is not None:
            run &= ~(loss.double() < stop_below)
        b1, b2 = self.betas
        r = run[:, None]
        self.t = torch.where(run, self.t + 1, self.t)
        self.m = torch.where(r, b1 * self.m + (1 - b1) * g, self.m)
        self.v = torch.where(r, b2 * self.v + (1 - b2) * g * g, self.v)
        t = self.t.clamp(min=1)[:, None]
        m_hat = self.m / (1 - b1**t)
        v_hat = self.v / (1 - b2**t)
        z = torch.where(r, z - self.lr * m_hat / (v_hat.sqrt() + self.eps), z)
        return z, loss
