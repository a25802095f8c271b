#!/usr/bin/python3
"""The mirror's DCN (torchvision.ops.deform_conv2d under a DCNv2-style module) equals a
hand-written modulated deformable conv that follows reference section 4 literally: offset
channel 2k = dy and 2k+1 = dx of tap k = 3i+j, mask = sigmoid(channel 18+k), bilinear with
floor corners, zero outside (-1, H) x (-1, W), zero for out-of-map corners, nothing clamped.
This pins our reading of torchvision's semantics, which the C primitive must match."""

import math
import unittest

import util  # noqa: F401  (puts model/pytorch on sys.path)
import torch
import torch.nn.functional as F

import networks


def bilinear(img, y, x):
    """Value of 2-D tensor img at (y, x) by the DCNv2/torchvision rule."""
    h, w = img.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    val = 0.0
    for yy, xx, wt in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                       (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
        if 0 <= yy < h and 0 <= xx < w:
            val += wt * float(img[yy, xx])
    return val


def naive_dcn(x, weight, bias, om_weight, om_bias):
    """Modulated 3x3 deformable conv, stride 1, pad 1, in float64 loops. x is [1,C,H,W]."""
    x = x.double()
    om = F.conv2d(x, om_weight.double(), om_bias.double(), padding=1)[0]
    _, cin, h, w = x.shape
    cout = weight.shape[0]
    out = torch.zeros(cout, h, w, dtype=torch.float64)
    for oy in range(h):
        for ox in range(w):
            cols = torch.zeros(cin, 3, 3, dtype=torch.float64)
            for i in range(3):
                for j in range(3):
                    k = 3 * i + j
                    dy, dx = float(om[2 * k, oy, ox]), float(om[2 * k + 1, oy, ox])
                    m = 1.0 / (1.0 + math.exp(-float(om[18 + k, oy, ox])))
                    y, xx = oy - 1 + i + dy, ox - 1 + j + dx
                    for ci in range(cin):
                        cols[ci, i, j] = m * bilinear(x[0, ci], y, xx)
            out[:, oy, ox] = (weight.double() * cols).sum(dim=(1, 2, 3)) + bias.double()
    return out.unsqueeze(0)


def make_dcn(cin, cout, seed, offset_scale, om_bias=None):
    g = torch.Generator().manual_seed(seed)
    dcn = networks.ModulatedDeformConv3x3(cin, cout)
    with torch.no_grad():
        dcn.weight.copy_(torch.randn(dcn.weight.shape, generator=g))
        dcn.bias.copy_(torch.randn(dcn.bias.shape, generator=g))
        dcn.conv_offset_mask.weight.copy_(
            torch.randn(dcn.conv_offset_mask.weight.shape, generator=g) * offset_scale)
        dcn.conv_offset_mask.bias.copy_(
            torch.randn(27, generator=g) * 2.0 if om_bias is None else om_bias)
    return dcn


def run_both(dcn, x):
    with torch.no_grad():
        got = dcn(x).double()
    want = naive_dcn(x, dcn.weight, dcn.bias, dcn.conv_offset_mask.weight,
                     dcn.conv_offset_mask.bias)
    return got, want


class DeformConvSemantics(unittest.TestCase):
    def assert_close(self, got, want):
        tol = 1e-5 * max(1.0, float(want.abs().max()))
        self.assertEqual(got.shape, want.shape)
        err = float((got - want).abs().max())
        self.assertLessEqual(err, tol, "max |torch - naive| = %g" % err)

    def test_random_offsets_several_pixels_with_samples_off_the_map(self):
        g = torch.Generator().manual_seed(11)
        x = torch.randn(1, 3, 5, 7, generator=g)
        dcn = make_dcn(3, 4, seed=1, offset_scale=0.8)
        with torch.no_grad():
            off, _ = dcn.offset_and_mask(x)
        self.assertGreater(float(off.abs().max()), 3.0)  # some samples leave the 5x7 map
        self.assert_close(*run_both(dcn, x))

    def test_small_fractional_offsets(self):
        g = torch.Generator().manual_seed(12)
        x = torch.randn(1, 2, 6, 4, generator=g)
        self.assert_close(*run_both(make_dcn(2, 3, seed=2, offset_scale=0.05), x))

    def test_offsets_are_interleaved_dy_dx_and_not_split(self):
        # Constant offsets from the bias only: tap k moves by (dy_k, dx_k) = (0.25*k, -0.5),
        # which a (all dy, then all dx) reading would turn into something else entirely.
        bias = torch.zeros(27)
        for k in range(9):
            bias[2 * k], bias[2 * k + 1] = 0.25 * k, -0.5
        bias[18:] = torch.linspace(-2, 2, 9)
        dcn = make_dcn(2, 2, seed=3, offset_scale=0.0, om_bias=bias)
        x = torch.randn(1, 2, 5, 5, generator=torch.Generator().manual_seed(13))
        got, want = run_both(dcn, x)
        self.assert_close(got, want)
        swapped = bias.clone()
        swapped[:18] = torch.cat([bias[0:18:2], bias[1:18:2]])
        dcn2 = make_dcn(2, 2, seed=3, offset_scale=0.0, om_bias=swapped)
        with torch.no_grad():
            other = dcn2(x).double()
        self.assertGreater(float((other - want).abs().max()), 1e-2)

    def test_half_pixel_outside_keeps_half_of_the_border_row(self):
        # 1 channel, weight only on the centre tap, dy = -0.5 everywhere, mask logit large:
        # output row 0 samples y = -0.5, i.e. 0.5 * row 0; other rows average two rows.
        bias = torch.zeros(27)
        bias[8] = -0.5
        bias[18:] = 30.0
        dcn = make_dcn(1, 1, seed=4, offset_scale=0.0, om_bias=bias)
        with torch.no_grad():
            dcn.weight.zero_()
            dcn.weight[0, 0, 1, 1] = 1.0
            dcn.bias.zero_()
        x = torch.arange(12, dtype=torch.float32).reshape(1, 1, 3, 4) + 1.0
        with torch.no_grad():
            got = dcn(x)[0, 0]
        want = torch.empty(3, 4)
        want[0] = 0.5 * x[0, 0, 0]
        want[1:] = 0.5 * (x[0, 0, :-1] + x[0, 0, 1:])
        self.assertTrue(torch.allclose(got, want, atol=1e-6), "%s vs %s" % (got, want))

    def test_far_outside_gives_bias_only(self):
        bias = torch.zeros(27)
        bias[:18] = 100.0
        dcn = make_dcn(3, 4, seed=5, offset_scale=0.0, om_bias=bias)
        x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(14))
        with torch.no_grad():
            got = dcn(x)
        self.assertTrue(torch.equal(got, dcn.bias.detach().view(1, 4, 1, 1).expand_as(got)))

    def test_zero_offsets_full_mask_is_an_ordinary_conv(self):
        bias = torch.zeros(27)
        bias[18:] = 40.0  # sigmoid == 1 in float32
        dcn = make_dcn(3, 5, seed=6, offset_scale=0.0, om_bias=bias)
        x = torch.randn(1, 3, 6, 5, generator=torch.Generator().manual_seed(15))
        with torch.no_grad():
            got = dcn(x)
            want = F.conv2d(x, dcn.weight, dcn.bias, padding=1)
        self.assertTrue(torch.allclose(got, want, atol=1e-5))

    def test_deformconv_unit_is_dcn_then_bn_then_activation(self):
        unit = networks.DeformConv(2, 3, "leaky:0.1").eval()
        with torch.no_grad():
            unit.conv.conv_offset_mask.bias.normal_(0, 1, generator=torch.Generator().manual_seed(7))
            bn = unit.actf[0]
            bn.running_mean.copy_(torch.tensor([0.5, -0.2, 0.1]))
            bn.running_var.copy_(torch.tensor([2.0, 0.5, 1.5]))
            bn.weight.copy_(torch.tensor([1.5, -0.7, 0.9]))
            bn.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
            x = torch.randn(1, 2, 4, 5, generator=torch.Generator().manual_seed(16))
            y = unit.conv(x)
            s = bn.weight / torch.sqrt(bn.running_var + 1e-5)
            want = (y - bn.running_mean.view(1, 3, 1, 1)) * s.view(1, 3, 1, 1) + bn.bias.view(1, 3, 1, 1)
            want = torch.where(want > 0, want, 0.1 * want)
            self.assertTrue(torch.allclose(unit(x), want, atol=1e-6))
            self.assertLess(float(unit(x).min()), 0.0)  # leaky: negatives survive


if __name__ == "__main__":
    unittest.main(verbosity=2)
