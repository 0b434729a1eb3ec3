"""Write Fashion-MNIST (Debian package dataset-fashion-mnist) as labelled image folders for the pipeline.

    python scripts/make_fmnist_folders.py --out data/fmnist
    python -m curate.pipeline +experiment=curation_ssl_quick data=image_folder data.root=data/fmnist/pool \\
        eval.train_root=data/fmnist/train eval.test_root=data/fmnist/test name=fmnist_quick

Writes ``OUT/pool`` (long-tailed, ~14.7k images), ``OUT/seed`` (200 per class), ``OUT/train`` (500 per
class), ``OUT/test`` (10,000) and ``OUT/splits.json``; see :mod:`curate.data.datasets.fmnist_folders`.
"""

from __future__ import annotations

import argparse
import json

from curate.data.datasets.fmnist_folders import write_fmnist_folders


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--seed-per-class", type=int, default=200)
    parser.add_argument("--lt-max", type=int, default=6000)
    parser.add_argument("--lt-min", type=int, default=60)
    parser.add_argument("--lt-seed", type=int, default=0)
    parser.add_argument("--train-per-class", type=int, default=500, help="labelled train folder, per class")
    parser.add_argument("--test-per-class", type=int, default=None, help="default: the whole test split")
    parser.add_argument("--pool-size", type=int, default=None, help="subsample the pool (quick checks)")
    args = parser.parse_args(argv)
    info = write_fmnist_folders(
        args.out,
        seed_per_class=args.seed_per_class,
        lt_max=args.lt_max,
        lt_min=args.lt_min,
        lt_seed=args.lt_seed,
        eval_train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        pool_size=args.pool_size,
    )
    print(json.dumps(info["folders"], indent=1))
    return info


if __name__ == "__main__":
    from curate.core.errors import cli_entry

    cli_entry(main)
