"""The command line of ``trainerkit``: argparse only, so ``--help`` stays fast."""

from __future__ import annotations

import argparse
from typing import Callable

CONFIG_ENV = "TRAINERKIT_CONFIG"

_DESCRIPTION = """\
Train, watch, list, tail and cancel trainerkit trainings from a shell.

Trainers come from --config FILE, else the file named by $TRAINERKIT_CONFIG,
else the built-in defaults (one LOCAL trainer named 'default').
"""

_EPILOG = """\
exit status:
  0    success (a followed training COMPLETED)
  1    trainerkit itself failed (records unreadable, cluster unreachable, a bug)
  2    bad input: command line, training arguments, module or config file
  3    no training with that id
  4    the training ended ERRORED
  5    the training ended CANCELED
  6    not possible now: still running, already finished, no logs kept by this
       trainer type, cannot detach, a requested capability the trainer lacks,
       model not saved
  130  interrupted by Ctrl-C (a training that 'train' was following is canceled first)

See docs/cli.md for a walk-through.
"""

_TRAIN_EPILOG = """\
examples:
  trainerkit train trainerkit.examples.iris:IrisClassifier --arg epochs=300 \\
      --save-path ./models --save-with-id --model-name iris
  trainerkit train mypkg.models:Net --args-file args.yaml --trainer isolated --detach

--arg values are YAML 1.2 scalars: 3 is an int, 1e-3 a float, true/false booleans,
null (or nothing) None, [1, 2] a list, {a: 1} a mapping, "quoted" text a string;
anything else is text as written. --arg overrides the same key from --args-file.
"""


