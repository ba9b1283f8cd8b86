"""Scaling laws, measured on a laptop: a sweep of tiny GPTs, two fits, compute-optimal sizes.

Kaplan et al., "Scaling Laws for Neural Language Models" (arXiv:2001.08361): with enough
data, the test loss of a language model falls as a power of its size,

    L(N) = (N_c / N)^alpha_N           (their eq. 1.1: alpha_N ~ 0.076, N_c ~ 8.8e13)

where N counts the non-embedding parameters (embeddings scale differently and are left
out, their section 2.1). Taking logs makes it a straight line, log L = alpha log N_c -
alpha log N, fitted here by least squares (`fit_power_law`).

Hoffmann et al. ("Training Compute-Optimal Large Language Models", Chinchilla,
arXiv:2203.15556, section 3.3) model the loss of N parameters trained on D tokens as

    L(N, D) = E + A / N^alpha + B / D^beta

E the irreducible loss of the text, the other terms the shortfall of a finite model and
of finite data. For fixed exponents the model is linear in (E, A, B), so `fit_chinchilla`
searches a grid of (alpha, beta), solves each linear least-squares problem, and keeps the
best fit with E, A, B >= 0 (the paper minimises a Huber loss of log L with L-BFGS; a grid
and plain least squares are easier to read and enough for a dozen points). A compute
budget C ~ 6 N D (flops.py) is then spent best at

    N_opt(C) = G (C / 6)^(beta / (alpha + beta)),   D_opt(C) = (C / 6)^(alpha / (alpha + beta)) / G
    G = (alpha A / (beta B))^(1 / (alpha + beta))

(the paper's eq. 4), found by minimising L(N, C / 6N) over N. The paper measured alpha ~
0.34 and beta ~ 0.28: parameters and tokens should grow about equally with compute, the
"20 tokens per parameter" rule.

`npplm scaling` (run_sweep) trains every (width, steps) pair of a small grid on the same
data with the same tokenizer, records each final validation loss, fits both laws and plots
them. Its models are tiny and its budgets short, so its exponents are not GPT-3's; what it
shows is the method, and that loss falls smoothly with both N and D even at this scale.
"""

import math
from dataclasses import dataclass

import numpy as np


def fit_power_law(N, L):
    """(N_c, alpha) of L = (N_c / N)^alpha, least squares in log-log space."""
    x, y = np.log(np.asarray(N, dtype=np.float64)), np.log(np.asarray(L, dtype=np.float64))
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError(f"a power law needs at least two different sizes, got N={list(N)}")
    slope, intercept = np.polyfit(x, y, 1)  # log L = intercept + slope log N
    alpha = -slope
    if alpha <= 0:
        raise ValueError(f"the loss does not fall with N (fitted slope {slope:.3g}): train "
                         "longer or sweep wider")
    return math.exp(intercept / alpha), alpha


@dataclass(frozen=True)
class ChinchillaFit:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    rmse: float  # root mean squared error of the fitted losses

    def loss(self, N, D):
        return self.E + self.A / np.asarray(N, float) ** self.alpha \
            + self.B / np.asarray(D, float) ** self.beta

    def compute_optimal(self, C):
        """(N_opt, D_opt) for a budget of C FLOPs (C = 6 N D), the paper's eq. 4."""
        a, b = self.alpha, self.beta
        G = (a * self.A / (b * self.B)) ** (1.0 / (a + b))
        C6 = np.asarray(C, dtype=np.float64) / 6.0
        return G * C6 ** (b / (a + b)), C6 ** (a / (a + b)) / G


EXPONENTS = np.round(np.linspace(0.02, 1.5, 149), 2)  # the grid of alpha and beta, step 0.01


