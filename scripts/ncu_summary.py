"""Sums an Nsight Compute raw CSV (`ncu --metrics gpu__time_duration.sum --csv --page raw`) per
kernel name: launches, total and mean GPU time, share of the whole. Used by
scripts/device-check.sh's `profile` part to tell launch-bound from arithmetic-bound.

    python3 scripts/ncu_summary.py ncu-raw.csv [--top 40]
"""

import argparse
import csv
import os
import re
import sys
from collections import defaultdict

UNIT_NS = {"nsecond": 1.0, "ns": 1.0, "usecond": 1e3, "us": 1e3, "msecond": 1e6, "ms": 1e6, "second": 1e9, "s": 1e9}
METRIC = "gpu__time_duration.sum"


def read_rows(path):
    """The CSV's rows from its header on (ncu may write ==PROF== lines before it)."""
    if not os.path.exists(path):
        sys.exit(f"{path}: no such file (ncu wrote no CSV: see its messages above)")
    with open(path, newline="", errors="replace") as f:
        lines = f.readlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        sys.exit(f"{path}: no ncu CSV header (a line starting with \"ID\") found")
    return list(csv.reader(lines[start:]))


def short_name(name):
    """A kernel's name without template arguments and parameter lists (groups its instances)."""
    name = re.sub(r"\(.*\)$", "", name.strip())
    depth, out = 0, []
    for ch in name:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(depth - 1, 0)
        elif depth == 0:
            out.append(ch)
    return "".join(out).strip() or name


def summarise(rows):
    header = rows[0]
    if "Metric Name" in header:
        return summarise_long(rows)
    try:
        name_col, time_col = header.index("Kernel Name"), header.index(METRIC)
    except ValueError:
        sys.exit(f"the CSV has no 'Kernel Name' or '{METRIC}' column: {header}")
    body = rows[1:]
    scale = 1.0
    if body and not body[0][0].strip():  # the units row
        unit = body[0][time_col].strip()
        if unit not in UNIT_NS:
            sys.exit(f"unknown time unit {unit!r}")
        scale = UNIT_NS[unit]
        body = body[1:]
    per = defaultdict(lambda: [0, 0.0])
    for row in body:
        if len(row) <= max(name_col, time_col) or not row[time_col].strip():
            continue
        value = float(row[time_col].replace(",", "")) * scale
        entry = per[short_name(row[name_col])]
        entry[0] += 1
        entry[1] += value
    return per


def summarise_long(rows):
    """The details page's layout (one row per kernel and metric: "Metric Name", "Metric Unit",
    "Metric Value"), in case `--page raw` is not taken."""
    header = rows[0]
    cols = {k: header.index(k) for k in ("Kernel Name", "Metric Name", "Metric Unit", "Metric Value")}
    per = defaultdict(lambda: [0, 0.0])
    for row in rows[1:]:
        if len(row) <= max(cols.values()) or row[cols["Metric Name"]] != METRIC:
            continue
        unit = row[cols["Metric Unit"]].strip()
        if unit not in UNIT_NS:
            sys.exit(f"unknown time unit {unit!r}")
        entry = per[short_name(row[cols["Kernel Name"]])]
        entry[0] += 1
        entry[1] += float(row[cols["Metric Value"]].replace(",", "")) * UNIT_NS[unit]
    return per


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    per = summarise(read_rows(args.csv))
    launches = sum(n for n, _ in per.values())
    total_ns = sum(t for _, t in per.values())
    if not launches:
        sys.exit("no kernel rows")
    print(f"kernel launches: {launches}, distinct kernels: {len(per)}")
    print(f"GPU time of all kernels: {total_ns / 1e6:.2f} ms, mean {total_ns / launches / 1e3:.2f} us a launch")
    print(f"{'kernel':<60} {'launches':>9} {'total ms':>9} {'mean us':>8} {'share':>6}")
    for name, (n, t) in sorted(per.items(), key=lambda kv: -kv[1][1])[: args.top]:
        print(f"{name[:60]:<60} {n:9d} {t / 1e6:9.3f} {t / n / 1e3:8.2f} {100 * t / total_ns:5.1f}%")
    print("by launches:")
    for name, (n, t) in sorted(per.items(), key=lambda kv: -kv[1][0])[:15]:
        print(f"  {name[:60]:<60} {n:9d} ({100 * n / launches:4.1f}% of launches)")


if __name__ == "__main__":
    main()
