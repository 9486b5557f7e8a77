"""``pem-eval-panoptic``: PQ of COCO-panoptic predictions against COCO-panoptic ground truth.

Prints All/Things/Stuff PQ, SQ, RQ (percent) and n; ``--json OUT`` also writes the results (fractions in [0, 1])
atomically. Exit codes: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pem.metrics.panoptic_quality import evaluate_panoptic_folders
from pem.runtime.coco_panoptic import write_json_atomic
from pem.runtime.entry import command

PROG = "pem-eval-panoptic"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="PQ of COCO-panoptic predictions against ground truth.")
    parser.add_argument("--gt-json", required=True, help="ground-truth COCO-panoptic JSON")
    parser.add_argument("--gt-folder", required=True, help="folder of the ground-truth PNGs")
    parser.add_argument("--pred-json", required=True, help="predicted COCO-panoptic JSON (paired by image_id)")
    parser.add_argument("--pred-folder", required=True, help="folder of the predicted PNGs")
    parser.add_argument("--json", dest="json_out", help="write the results to this JSON file")
    return parser


def format_table(results: dict[str, Any]) -> str:
    """All/Things/Stuff rows of PQ, SQ, RQ in percent with one decimal, and n."""
    lines = [f"{'':<8}{'PQ':>7}{'SQ':>7}{'RQ':>7}{'n':>6}"]
    for group in ("All", "Things", "Stuff"):
        row = results[group]
        lines.append(f"{group:<8}{100 * row['pq']:>7.1f}{100 * row['sq']:>7.1f}{100 * row['rq']:>7.1f}{row['n']:>6d}")
    return "\n".join(lines)


def _fail(message: str) -> int:
    print(f"{PROG}: error: {' '.join(message.splitlines())}", file=sys.stderr)
    return 2


@command("pem-eval-panoptic")
def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        results = evaluate_panoptic_folders(args.gt_json, args.gt_folder, args.pred_json, args.pred_folder)
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    print(format_table(results))
    if args.json_out:
        try:
            write_json_atomic(args.json_out, results)
        except OSError as exc:
            return _fail(f"cannot write {args.json_out}: {exc.strerror or exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