def fit_chinchilla(N, D, L, exponents=EXPONENTS):
    """The ChinchillaFit of L(N, D) = E + A/N^alpha + B/D^beta with E, A, B >= 0."""
    N, D, L = (np.asarray(v, dtype=np.float64) for v in (N, D, L))
    if not len(N) == len(D) == len(L) or len(L) <= CHINCHILLA_PARAMETERS:
        raise ValueError(f"fitting L(N, D) needs more runs than its {CHINCHILLA_PARAMETERS} "
                         f"parameters (E, A, alpha, B, beta), got {len(L)}")
    best = None
    for a in exponents:
        for b in exponents:
            X = np.stack([np.ones_like(N), N**-a, D**-b], axis=1)  # (runs, 3)
            coef, *_ = np.linalg.lstsq(X, L, rcond=None)
            if (coef < 0).any():  # clamp: refit without the negative terms
                keep = coef >= 0
                coef = np.zeros(3)
                if keep.any():
                    coef[keep] = np.linalg.lstsq(X[:, keep], L, rcond=None)[0]
                coef = np.maximum(coef, 0.0)
            err = float(np.sqrt(np.mean((X @ coef - L) ** 2)))
            if best is None or err < best[0]:
                best = (err, coef, a, b)
    err, (E, A, B), a, b = best
    return ChinchillaFit(float(E), float(A), float(B), float(a), float(b), err)


CHINCHILLA_PARAMETERS = 5  # E, A, alpha, B, beta


