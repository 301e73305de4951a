"""Per-seed results of three wrong variants of composite, for tests/test_reproduce.py.

Each variant is the recorded per-seed table of the real preset
(``scripts/expected/ci_reproduce_runs.csv``, written by ``fedca reproduce --record``) with its
composite rows replaced by what the wrong code produces, run for real:

* ``local_as_composite``: composite silently replaced by no aggregation is the preset's own
  ``agg=local`` runs (same seeds), relabelled composite;
* ``fedavg_as_composite``: likewise the preset's ``agg=fedavg`` runs;
* ``similarity_sign_flipped``: the preset's composite runs made by a scratch copy of the code in
  which the similarity term enters the weights with the wrong sign::

      mkdir /tmp/flip && git archive HEAD | tar -x -C /tmp/flip
      sed -i 's/ - w_sim \\* similarity + p/ + w_sim * similarity + p/' /tmp/flip/fedca/aggregators/composite.py
      PYTHONPATH=/tmp/flip fedca run -m +experiment=ci_reproduce agg=composite hydra/launcher=joblib \\
          hydra.sweep.dir=/tmp/flip-runs resume=true

Then::

    python scripts/reproduce_variants.py --sign-flipped-sweep /tmp/flip-runs

writes tests/data/reproduce_variants/<variant>.csv (per-seed summary rows only, no data).
"""

import argparse
from pathlib import Path

import pandas as pd

from fedca.reproduce import per_seed_table, read_table
from fedca.results.atomic import write_text

REPO = Path(__file__).resolve().parents[1]


def with_composite_rows(real: pd.DataFrame, replacement: pd.DataFrame) -> pd.DataFrame:
    """``real`` with its composite rows replaced by ``replacement`` relabelled composite."""
    relabelled = replacement.assign(agg="composite")
    return pd.concat([real[real["agg"] != "composite"], relabelled]).sort_values(
        ["dataset", "protocol", "agg", "seed"], kind="stable").reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=REPO / "scripts" / "expected" / "ci_reproduce_runs.csv")
    parser.add_argument("--sign-flipped-sweep", type=Path,
                        help="sweep folder of the sign-flipped copy's composite runs (without it, only the "
                             "two relabelled variants are written)")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "reproduce_variants")
    args = parser.parse_args()
    real = read_table(args.real)
    variants = {"local_as_composite": with_composite_rows(real, real[real["agg"] == "local"]),
                "fedavg_as_composite": with_composite_rows(real, real[real["agg"] == "fedavg"])}
    if args.sign_flipped_sweep:
        variants["similarity_sign_flipped"] = with_composite_rows(real, per_seed_table(args.sign_flipped_sweep))
    for name, table in variants.items():
        write_text(args.out / f"{name}.csv", table.to_csv(index=False, float_format="%.17g"))
        print(f"wrote {args.out / f'{name}.csv'}")


if __name__ == "__main__":
    main()
