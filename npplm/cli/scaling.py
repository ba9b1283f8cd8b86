"""`npplm scaling`: thin over npplm.training.scaling."""

from npplm.cli.common import add_command, checking_arguments, positive_int

DESCRIPTION = """\
Train a sweep of tiny GPT-2s (every width for every step budget: 3 x 3 = 9 runs by default,
about two minutes on two cores) on the same data, fit Kaplan's L(N) = (N_c / N)^alpha and
Chinchilla's L(N, D) = E + A / N^alpha + B / D^beta, print the compute-optimal N and D for a
range of budgets, and plot both to OUT/scaling.png (numbers in OUT/scaling.json). The sweep
needs two widths or more, two step budgets or more, and more runs than the 5 parameters of
L(N, D); it is checked before anything trains."""


def add_parser(sub):
    p = add_command(sub, "scaling", "fit scaling laws to a sweep of tiny GPT-2s", DESCRIPTION)
    p.add_argument("--widths", type=positive_int, nargs="+", default=[32, 64, 128],
                   help="model widths (n_embd), one head per 16 channels")
    p.add_argument("--steps", type=positive_int, nargs="+", default=[100, 200, 400],
                   help="step budgets, each of 8 blocks of 64 tokens")
    p.add_argument("--layers", type=positive_int, default=2, help="layers of every model")
    p.add_argument("--max-chars", type=positive_int, default=1_000_000,
                   help="characters of the standard library to read")
    p.add_argument("--out", metavar="DIR", default="runs/scaling", help="where scaling.json "
                                                                        "and scaling.png go")
    p.add_argument("--seed", type=int, default=0, help="seeds the data and the models")
    p.set_defaults(func=run_command)
    return p


def run_command(args):
    import pathlib

    from npplm.io import write_json
    from npplm.training.scaling import check_sweep, fit_runs, plot_sweep, run_sweep

    with checking_arguments():
        check_sweep(args.widths, args.steps)
    out = pathlib.Path(args.out)
    runs = run_sweep(widths=args.widths, steps=args.steps, n_layer=args.layers,
                     max_chars=args.max_chars, seed=args.seed)
    fits = fit_runs(runs)
    out.mkdir(parents=True, exist_ok=True)
    write_json({"runs": runs, "fits": fits}, out / "scaling.json")
    plot_sweep(runs, fits, out / "scaling.png")
    pl, ch = fits["power_law"], fits["chinchilla"]
    print(f"L(N) = (N_c / N)^alpha: alpha_N = {pl['alpha_N']:.3f}, N_c = {pl['N_c']:.3g} "
          f"(at D = {pl['D']:,} tokens)")
    print(f"L(N, D) = {ch['E']:.3f} + {ch['A']:.3g} / N^{ch['alpha']:.2f} + {ch['B']:.3g} / "
          f"D^{ch['beta']:.2f} (rmse {ch['rmse']:.4f})")
    for row in fits["compute_optimal"]:
        print(f"C = {row['C']:.2e} FLOPs: N_opt = {row['N_opt']:,.0f}, D_opt = "
              f"{row['D_opt']:,.0f} ({row['tokens_per_parameter']:.1f} tokens per parameter)")
    print(f"wrote {out / 'scaling.json'} and {out / 'scaling.png'}")
