#!/usr/bin/python3
"""The PyTorch side of `gastroscreen bench`: same shapes, same thread count, side by side.

    /usr/bin/python3 tests/bench/torch_side.py --gastroscreen build/release/daemon/gastroscreen \\
        [--model BUNDLE] [--threads N] [--repeat R] [--net-repeat R] [--quick] [--out FILE]
    /usr/bin/python3 tests/bench/torch_side.py --json BENCH.json [...]

With --gastroscreen it runs `gastroscreen bench --json` itself (passing --threads, --repeat,
--quick and --model); with --json it reads the output of an earlier run. Then, with
torch.set_num_threads() set to the thread count the C side used:

1. For each decoder deformable-conv shape of the C run: torchvision.ops.deform_conv2d (batch
   1, bias, offsets uniform in +-3 pixels, mask = sigmoid of logits uniform in +-3, then ReLU,
   as the C benchmark feeds ours) and torch's dense conv2d of the same shape, interleaved,
   medians; printed next to our primitive's median from the C run, with
   torchvision / ours (target: >= 20).
2. With a bundle (the C run had --model): the PyTorch mirror of the multi-task network
   (model/pytorch/networks.py) with every deformable conv replaced by a plain Conv2d of the
   same shape ("dlaconv" baseline; the offset convs go too), eval mode, no_grad, on 512x512
   inputs at batch 1 and 4 (batch 1 only with --quick), and for reference the mirror as is
   (torchvision DCN). Printed next to the C multi-task time, with dlaconv / ours (target: > 1,
   i.e. our network with deformable convs is faster than PyTorch's without them). The FLOPs
   of the mirror are counted with forward hooks (every Conv2d, ConvTranspose2d, Linear and
   the DCN main GEMM), a cross-check of the C count.
3. The dlaconv mirror also in bf16 (torch.autocast on CPU with bfloat16: convolutions and
   linear layers in bf16 with fp32 sums; converting the mirror with .to(torch.bfloat16)
   instead is not an option on torch 1.13, whose bf16 depthwise ConvTranspose2d returns the
   wrong output size, and autocast keeps those transposed convs in fp32), interleaved with
   the fp32 one; then for every precision
   the C run timed (fp32, bf16, ... from its "precisions"), each batch's time next to
   PyTorch's dlaconv in fp32 and in bf16 and the ratio to the faster of the two (target:
   >= 2, each of our precisions at least twice as fast as PyTorch's best plain-conv run).

--out FILE writes every figure as JSON. Weights are random: timings do not depend on them.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
from torchvision.ops import deform_conv2d

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SOURCE, "model", "pytorch"))
import networks  # noqa: E402  (the mirror)


def interleaved(fns, warmup, repeat):
    """Runs fns round-robin (warm-up rounds first); returns the median seconds of each."""
    times = [[] for _ in fns]
    for r in range(-warmup, repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if r >= 0:
                times[i].append(dt)
    return [statistics.median(t) for t in times]


def run_c_bench(args):
    cmd = [args.gastroscreen, "bench", "--json", "--repeat", str(args.repeat)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.quick:
        cmd.append("--quick")
    if args.model:
        cmd += ["--model", args.model]
    print("running:", " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("gastroscreen bench failed (%d):\n%s" % (p.returncode, p.stderr))
    return json.loads(p.stdout)


def bench_deform_shapes(c, args):
    gen = torch.Generator().manual_seed(11)

    def uniform(shape, lo, hi):
        return torch.rand(shape, generator=gen) * (hi - lo) + lo

    rows = []
    for row in c["deform_vs_dense"]:
        cin, cout, res = row["cin"], row["cout"], row["res"]
        x = uniform((1, cin, res, res), -1, 1)
        w = uniform((cout, cin, 3, 3), -0.1, 0.1)
        b = uniform((cout,), -1, 1)
        offset = uniform((1, 18, res, res), -3, 3)
        mask = torch.sigmoid(uniform((1, 9, res, res), -3, 3))

        def tv():
            with torch.no_grad():
                torch.relu(deform_conv2d(x, offset, w, b, padding=1, mask=mask))

        def dense():
            with torch.no_grad():
                torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1))

        t_tv, t_dense = interleaved([tv, dense], 2, args.repeat)
        ours = row["deform_ms"] * 1e-3
        rows.append(
            {
                "shape": row["shape"],
                "ours_ms": row["deform_ms"],
                "onednn_dense_ms": row["dense_ms"],
                "torchvision_ms": t_tv * 1e3,
                "torch_dense_ms": t_dense * 1e3,
                "torchvision_over_ours": t_tv / ours,
                "torchvision_over_torch_dense": t_tv / t_dense,
            }
        )
        print(
            "%-14s %9.3f %9.3f %13.3f %11.3f %9.1fx %9.1fx"
            % (
                row["shape"],
                row["deform_ms"],
                row["dense_ms"],
                t_tv * 1e3,
                t_dense * 1e3,
                t_tv / ours,
                t_tv / t_dense,
            ),
            flush=True,
        )
    return rows


def dense_mirror(net):
    """Replaces every DeformConv's DCN by a plain 3x3 Conv2d of the same shape, in place."""
    for m in net.modules():
        if isinstance(m, networks.DeformConv):
            dcn = m.conv
            cout, cin = dcn.weight.shape[0], dcn.weight.shape[1]
            m.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=True)
    return net


