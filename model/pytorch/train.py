#!/usr/bin/python3
"""Trains one of the bundle's networks on a lab's own data (or, for the organ-agnostic quality
gates, on the real tissue this project ships with).

    /usr/bin/python3 model/pytorch/train.py blur [options]         (learn_blur.py)
    /usr/bin/python3 model/pytorch/train.py foreground [options]   (learn_foreground.py)
    /usr/bin/python3 model/pytorch/train.py multitask [options]    (learn_multitask.py)
    /usr/bin/python3 model/pytorch/train.py screener [options]     (learn_screener.py)

Each subcommand's module holds its recipe, data building and evaluation; `--help` after the
subcommand prints its options. A trained network is written as a partial bundle
(model/FORMAT.md: the network's tensors, provenance.<net>, threshold.<net> and training.<net>)
that model/pytorch/make_bundle.py --trained merges into a full bundle.
"""

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SUBCOMMANDS = {"blur": "learn_blur", "foreground": "learn_foreground",
               "multitask": "learn_multitask", "screener": "learn_screener"}


def main(argv):
    if len(argv) < 1 or argv[0] not in SUBCOMMANDS:
        sys.stderr.write(__doc__.strip() + "\n\nsubcommands: %s\n" % ", ".join(SUBCOMMANDS))
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    module = importlib.import_module(SUBCOMMANDS[argv[0]])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
