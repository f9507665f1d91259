"""CLV pipeline benchmark: ours against lifetimes, side by side, in one run (run by hand, not a test).

    python benchmarks/bench_clv.py                 # 1,000,000 customers (~10 million transactions)
    python benchmarks/bench_clv.py --customers 100000 --pareto-cap 600
    python benchmarks/bench_clv.py --only summary --repeat 3   # step 1 only, three side-by-side runs

Prints, for the same simulated transaction log:
1. rfm_summary (a pandas frame: the numpy path) against lifetimes' summary_data_from_transaction_data
   (weeks with day precision), with a row-for-row equality check;
2. BG/NBD and Pareto/NBD fits: ours (compressed summary, weights) against
   lifetimes fitting the uncompressed summary, parameters compared to 4
   significant digits. Lifetimes' Pareto/NBD on every customer can take hours:
   when its fit on a subsample, scaled by the size ratio, would exceed
   ``--pareto-cap`` seconds, it is timed on that subsample (both libraries fit the
   same subsample for the parameter comparison) and the full-size time is
   reported as an extrapolation, said so in the output;
3. our whole pipeline, run in a fresh process on the log written as Parquet
   (read through Ibis/DuckDB, summarised, three fits, P(alive), purchases and
   CLV with intervals for every customer): its time and peak memory (max RSS).
   The generator and lifetimes' pandas run in the parent process, whose peak
   is reported separately.

``--only summary`` runs step 1 alone (no pipeline, no fits), ``--repeat N`` times
on the same log, ours then lifetimes each time, and prints every run and the
median ratio: the machine is shared, so one ratio is noisy.

The log is clm_helpers.synthetic.simulate_company's when that module exists,
else clv.simulate_transactions (a BG/NBD + Gamma-Gamma process, vectorised numpy).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from clm_helpers import clv
from clm_helpers.data import write_table


def peak_mb() -> float:
    """Peak resident memory of this process in MB: VmHWM (reset by exec, unlike ru_maxrss, which a child inherits)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def sig4(a, b) -> bool:
    """Equal to 4 significant digits: relative difference below 1e-4 (rounding both would be fragile at a digit boundary)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return bool(np.all(np.abs(a - b) <= 1e-4 * np.abs(b)))


def loglik(name, params, summary) -> float:
    """Log-likelihood of ``params`` on ``summary`` by our formula (to say which of two estimates is the better maximum)."""
    m = clv.MODELS[name]()
    data = m._prepare(summary)
    return float(np.dot(data["weight"], m._loglik(np.asarray(params, float), data)))


def transaction_log(n: int, seed: int):
    try:
        from clm_helpers.synthetic import simulate_company  # noqa: F401
    except ImportError:
        tx, truth = clv.simulate_transactions(n, seed=seed, bgnbd=(0.6, 2.5, 0.5, 4.0))  # ~10 transactions a customer
        return tx, truth["observation_end"], "clv.simulate_transactions (BG/NBD + Gamma-Gamma)"
    tables, truth = simulate_company(n, seed=seed)
    tx = tables["transactions"]
    tx = tx[tx["amount"] >= 0][["customer_id", "timestamp", "amount"]]  # refunds would make lifetimes disagree by design
    return tx, str(pd.Timestamp(tx["timestamp"].max()).date()), "clm_helpers.synthetic.simulate_company"


def lifetimes_summary(lt, tx, obs):
    """lifetimes' summary of ``tx`` (weeks with day precision, as ours with time_unit="W"), sorted by customer, and its time."""
    theirs, t = timed(lt.utils.summary_data_from_transaction_data, tx, "customer_id", "timestamp", "amount",
                      observation_period_end=obs, freq="D", freq_multiplier=7)
    return theirs.sort_index(), t


def same_summary(ours, theirs) -> bool:
    """The same customers in the same order, and every lifetimes column equal to ours (to rounding)."""
    return (list(theirs.index) == list(ours.index)
            and all(np.allclose(ours[c].to_numpy(), theirs[c].to_numpy(), rtol=1e-10, atol=1e-9) for c in theirs.columns))


