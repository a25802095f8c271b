#!/usr/bin/python3
"""Parity of ops/deform_conv against torchvision.ops.deform_conv2d.

Writes seeded cases (inputs and torchvision's float32 outputs, raw little-endian float32 in
NCHW order) into a scratch folder, with a cases.txt index, then runs
`test_deform_conv --parity DIR`, which checks our reference and fast outputs against
torchvision: max |ours - torchvision| <= 1e-4 * max |torchvision| for every case.
Exit status: the checker's (0 = all cases within tolerance).

Usage: /usr/bin/python3 deform_conv_torch.py --checker PATH/test_deform_conv [--keep DIR]
"""
import argparse
import os
import subprocess
import sys
import tempfile

try:
    import torch
    import torchvision
    from torchvision.ops import deform_conv2d
except ImportError as e:  # CI installs python3-torch and python3-torchvision
    print(f"deform_conv parity needs torch and torchvision under /usr/bin/python3: {e}",
          file=sys.stderr)
    sys.exit(1)

# name, n, cin, cout, h, w, kh, kw, stride, pad, dil, offset scale, has_mask, has_bias
CASES = [
    ("odd_b2", 2, 3, 17, 7, 13, 3, 3, (1, 1), (1, 1), (1, 1), 2.0, 1, 1),
    ("c17_to_3", 1, 17, 3, 13, 7, 3, 3, (1, 1), (1, 1), (1, 1), 2.0, 1, 1),
    ("c64", 2, 64, 64, 16, 15, 3, 3, (1, 1), (1, 1), (1, 1), 3.0, 1, 1),
    ("stride2", 1, 32, 40, 17, 12, 3, 3, (2, 2), (1, 1), (1, 1), 2.0, 1, 1),
    ("pad0", 1, 20, 24, 9, 10, 3, 3, (1, 1), (0, 0), (1, 1), 1.5, 1, 0),
    ("pad2_dil2", 1, 16, 18, 12, 11, 3, 3, (1, 1), (2, 2), (2, 2), 1.5, 1, 1),
    ("no_mask", 1, 17, 19, 8, 9, 3, 3, (1, 1), (1, 1), (1, 1), 2.0, 0, 1),
    ("far_outside", 1, 17, 19, 8, 9, 3, 3, (1, 1), (1, 1), (1, 1), 40.0, 1, 1),
    ("half_pixels", 1, 18, 20, 8, 9, 3, 3, (1, 1), (1, 1), (1, 1), 0.0, 1, 1),
    ("decoder_128", 1, 128, 64, 32, 32, 3, 3, (1, 1), (1, 1), (1, 1), 4.0, 1, 1),
]


def out_size(h, k, s, p, d):
    return (h + 2 * p - d * (k - 1) - 1) // s + 1


def write(path, t):
    t.detach().contiguous().to(torch.float32).numpy().astype("<f4").tofile(path)


def make_cases(folder):
    torch.manual_seed(20240611)
    lines = []
    for (name, n, cin, cout, h, w, kh, kw, st, pd, dl, scale, has_mask, has_bias) in CASES:
        ho, wo = out_size(h, kh, st[0], pd[0], dl[0]), out_size(w, kw, st[1], pd[1], dl[1])
        x = torch.randn(n, cin, h, w)
        if name == "half_pixels":
            # Offsets on the half-pixel grid in [-2, 2] put many samples at y = -0.5, W - 0.5...
            off = torch.randint(-4, 5, (n, 2 * kh * kw, ho, wo)).float() * 0.5
        else:
            off = (torch.rand(n, 2 * kh * kw, ho, wo) * 2 - 1) * scale
        mask = torch.sigmoid(torch.randn(n, kh * kw, ho, wo) * 2) if has_mask else None
        weight = torch.randn(cout, cin, kh, kw) / (cin * kh * kw) ** 0.5
        bias = torch.randn(cout) if has_bias else None
        out = deform_conv2d(x, off, weight, bias, stride=st, padding=pd, dilation=dl, mask=mask)
        for what, t in (("input", x), ("offset", off), ("mask", mask), ("weight", weight),
                        ("bias", bias), ("out", out)):
            if t is not None:
                write(os.path.join(folder, f"{name}.{what}.f32"), t)
        lines.append(f"{name} {n} {cin} {cout} {h} {w} {kh} {kw} {st[0]} {st[1]} {pd[0]} {pd[1]} "
                     f"{dl[0]} {dl[1]} {has_mask} {has_bias}\n")
    with open(os.path.join(folder, "cases.txt"), "w") as f:
        f.writelines(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checker", required=True, help="path of the test_deform_conv binary")
    ap.add_argument("--keep", help="write the cases into this folder and keep them")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    torch.set_num_threads(1)
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        make_cases(args.keep)
        return subprocess.call([args.checker, "--parity", args.keep])
    with tempfile.TemporaryDirectory(prefix="gs_deform_parity_") as folder:
        make_cases(folder)
        return subprocess.call([args.checker, "--parity", folder])


if __name__ == "__main__":
    sys.exit(main())