def sweep_heads(width):
    """The sweep's head count for a width: one head per 16 channels."""
    return max(1, width // 16)


def check_sweep(widths, steps):
    """ValueError, before anything is trained, for a sweep whose runs could not be fitted:
    L(N) needs two widths or more, L(N, D) two step budgets or more and more runs than
    its five parameters; each width must split into its heads."""
    for name, values in (("--widths", widths), ("--steps", steps)):
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        if bad:
            raise ValueError(f"{name} {bad[0]!r} must be a positive integer")
    for w in widths:
        if w % sweep_heads(w):
            raise ValueError(f"--widths {w} does not split into {sweep_heads(w)} heads (one "
                             f"per 16 channels): use a multiple of 16, or a width below 32")
    widths, steps = sorted(set(widths)), sorted(set(steps))
    if len(widths) < 2:
        raise ValueError(f"--widths {' '.join(map(str, widths))}: the power law L(N) needs at "
                         "least two different widths")
    if len(steps) < 2:
        raise ValueError(f"--steps {' '.join(map(str, steps))}: L(N, D) needs at least two "
                         "different step budgets")
    if len(widths) * len(steps) <= CHINCHILLA_PARAMETERS:
        raise ValueError(f"{len(widths)} widths x {len(steps)} step budgets = "
                         f"{len(widths) * len(steps)} runs, but L(N, D) has "
                         f"{CHINCHILLA_PARAMETERS} parameters: give more widths or steps "
                         "(e.g. --widths 32 64 128 --steps 100 200 400)")


def run_sweep(widths=(32, 64, 128), steps=(100, 200, 400), n_layer=2, block_size=64,
              batch_size=8, vocab_size=1024, lr=3e-3, max_chars=1_000_000, seed=0,
              log=print):
    """Train a GPT-2 of every width for every step budget on the stdlib; return the runs
    as dicts (width, steps, N non-embedding, D tokens, C = 6 N D, final validation loss).
    The sweep is checked first (check_sweep)."""
    check_sweep(widths, steps)
    from npplm.models.gpt import GPT2LMHeadModel, GPTConfig
    from npplm.training.data import pack, split_documents, stdlib_documents, tokenize_documents
    from npplm.training.recipe import EOT, FAMILIES, train_tokenizer
    from npplm.training.trainer import TrainConfig, Trainer

    docs = stdlib_documents(max_chars)
    train_docs, val_docs = split_documents(docs, 0.1, seed)
    tok = train_tokenizer(FAMILIES["gpt"].tokenizer, train_docs, vocab_size, log)
    sep = tok.token_to_id(EOT)
    train = pack(tokenize_documents(tok, train_docs), block_size, sep, "training split")
    val = pack(tokenize_documents(tok, val_docs), block_size, sep, "validation split")

    def collate(examples, rng):
        x = np.stack(examples)
        return {"input_ids": x, "labels": x}

    runs = []
    for width in widths:
        config = GPTConfig(vocab_size=tok.vocab_size, n_positions=block_size, n_embd=width,
                           n_layer=n_layer, n_head=sweep_heads(width), resid_pdrop=0.0,
                           embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=sep, eos_token_id=sep)
        # Kaplan's N: the parameters outside the two embedding tables.
        N = 12 * n_layer * width**2 + 13 * n_layer * width + 2 * width
        for n_steps in steps:
            model = GPT2LMHeadModel(config, seed=seed)
            cfg = TrainConfig(steps=n_steps, batch_size=batch_size, lr=lr,
                              warmup_steps=max(1, n_steps // 10), eval_every=0,
                              eval_batches=8, save_every=0, log_every=n_steps, seed=seed)
            trainer = Trainer(model, collate, train, val, cfg)
            trainer.fit()
            D = n_steps * batch_size * block_size
            loss = trainer.evaluate()
            runs.append(dict(width=width, steps=n_steps, N=N, D=D, C=6 * N * D,
                             val_loss=loss))
            log(f"width {width:4d} | N {N:9,d} | D {D:9,d} tokens | validation loss "
                f"{loss:.4f}")
    return runs


def fit_runs(runs):
    """Both fits of a sweep: L(N) at the largest D, and Chinchilla's L(N, D)."""
    largest = max(r["D"] for r in runs)
    at_largest = [r for r in runs if r["D"] == largest]
    Nc, alpha_N = fit_power_law([r["N"] for r in at_largest],
                                [r["val_loss"] for r in at_largest])
    fit = fit_chinchilla([r["N"] for r in runs], [r["D"] for r in runs],
                         [r["val_loss"] for r in runs])
    budgets = np.geomspace(min(r["C"] for r in runs), max(r["C"] for r in runs) * 10, 6)
    N_opt, D_opt = fit.compute_optimal(budgets)
    return {"power_law": {"N_c": Nc, "alpha_N": alpha_N, "D": largest},
            "chinchilla": {k: getattr(fit, k) for k in ("E", "A", "B", "alpha", "beta",
                                                        "rmse")},
            "compute_optimal": [{"C": float(c), "N_opt": float(n), "D_opt": float(d),
                                 "tokens_per_parameter": float(d / n)}
                                for c, n, d in zip(budgets, N_opt, D_opt)]}


def plot_sweep(runs, fits, path):
    """Two panels: loss against N with the power law; loss against compute with the
    Chinchilla fit's compute-optimal frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for D in sorted({r["D"] for r in runs}):
        rows = sorted((r for r in runs if r["D"] == D), key=lambda r: r["N"])
        left.plot([r["N"] for r in rows], [r["val_loss"] for r in rows], "o-",
                  label=f"D = {D:,} tokens")
    pl = fits["power_law"]
    Ns = np.geomspace(min(r["N"] for r in runs), max(r["N"] for r in runs), 50)
    left.plot(Ns, (pl["N_c"] / Ns) ** pl["alpha_N"], "k--",
              label=f"(N_c / N)^{pl['alpha_N']:.3f}")
    left.set(xscale="log", yscale="log", xlabel="non-embedding parameters N",
             ylabel="validation loss (nats/token)", title="L(N)")
    left.legend(fontsize=8)
    for width in sorted({r["width"] for r in runs}):
        rows = sorted((r for r in runs if r["width"] == width), key=lambda r: r["C"])
        right.plot([r["C"] for r in rows], [r["val_loss"] for r in rows], "o-",
                   label=f"N = {rows[0]['N']:,}")
    ch = fits["chinchilla"]
    fit = ChinchillaFit(**ch)
    Cs = np.array([c["C"] for c in fits["compute_optimal"]])
    N_opt, D_opt = fit.compute_optimal(Cs)
    right.plot(Cs, fit.loss(N_opt, D_opt), "k--", label="compute-optimal (fit)")
    right.set(xscale="log", xlabel="training compute C = 6 N D (FLOPs)",
              title=f"L(N, D) = {ch['E']:.2f} + {ch['A']:.3g}/N^{ch['alpha']:.2f} + "
                    f"{ch['B']:.3g}/D^{ch['beta']:.2f}")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