def _common_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # Sub-commands default to SUPPRESS so that `trainerkit --json list` and
    # `trainerkit list --json` both work without the sub-command resetting it.
    default = (lambda value: value) if top_level else (lambda value: argparse.SUPPRESS)
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=default(None),
        help=f"trainers YAML file (default: ${CONFIG_ENV}, else the built-in defaults)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print machine-readable JSON on stdout (progress and notes go to stderr)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default(0),
        help="log trainerkit's activity to stderr (-vv: debug)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``trainerkit`` argument parser with every sub-command."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="trainerkit",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"trainerkit {__version__}")
    _common_options(parser, top_level=True)
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, top_level=False)

    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str, **kwargs: object) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=help_text, description=help_text, parents=[common], **kwargs  # type: ignore[arg-type]
        )

    train = command(
        "train",
        "submit a training and follow it with a progress bar",
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_module_arguments(train, "")
    train.add_argument("--trainer", default="default", metavar="NAME", help="default: %(default)s")
    for flag, key, what in (
        ("--nodes", "nodes", "machines the training spans"),
        ("--procs-per-node", "procs_per_node", "processes (ranks) per machine"),
        ("--gpus-per-proc", "gpus_per_proc", "GPUs each process gets for itself"),
    ):
        train.add_argument(
            flag, dest=key, type=int, metavar="N",
            help=f"{what} (trainerkit.Resources; default: the trainer's default_resources, else 1 process, 0 GPUs)",
        )
    train.add_argument(
        "--capability",
        dest="capability",
        action="append",
        default=[],
        metavar="NAME=LEVEL",
        help="a capability the training relies on (repeatable), e.g. cancel=native, logs=disable; "
        "LEVEL is native, best-effort, optional or disable. Unmet: exit status 6, nothing started",
    )
    train.add_argument(
        "--save-path",
        metavar="DIR",
        help="save the model here: a directory or an fsspec URL such as s3://bucket/models "
        "(without it the model is lost when the training process ends)",
    )
    train.add_argument(
        "--resume-from",
        metavar="ID",
        help="start from the newest checkpoint of this earlier training (as train(resume_from=...)): "
        "trainerkit.latest_checkpoint() returns it until the new training saves its own",
    )
    train.add_argument(
        "--save-with-id", action="store_true", help="save under DIR/<training id>"
    )
    train.add_argument("--model-name", metavar="NAME", help="save under DIR[/<id>]/NAME")
    train.add_argument(
        "--external-training-id",
        metavar="ID",
        help="the unique part of the training id, chosen by you (as train(external_training_id=...)): "
        "the id is <trainer>--ID; refused while a training with that id is not finished",
    )
    train.add_argument(
        "--tag", dest="tag", action="append", default=[], metavar="TAG", help="tag the training (repeatable)"
    )
    train.add_argument(
        "--load",
        action="store_true",
        help="once the training COMPLETED, load the model back and print a summary of it "
        "(as 'trainerkit result' does)",
    )
    train.add_argument(
        "--detach",
        action="store_true",
        help="print the id and exit; the training keeps running (not for LOCAL trainers)",
    )

    describe = command(
        "describe",
        "show a module's training parameters and, given arguments, what train would receive",
        epilog="Nothing is recorded or started. --arg and --args-file are read as for train.",
    )
    _add_module_arguments(describe, ", as for train")
    describe.add_argument(
        "--trainer",
        metavar="NAME",
        help="resolve the parameters with this trainer's training_parameters (default: default)",
    )

    status = command("status", "show a training's status")
    status.add_argument("training_id", metavar="ID")
    status.add_argument(
        "--watch",
        action="store_true",
        help="follow it with a progress bar until it ends; exit status as for train "
        "(Ctrl-C stops watching, the training goes on)",
    )

    listing = command("list", "list trainings, newest first")
    listing.add_argument("--trainer", metavar="NAME", help="only this trainer's (default: all)")
    listing.add_argument(
        "--status",
        dest="status",
        action="append",
        default=[],
        metavar="S",
        help="only trainings with this status (repeatable): QUEUED, RUNNING, COMPLETED, "
        "ERRORED, CANCELED",
    )
    listing.add_argument(
        "--tag", dest="tag", action="append", default=[], metavar="T", help="only trainings with every such tag"
    )
    listing.add_argument("--since", metavar="DURATION", help="only those submitted within, e.g. 2h, 7d")
    listing.add_argument("--limit", type=_positive_int, metavar="N", help="at most N trainings")

    logs = command("logs", "print a training's output")
    logs.add_argument("training_id", metavar="ID")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing until the training ends"
    )
    logs.add_argument(
        "--rank", type=_whole_number, default=0, metavar="K",
        help="one process of a multi-process training (default 0; status shows its ranks)",
    )

    cancel = command("cancel", "cancel a training")
    cancel.add_argument("training_id", metavar="ID")
    cancel.add_argument(
        "--no-wait", action="store_true", help="return once asked, without waiting for it to stop"
    )

    delete = command("delete", "forget a finished training")
    delete.add_argument("training_id", metavar="ID")
    delete.add_argument("--model", action="store_true", help="also delete its saved model")
    delete.add_argument(
        "--keep-checkpoints", action="store_true",
        help="keep its checkpoints (<checkpoint_dir>/<id>), which are deleted with it otherwise",
    )

    result = command("result", "load a completed training's model and summarise it")
    result.add_argument("training_id", metavar="ID")

    load = command("load", "load a saved model from a directory or URL and summarise it")
    load.add_argument("path", metavar="PATH_OR_URL", help="a model directory, or a URL such as s3://bucket/models/run")
    load.add_argument(
        "--trainer", default="default", metavar="NAME",
        help="whose storage_options, cache_dir and load_allowed_modules to use (default: %(default)s)",
    )
    load.add_argument(
        "--no-cache", action="store_true",
        help="download a URL's files into a temporary directory instead of the load cache",
    )

    command("trainers", "list the configured trainers and where their types come from")

    config = command("config", "configuration tools")
    config_commands = config.add_subparsers(
        dest="config_command", metavar="SUBCOMMAND", required=True
    )
    check = config_commands.add_parser(
        "check",
        help="validate a trainers file and print every problem",
        description="Validate a trainers YAML file and print every problem found, each with "
        "its key path. Exit status 2 when there is any.",
        parents=[common],
    )
    check.add_argument(
        "file", nargs="?", metavar="FILE", help="default: --config, else $TRAINERKIT_CONFIG"
    )
    return parser


def _int_at_least(least: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of at least ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r} must be {least} or more")
        return value

    return parse


_whole_number = _int_at_least(0)
_positive_int = _int_at_least(1)


def _add_module_arguments(parser: argparse.ArgumentParser, note: str) -> None:
    """MODULE, --arg and --args-file, as train and describe read them."""
    parser.add_argument("module", metavar="MODULE", help="the module class: package.module:Class")
    parser.add_argument(
        "--arg",
        dest="arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a keyword argument of MODULE.train (repeatable){note}",
    )
    parser.add_argument(
        "--args-file", metavar="FILE", help="keyword arguments as a mapping in a .json/.yaml file"
    )
