#!/usr/bin/env python3
"""Load a folder written by `regrpo publish --format hf` with the Hugging Face `datasets`
package and check that the splits and counts equal what its dataset card claims.

    pip install datasets pyyaml
    python scripts/load_published_hf.py OUT

Exit status 0 when every split loads with the card's num_examples and no source trajectory
appears in two splits.
"""
import sys
from pathlib import Path

import yaml
from datasets import load_dataset


def main(out: str) -> int:
    root = Path(out)
    card = (root / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    claimed = {s["name"]: s["num_examples"] for s in header["dataset_info"]["splits"]}
    # The folder is a dataset repository: the card's `configs` tell `datasets` where the splits are.
    ds = load_dataset(str(root))
    also = load_dataset("parquet", data_dir=str(root / "data"))
    ok = True
    owner = {}
    for split, n in claimed.items():
        got = ds[split].num_rows if split in ds else 0
        got_parquet = also[split].num_rows if split in also else 0
        print(f"{split:<11} card {n:>7}  load_dataset(OUT) {got:>7}  load_dataset('parquet') {got_parquet:>7}")
        ok &= got == n == got_parquet
        if split in ds:
            for t in set(ds[split]["source_trajectory_id"]):
                if owner.setdefault(t, split) != split:
                    print(f"leak: trajectory {t} in {owner[t]} and {split}")
                    ok = False
    print("features:", ", ".join(f"{k}: {v}" for k, v in ds[next(iter(ds))].features.items()))
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