def count_flops(net, x):
    """FLOPs (2 per multiply-add) of one forward pass of net on x, per sample, from hooks."""
    total = [0]

    def conv_hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        if isinstance(m, nn.ConvTranspose2d):
            i = inp[0]
            total[0] += 2 * i.shape[1] * (m.out_channels // m.groups) * k * i.shape[2] * i.shape[3]
        else:
            total[0] += 2 * out.shape[1] * (m.in_channels // m.groups) * k * out.shape[2] * out.shape[3]

    def dcn_hook(m, inp, out):
        total[0] += 2 * m.weight.shape[0] * m.weight.shape[1] * 9 * out.shape[2] * out.shape[3]

    def linear_hook(m, inp, out):
        total[0] += 2 * m.in_features * m.out_features

    hooks = []
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, networks.ModulatedDeformConv3x3):
            hooks.append(m.register_forward_hook(dcn_hook))
    with torch.no_grad():
        net(x[:1])
    for h in hooks:
        h.remove()
    return total[0] * 1e-9


def bench_network(c, args):
    mt = c["network"]["multitask"] if c.get("network") else None
    if not mt:
        print("\nnetworks: skipped (the C run had no --model, or its bundle has no multitask)")
        return None
    torch.manual_seed(1)
    dcn = networks.build("multitask").eval()
    dla = dense_mirror(networks.build("multitask")).eval()
    gen = torch.Generator().manual_seed(5)
    flops_dcn = count_flops(dcn, torch.rand((1, 3, 512, 512), generator=gen))
    flops_dla = count_flops(dla, torch.rand((1, 3, 512, 512), generator=gen))
    print(
        "\nmulti-task, 512x512: C counts %.3f GFLOP/tile from the bundle; the mirror's forward "
        "hooks count %.3f with DCN, %.3f as dlaconv"
        % (mt["gflop_per_tile"], flops_dcn, flops_dla)
    )
    print(
        "%6s %10s %14s %12s %12s %14s %14s"
        % ("batch", "ours ms", "dlaconv ms", "dlaconv/ours", "torch DCN ms", "torchDCN/ours",
           "dlaconv bf16")
    )
    rows = []
    for b in mt["batches"]:
        n = b["batch"]
        x = torch.rand((n, 3, 512, 512), generator=gen)

        def run_dla():
            with torch.no_grad():
                dla(x)

        def run_dla_bf16():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                dla(x)

        def run_dcn():
            with torch.no_grad():
                dcn(x)

        t_dla, t_bf16, t_dcn = interleaved([run_dla, run_dla_bf16, run_dcn], 1, args.net_repeat)
        ours = b["ms"] * 1e-3
        rows.append(
            {
                "batch": n,
                "ours_ms": b["ms"],
                "ours_tiles_per_s": b["tiles_per_s"],
                "torch_dlaconv_ms": t_dla * 1e3,
                "torch_dlaconv_tiles_per_s": n / t_dla,
                "torch_dlaconv_over_ours": t_dla / ours,
                "torch_dlaconv_bf16_ms": t_bf16 * 1e3,
                "torch_dlaconv_bf16_tiles_per_s": n / t_bf16,
                "torch_dcn_ms": t_dcn * 1e3,
                "torch_dcn_over_ours": t_dcn / ours,
            }
        )
        print(
            "%6d %10.1f %14.1f %11.2fx %12.1f %13.2fx %14.1f"
            % (n, b["ms"], t_dla * 1e3, t_dla / ours, t_dcn * 1e3, t_dcn / ours, t_bf16 * 1e3),
            flush=True,
        )
    return {
        "c_gflop_per_tile": mt["gflop_per_tile"],
        "mirror_gflop_per_tile_dcn": flops_dcn,
        "mirror_gflop_per_tile_dlaconv": flops_dla,
        "batches": rows,
        "precisions": per_precision(mt, rows),
    }


def per_precision(mt, rows):
    """Each of our precisions against PyTorch's dlaconv in fp32 and bf16 (the torch times of
    the same batch, measured once above); the target is >= 2 against the faster of the two."""
    torch_by_batch = {r["batch"]: r for r in rows}
    # Older C runs have one precision and no "precisions" list.
    ours = mt.get("precisions") or [{"precision": mt.get("precision", "fp32"),
                                     "batches": mt["batches"]}]
    print("\neach precision of ours vs PyTorch dlaconv fp32 and bf16 (target: best torch / ours >= 2)")
    print(
        "%9s %6s %10s %14s %14s %14s"
        % ("precision", "batch", "ours ms", "torch fp32 ms", "torch bf16 ms", "best torch/ours")
    )
    out = []
    for p in ours:
        for b in p["batches"]:
            t = torch_by_batch.get(b["batch"])
            if not t:
                continue
            best = min(t["torch_dlaconv_ms"], t["torch_dlaconv_bf16_ms"])
            out.append(
                {
                    "precision": p["precision"],
                    "batch": b["batch"],
                    "ours_ms": b["ms"],
                    "torch_dlaconv_fp32_ms": t["torch_dlaconv_ms"],
                    "torch_dlaconv_bf16_ms": t["torch_dlaconv_bf16_ms"],
                    "best_torch_over_ours": best / b["ms"],
                }
            )
            print(
                "%9s %6d %10.1f %14.1f %14.1f %14.2fx"
                % (p["precision"], b["batch"], b["ms"], t["torch_dlaconv_ms"],
                   t["torch_dlaconv_bf16_ms"], best / b["ms"]),
                flush=True,
            )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--gastroscreen", help="the gastroscreen binary: run its bench")
    src.add_argument("--json", help="read a saved `gastroscreen bench --json` output")
    ap.add_argument("--model", help="bundle for the network part (passed to gastroscreen)")
    ap.add_argument("--threads", type=int, default=0, help="threads for both sides")
    ap.add_argument("--repeat", type=int, default=10, help="timed rounds per conv shape")
    ap.add_argument("--net-repeat", type=int, default=5, help="timed rounds per network batch")
    ap.add_argument("--quick", action="store_true", help="pass --quick to gastroscreen bench")
    ap.add_argument("--out", help="write every figure to this JSON file")
    args = ap.parse_args()
    if args.repeat < 1 or args.net_repeat < 1:
        ap.error("--repeat and --net-repeat must be >= 1")
    if args.json:
        with open(args.json) as f:
            c = json.load(f)
    else:
        c = run_c_bench(args)
    threads = c["machine"]["threads"]
    if args.threads and args.threads != threads:
        sys.exit("the C run used %d threads, not --threads %d" % (threads, args.threads))
    torch.set_num_threads(threads)
    print(
        "machine: %s, %d threads on both sides (torch %s, torchvision deform_conv2d)"
        % (c["machine"]["cpu"], torch.get_num_threads(), torch.__version__)
    )
    print("medians; C side over %d rounds, torch side over %d" % (c["repeat"], args.repeat))
    print("\ndeformable conv, batch 1 (target: torchvision / ours >= 20)")
    print(
        "%-14s %9s %9s %13s %11s %10s %10s"
        % ("shape", "ours ms", "oneDNN ms", "torchvision ms", "torch conv", "tv/ours", "tv/torchconv")
    )
    result = {"machine": c["machine"], "threads": threads, "deform": bench_deform_shapes(c, args)}
    result["network"] = bench_network(c, args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"c": c, "torch": result}, f, indent=1)


if __name__ == "__main__":
    main()