def summary_only(lt, tx, obs, repeat, report, rows) -> int:
    """Step 1 alone, ``repeat`` times on the same log (ours, then lifetimes), with the median ratio."""
    for i in range(repeat):
        ours, t_ours = timed(clv.rfm_summary, tx, observation_end=obs, time_unit="W")
        theirs, t_lt = lifetimes_summary(lt, tx, obs)
        report(f"rfm_summary (run {i + 1} of {repeat})", t_ours, t_lt,
               "identical output" if same_summary(ours, theirs) else "OUTPUT DIFFERS")
        del ours, theirs
    print(f"median: ours {np.median([r[1] for r in rows]):.2f} s, lifetimes {np.median([r[2] for r in rows]):.2f} s, "
          f"ratio {np.median([r[3] for r in rows]):.1f}x (median of each column separately)")
    return 0


def pipeline(path: str, obs: str) -> dict:
    """Our whole pipeline from a Parquet log: summary, three fits, per-customer predictions and CLV with intervals."""
    from clm_helpers import engine

    t_all = time.perf_counter()
    tx = engine.default_backend().read_parquet(path)  # an Ibis table: the log stays in DuckDB
    summary, t_sum = timed(clv.rfm_summary, tx, observation_end=obs, time_unit="W")
    bg, t_bg = timed(clv.fit_model, summary, "bgnbd")
    _, t_pn = timed(clv.fit_model, summary, "pareto_nbd")
    gg, t_gg = timed(clv.fit_model, summary, "gamma_gamma")
    pred, t_pred = timed(clv.predict_customers, bg, summary, horizon=52, n_draws=50)
    value, t_val = timed(clv.customer_value, bg, gg, summary, horizon_months=12, discount_rate=0.1, n_draws=30)
    assert np.isfinite(pred.to_numpy()).all() and np.isfinite(value["clv"]).all()
    return {"total": time.perf_counter() - t_all, "rfm_summary": t_sum, "bgnbd": t_bg, "pareto_nbd": t_pn,
            "gamma_gamma": t_gg, "predict": t_pred, "clv": t_val, "peak_mb": peak_mb()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", help=argparse.SUPPRESS)  # internal: run our pipeline on this Parquet file
    ap.add_argument("--observation-end", help=argparse.SUPPRESS)
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--pareto-cap", type=float, default=600.0, help="seconds lifetimes' Pareto/NBD may take at full size")
    ap.add_argument("--pareto-subsample", type=int, default=100_000)
    ap.add_argument("--only", choices=["summary"], help="run only this step: the rfm_summary comparison")
    ap.add_argument("--repeat", type=int, default=1, help="with --only summary: side-by-side runs on the same log")
    ap.add_argument("--order", choices=["generated", "time"], default="generated",
                    help="row order of the log: as generated (grouped by customer) or sorted by time (as an append-only log arrives)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.pipeline:
        print(json.dumps(pipeline(args.pipeline, args.observation_end)))
        return 0
    lt = clv._lifetimes()
    rows = []

    def report(what, ours, theirs, note=""):
        ratio = theirs / ours if ours and theirs == theirs else float("nan")
        rows.append((what, ours, theirs, ratio, note))
        print(f"{what:<38} ours {ours:9.2f} s   lifetimes {theirs:9.2f} s   {ratio:6.1f}x  {note}", flush=True)

    # ---------------------------------------------------------------- the log, and our pipeline in a fresh process
    (tx, obs, source), t_sim = timed(transaction_log, args.customers, args.seed)
    if args.order == "time":
        tx = tx.sort_values("timestamp", kind="stable").reset_index(drop=True)
        source += ", rows sorted by time"
    print(f"{len(tx):,} transactions of {tx['customer_id'].nunique():,} customers from {source}; "
          f"observation end {obs}; simulated in {t_sim:.1f} s", flush=True)
    if args.only == "summary":
        return summary_only(lt, tx, obs, args.repeat, report, rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_table(tx, Path(tmp) / "transactions.parquet")
        out = subprocess.run([sys.executable, __file__, "--pipeline", str(path), "--observation-end", obs],
                             capture_output=True, text=True, check=False)
        if out.returncode:
            print(out.stdout, out.stderr)
            raise SystemExit("our pipeline failed")
        pipe = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"our pipeline, in a fresh process reading the Parquet log through Ibis/DuckDB: {pipe['total']:.1f} s end to end "
          f"(rfm_summary {pipe['rfm_summary']:.1f} s; fits: BG/NBD {pipe['bgnbd']:.2f} s, Pareto/NBD {pipe['pareto_nbd']:.2f} s, "
          f"Gamma-Gamma {pipe['gamma_gamma']:.2f} s; P(alive) + purchases with intervals {pipe['predict']:.1f} s; "
          f"CLV with intervals {pipe['clv']:.1f} s); peak memory {pipe['peak_mb']:,.0f} MB", flush=True)

    # the side-by-side comparisons, on the same DataFrame in this process
    ours_summary, t_ours_sum = timed(clv.rfm_summary, tx, observation_end=obs, time_unit="W")
    compressed = clv.compress_summary(ours_summary)
    print(f"summary: {len(ours_summary):,} customers -> {len(compressed):,} distinct (frequency, recency, T) rows "
          f"({len(compressed) / len(ours_summary):.1%})", flush=True)
    bg, t_bg = timed(clv.fit_model, ours_summary, "bgnbd")
    pn, t_pn = timed(clv.fit_model, ours_summary, "pareto_nbd")

    # ---------------------------------------------------------------- rfm summary
    theirs_summary, t_lt_sum = lifetimes_summary(lt, tx, obs)
    report("rfm_summary", t_ours_sum, t_lt_sum, "identical output" if same_summary(ours_summary, theirs_summary)
           else "OUTPUT DIFFERS")
    del tx

    # ---------------------------------------------------------------- BG/NBD
    f, r, T = (ours_summary[c] for c in ("frequency", "recency", "T"))
    try:
        lbg, t_lbg = timed(lt.BetaGeoFitter().fit, f, r, T)
        lparams = [lbg.params_[k] for k in ("r", "alpha", "a", "b")]
        note = "parameters equal to 4 significant digits" if sig4(bg.params_, lparams) else \
            (f"parameters differ: ours {np.round(bg.params_.to_numpy(), 5)} lifetimes {np.round(lparams, 5)} "
             f"(log-likelihood ours {bg.log_likelihood_:,.3f}, lifetimes' estimate {loglik('bgnbd', lparams, ours_summary):,.3f})")
    except Exception as exc:  # lifetimes' ConvergenceError and friends
        t_lbg, note = float("nan"), f"lifetimes failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
    report("BG/NBD fit", t_bg, t_lbg, note)

    # ---------------------------------------------------------------- Pareto/NBD
    n = len(ours_summary)
    sub = ours_summary.sample(min(args.pareto_subsample, n), random_state=1) if n > args.pareto_subsample else ours_summary
    try:
        lpn_sub, t_lpn_sub = timed(lt.ParetoNBDFitter().fit, sub["frequency"], sub["recency"], sub["T"])
        scaled = t_lpn_sub * n / len(sub)
        if len(sub) < n and scaled <= args.pareto_cap:
            lpn, t_lpn = timed(lt.ParetoNBDFitter().fit, f, r, T)
            ours_cmp, basis = pn, "all customers"
        else:
            lpn, t_lpn = lpn_sub, scaled
            ours_cmp = clv.fit_model(sub, "pareto_nbd")
            basis = (f"lifetimes timed on a {len(sub):,}-customer subsample ({t_lpn_sub:.1f} s) and scaled by "
                     f"{n / len(sub):.0f} (its fit time grows linearly with rows); parameters compared on that subsample")
        lparams = [lpn.params_[k] for k in ("r", "alpha", "s", "beta")]
        eq = sig4(ours_cmp.params_, lparams)
        note = ("parameters equal to 4 significant digits" if eq else
                f"parameters differ: ours {np.round(ours_cmp.params_.to_numpy(), 5)} lifetimes {np.round(lparams, 5)}"
                f" (log-likelihood ours {ours_cmp.log_likelihood_:,.3f}, lifetimes' estimate "
                f"{loglik('pareto_nbd', lparams, ours_summary if basis == 'all customers' else sub):,.3f})") + f"; {basis}"
    except Exception as exc:
        t_lpn, note = float("nan"), f"lifetimes failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
    report("Pareto/NBD fit", t_pn, t_lpn, note)

    print(f"\npeak memory: our pipeline {pipe['peak_mb']:,.0f} MB (fresh process, from Parquet); this process (generator, "
          f"pandas log, lifetimes) {peak_mb():,.0f} MB")
    print("\n| step | ours (s) | lifetimes (s) | speed-up | note |\n|---|---|---|---|---|")
    for what, o, t, ratio, note in rows:
        print(f"| {what} | {o:.2f} | {t:.2f} | {ratio:.1f}x | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
