"""``mpnn-scaling`` (also ``python -m mpnn.cli.scaling``): the flags of each step of a scaling
study (`mpnn.scaling`) -> the library's plan, run, submit and collect functions."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from typing import Sequence

import mpnn.scaling
from mpnn.cli.flags import add_legacy_family_flag, add_settings_flags
from mpnn.cli.runner import run
from mpnn.cli.train import build_parser as build_train_parser
from mpnn.scaling import collect, local, plan, submit
from mpnn.settings import settings_of

PROG = "mpnn-scaling"

log = logging.getLogger(PROG)

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=mpnn.scaling.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    sub = commands.add_parser("plan", help="expand a study into runs (DIR/study.json)", description=plan.__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS)
    sub.add_argument("study_file", nargs="?", metavar="STUDY.yaml", help="study settings (keys as the flags below)")
    sub.add_argument("-o", "--output", required=True, metavar="DIR", help="study directory")
    add_settings_flags(sub, plan.Study)
    add_legacy_family_flag(sub, PROG)
    sub.add_argument("--train-args", dest="train_args", metavar="'FLAGS'",
                     help="further mpnn-train flags for every run, e.g. --train-args='--width 16 --verbose 0'")

    sub = commands.add_parser("run", help="train the runs one after another on this machine",
                              description=local.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("--local", required=True, action="store_true", help="run here with horovodrun (required)")
    sub.add_argument("study_dir", metavar="DIR", help="study directory written by plan")
    sub.add_argument("--controller", choices=local.CONTROLLERS, default="gloo", help="horovodrun controller")
    sub.add_argument("--dry-run", action="store_true", help="print the commands of unfinished runs only")

    sub = commands.add_parser("submit", help="one batch job per run from the scripts in jobs/",
                              description=submit.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("study_dir", metavar="DIR", help="study directory written by plan")
    sub.add_argument("--scheduler", required=True, choices=submit.SCHEDULERS)
    per_node = sub.add_mutually_exclusive_group(required=True)
    per_node.add_argument("--gpus-per-node", type=int, help="GPU jobs: one rank per GPU, this many per node")
    per_node.add_argument("--cpus-per-node", type=int, help="CPU jobs: one rank per core, this many per node")
    sub.add_argument("--jobs-dir", help="directory of the job scripts (default: jobs/ of this checkout)")
    sub.add_argument("--scheduler-args", default="", metavar="'ARGS'",
                     help="more sbatch/qsub arguments, e.g. --scheduler-args='--account=abc --time=02:00:00'")
    sub.add_argument("--resubmit", action="store_true", help="submit unfinished runs that were submitted before")
    sub.add_argument("--dry-run", action="store_true", help="print the sbatch/qsub commands only")

    sub = commands.add_parser("collect", help="table (CSV, Markdown) and figures of the finished runs",
                              description=collect.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("study_dir", metavar="DIR", help="study directory written by plan")
    sub.add_argument("-o", "--output", metavar="OUT", help="where to write the table and figures (default DIR)")
    sub.add_argument("--no-plots", action="store_true", help="write the tables only")
    return parser


def run_plan(args: argparse.Namespace) -> int:
    values = plan.load_study_file(args.study_file) if "study_file" in args else {}
    values.update({name: getattr(args, name) for name in settings_of(plan.Study) if name in args})
    if "train_args" in args:
        values["train_args"] = shlex.split(args.train_args)
    study = plan.make_study(values)
    runs = plan.expand(study)
    check_train_args(study, runs[0])
    path = plan.write_plan(args.output, study, runs)
    log.info("%d runs planned in %s", len(runs), path)
    return 0


def check_train_args(study: plan.Study, first: plan.Run) -> None:
    """Let mpnn-train's own parser reject unknown flags or bad values of the study's runs
    (all alike but for their numbers) now, not in a job.

    Raises:
        StudyError: naming the arguments mpnn-train rejects.
    """
    parser = build_train_parser()
    parser.exit_on_error = False  # raise ArgumentError instead of printing usage and exiting
    try:
        _, unknown = parser.parse_known_args(first.mpnn_train_args(study, "."))
    except argparse.ArgumentError as exc:
        raise plan.StudyError(f"mpnn-train rejects the study's arguments {first.train_args}: {exc}") from None
    if unknown:
        raise plan.StudyError(f"mpnn-train does not know the arguments {unknown} (see mpnn-train --help)")


def run_local(args: argparse.Namespace) -> int:
    study, runs = plan.load_plan(args.study_dir)
    outcomes = local.run_local(study, runs, args.study_dir, args.controller, args.dry_run)
    failed = [o.run_id for o in outcomes if o.status == "failed"]
    if failed:
        log.error("%d of %d runs failed: %s", len(failed), len(runs), ", ".join(failed))
    return 1 if failed else 0


def run_submit(args: argparse.Namespace) -> int:
    study, runs = plan.load_plan(args.study_dir)
    jobs = submit.submit(args.scheduler, study, runs, args.study_dir, gpus_per_node=args.gpus_per_node,
                         cpus_per_node=args.cpus_per_node, jobs_dir=args.jobs_dir,
                         scheduler_args=shlex.split(args.scheduler_args), resubmit=args.resubmit,
                         dry_run=args.dry_run)
    if not args.dry_run:
        log.info("%d job(s) submitted; ids in %s", len(jobs), os.path.join(args.study_dir, submit.JOBS_FILE))
    return 0


def run_collect(args: argparse.Namespace) -> int:
    from mpnn.scaling import plots  # matplotlib only when drawing

    study, runs = plan.load_plan(args.study_dir)
    rows, results = collect.collect(study, runs, args.study_dir)
    out = args.output or args.study_dir
    paths = collect.write_outputs(study, rows, results, out)
    if not args.no_plots:
        paths += plots.save_figures(rows, out, title=os.path.basename(os.path.abspath(study.data)))
    print(collect.markdown(study, rows, results))
    log.info("wrote %s", ", ".join(paths))
    problems = [r for r in results if r.status != "ok"]
    if problems:
        log.warning("%d of %d runs are not in the table: %s", len(problems), len(results),
                    "; ".join(f"{r.run.id} ({r.status})" for r in problems))
    return 0


COMMANDS = {"plan": run_plan, "run": run_local, "submit": run_submit, "collect": run_collect}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
