#!/usr/bin/python3
"""Writes a bundle whose only network, the foreground one, is "trained" with hand-set weights
whose answer a test can predict, for the foreground network method (stages/handlers/foreground).

    /usr/bin/python3 tests/unit/make_crafted_fg_bundle.py --out F [--untrained]

The network marks as tissue the BRIGHT pixels (mean grey above 222.55), the opposite of any
real tissue finder, so a plan made with it differs from the classical one wherever there is
glass or tissue. Input normalisation is the identity on [0, 1] (mean 0, std 1). Each conv uses
only its centre tap on channel 0, so low-resolution logit (i, j) sees input pixel (8i, 8j):

    g = mean(R, G, B) / 255 at (8i, 8j)
    lowres = 100 * relu(g - 220/255) - 1       (logit > 0, P > 0.5, iff g > 222.55/255)

then bilinear x8 (align_corners=False) as the architecture does; threshold.foreground 0.5.
With --untrained the same weights carry provenance "untrained", so the pipeline must ignore
them and plan classically.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "model", "pytorch"))

import torch  # noqa: E402

import bundle  # noqa: E402
import networks  # noqa: E402

CUT = 220.0 / 255.0
GAIN = 100.0
BIAS = -1.0


def crafted_state():
    net = networks.build("foreground")
    sd = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    for bn in ("bn1", "bn2", "bn3"):
        sd[bn + ".weight"].fill_(1.0)
        sd[bn + ".running_var"].fill_(1.0 - 1e-5)  # with bn_eps 1e-5: divide by exactly 1
    sd["conv1.weight"][0, :, 1, 1] = 1.0 / 3.0
    sd["bn1.bias"][0] = -CUT
    sd["conv2.weight"][0, 0, 1, 1] = 1.0
    sd["conv3.weight"][0, 0, 1, 1] = 1.0
    sd["logit.weight"][0, 0, 0, 0] = GAIN
    sd["logit.bias"][0] = BIAS
    return sd


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--untrained", action="store_true")
    args = p.parse_args()
    prov = bundle.UNTRAINED if args.untrained else "hand-set test weights: tissue = bright pixels"
    meta = bundle.default_metadata({"foreground": prov}, created="2026-01-01T00:00:00Z",
                                   creator="gastroscreen make_crafted_fg_bundle.py")
    meta["input_mean"] = "0,0,0"
    meta["input_std"] = "1,1,1"
    meta["threshold.foreground"] = "0.5"
    tensors = bundle.flatten_networks({"foreground": crafted_state()})
    bundle.write_bundle(args.out, tensors, meta)
    print("wrote %s (%d tensors)" % (args.out, len(tensors)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
