"""Command line: ``python -m nbsparse [check | demo [options]]``."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="nbsparse", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    check = commands.add_parser("check", help="run every op once, compare with the NumPy reference, "
                                              "print compile and call times (the default)")
    check.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="cuda: every op on the GPU (CuPy arrays when CuPy is installed)")
    demo = commands.add_parser(
        "demo", help="train a next-token language model whose output layer is h_softmax "
                     "(under 3 minutes on 2 cores)",
        description="Train a feed-forward next-token language model in plain NumPy on the installed "
                    "Python's standard-library source (a vocabulary of about 30,000 tokens), with "
                    "nbsparse's hierarchical softmax (h_softmax_nll, sparse gradients) as its output "
                    "layer and, to compare, a full softmax, each for the same wall-clock budget; then "
                    "use it: top-5 completions (h_softmax_topk) and generated code (h_softmax_sample).")
    from .demo.cli import add_arguments  # argparse only: the demo itself loads when it runs

    add_arguments(demo)
    args = parser.parse_args(argv)
    if args.command in (None, "check"):
        from . import _selfcheck

        try:
            return 0 if _selfcheck.run(device=getattr(args, "device", "cpu")) else 1
        except RuntimeError as err:  # --device cuda without a GPU
            print(f"cannot run: {err}")
            return 2
    if args.command == "demo":
        from .demo import cli

        return cli.main(args)
    parser.error(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
