"""``pem-train``: train a preset on a dataset folder (one process, or DDP with ``torchrun --nproc_per_node N``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pem.runtime.entry import command
from pem.runtime.errors import EXIT_INTERRUPTED, PemError
from pem.runtime.sizes import parse_size
from pem.training.engine import TrainOptions, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pem-train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="preset name (pem.config.list_presets())")
    parser.add_argument("--data", type=Path, required=True, help="dataset root (the preset's real layout)")
    parser.add_argument("--out", type=Path, required=True, help="run folder: last.pth, model_final.pth, log.jsonl")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (default: the preset's schedule length)")
    parser.add_argument("--minutes", type=float, help="stop (and save) after this many minutes")
    parser.add_argument("--stop-after", type=int, help="stop (and save) after N steps of this run; the schedule "
                        "still spans --max-steps, so --resume continues it")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/last.pth (an error when there is none)")
    parser.add_argument("--resume-or-start", action="store_true",
                        help="continue from OUT/last.pth, or start a new run when OUT is empty or missing")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run in a folder that holds one (its last.pth, model_final.pth and "
                        "log.jsonl are removed); without it, or --resume, a non-empty OUT is refused")
    parser.add_argument("--force", action="store_true",
                        help="--resume even when preset, data folder, global batch or crop differ from the "
                        "checkpoint's")
    parser.add_argument("--batch-size", type=int, help="global batch per optimizer step (over all processes)")
    parser.add_argument("--accumulate", type=int, default=1, help="gradient accumulation micro-batches per step")
    parser.add_argument("--lr", type=float, help="base learning rate (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--num-points", type=int, help="points for the matcher and mask losses (official 12544)")
    parser.add_argument("--init", help="our checkpoint to start from (full model, or backbone from pem-convert)")
    parser.add_argument("--crop", type=parse_size,
                        help="training crop HxW instead of the preset's (the resize choices scale with it)")
    parser.add_argument("--eval-every", type=int, default=0, help="evaluate on DATA's val split every N steps")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="save OUT/last.pth every N steps")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0,
                        help="also save OUT/last.pth when this many minutes passed since the last save "
                        "(0: only by steps); SIGINT/SIGTERM always save before exiting with 130")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--freeze-bn", action="store_true", help="BN layers in eval mode (fixed statistics)")
    parser.add_argument("--skip-bad-files", action="store_true", help="report and skip corrupt/missing files")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    return parser


@command("pem-train")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.accumulate < 1:
        print("pem-train: error: --accumulate must be >= 1", file=sys.stderr)
        return 2
    if args.overwrite and (args.resume or args.resume_or_start):
        print("pem-train: error: --overwrite contradicts --resume/--resume-or-start", file=sys.stderr)
        return 2
    if args.checkpoint_every < 1 or args.checkpoint_minutes < 0:
        print("pem-train: error: --checkpoint-every must be >= 1 and --checkpoint-minutes >= 0", file=sys.stderr)
        return 2
    options = TrainOptions(
        config=args.config, data=args.data, out=args.out, max_steps=args.max_steps, minutes=args.minutes,
        stop_after=args.stop_after, resume=args.resume, resume_or_start=args.resume_or_start,
        overwrite=args.overwrite, force=args.force, batch_size=args.batch_size, lr=args.lr,
        accumulate=args.accumulate, seed=args.seed, num_workers=args.workers, num_points=args.num_points,
        init=args.init, crop=args.crop, eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every, checkpoint_minutes=args.checkpoint_minutes,
        log_every=args.log_every, freeze_bn=args.freeze_bn,
        on_error="skip" if args.skip_bad_files else "raise", device=args.device,
    )
    try:
        summary = train(options)
    except PemError as error:  # expected failures only: anything else is a bug and keeps its traceback
        kind = "" if error.exit_code == EXIT_INTERRUPTED else "error: "
        print(f"pem-train: {kind}{error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the loop started
        print("pem-train: interrupted before a checkpoint could be saved", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"finished at step {summary['step']}: weights {summary['weights']}, resumable state {summary['checkpoint']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
