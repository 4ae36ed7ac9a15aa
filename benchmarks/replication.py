"""Does a rerun land inside the committed intervals? (issue 8, item 5)

Compares a rerun's leaderboard.csv (another machine, or other seeds on this one) with the committed
one: for every model and every metric with an interval, is the rerun's mean inside the committed
95% interval? Prints the misses and the share of hits per metric.

    uv run python benchmarks/replication.py reports/digits/leaderboard.csv /path/to/rerun/reports/digits/leaderboard.csv

Note what it tests: the committed interval is for the committed mean; a rerun's mean is itself
noisy, so even a perfect interval holds a rerun with new seeds less often than 95% of the time
(about 83% for two independent 3-seed means under normal theory). Same seeds on the same machine
must give the same numbers bit for bit; on another machine, floating-point differences make
seed-level numbers differ, and the means should then fall inside the intervals as often as above.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

METRICS = ["accuracy", "log_loss", "ece", "nll_nats", "bits_per_dim", "fid", "precision", "recall", "density",
           "coverage", "memorisation", "cas", "anomaly_auroc", "linear_probe_accuracy"]


def compare(committed: pd.DataFrame, rerun: pd.DataFrame) -> pd.DataFrame:
    committed, rerun = committed.set_index("model"), rerun.set_index("model")
    rows = []
    for model in committed.index.intersection(rerun.index):
        for metric in METRICS:
            if metric not in committed or pd.isna(committed.loc[model, metric]) or pd.isna(rerun.loc[model, metric]):
                continue
            low, high = committed.loc[model, f"{metric}_ci_low"], committed.loc[model, f"{metric}_ci_high"]
            value = rerun.loc[model, metric]
            rows.append({"model": model, "metric": metric, "committed": committed.loc[model, metric],
                         "low": low, "high": high, "rerun": value, "inside": bool(low <= value <= high)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("committed")
    parser.add_argument("rerun")
    args = parser.parse_args()
    table = compare(pd.read_csv(args.committed), pd.read_csv(args.rerun))
    if table.empty:
        sys.exit("no model and metric in common")
    by_metric = table.groupby("metric")["inside"].agg(["sum", "count"])
    print(f"rerun means inside the committed 95% intervals: {int(table['inside'].sum())} of {len(table)} "
          f"({table['inside'].mean():.1%})\n")
    print(by_metric.rename(columns={"sum": "inside", "count": "of"}).to_markdown())
    misses = table[~table["inside"]]
    if len(misses):
        print("\nOutside:\n")
        print(misses.to_markdown(index=False, floatfmt=".4g"))


if __name__ == "__main__":
    main()
