"""docs/design.md 13.8's oracle for the preference losses, in NumPy float64, written from the spec."""

import numpy as np


def log_sigmoid(x):
    return -np.logaddexp(0.0, -np.asarray(x, dtype=np.float64))


def dpo_loss(pc, pr, rc, rr, beta):
    return -log_sigmoid(beta * ((np.asarray(pc) - rc) - (np.asarray(pr) - rr)))


def ln_dpo_loss(pc, pr, rc, rr, len_c, len_r, beta):
    return -log_sigmoid(beta * ((np.asarray(pc) - rc) / len_c - (np.asarray(pr) - rr) / len_r))


def wrpo_alpha(step, total_steps, alpha_end, dynamic=True):
    if not dynamic or step > total_steps:
        return float(alpha_end)
    return alpha_end * step / total_steps


def wrpo_loss(p_ws, p_wt, p_l, r_ws, r_wt, r_l, beta, alpha):
    u_ws, u_wt, u_l = np.asarray(p_ws) - r_ws, np.asarray(p_wt) - r_wt, np.asarray(p_l) - r_l
    return -log_sigmoid(beta * (alpha * u_ws + (1.0 - alpha) * u_wt - u_l))
