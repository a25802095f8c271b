#!/usr/bin/python3
"""Forward passes of the mirror on a seeded make_bundle bundle:
- run.py at 512x512 writes every documented output with the documented shape, equal to an
  in-process forward, from PNG and .npy inputs normalised per the metadata;
- MultiTask equals an independent functional forward written from the unrolled equations of
  reference sections 2.3 and 3.3 (concat orders, residuals, sum merges, ups, heads);
- the small networks equal their reference 7.1-7.3 definitions; the screener is invariant
  to row order and to duplicated rows;
- the activation setting reaches the network (leaky:0 == relu, leaky:0.1 differs)."""

import os
import unittest

import util
import torch
import torch.nn.functional as F
import torchvision.io
from torchvision.ops import deform_conv2d

import bundle
import networks
import npy

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def u8_image(seed, n, h, w):
    """Smooth-ish random uint8 RGB images [n,3,h,w]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, h // 8, w // 8, generator=g)
    img = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    img = 0.85 * img + 0.15 * torch.rand(n, 3, h, w, generator=g)
    return (img * 255).round().clamp(0, 255).to(torch.uint8)


def normalise(u8):
    return (u8.float() / 255.0 - MEAN) / STD


def rel_err(a, b):
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-12)


class Functional:
    """MultiTask forward written from the reference's unrolled equations, on a state_dict."""

    def __init__(self, sd):
        self.sd = sd

    def bn(self, x, p):
        s = self.sd
        return F.batch_norm(x, s[p + ".running_mean"], s[p + ".running_var"], s[p + ".weight"],
                            s[p + ".bias"], False, 0.0, 1e-5)

    def conv(self, x, p, stride=1, bias=False):
        w = self.sd[p + ".weight"]
        return F.conv2d(x, w, self.sd[p + ".bias"] if bias else None, stride=stride,
                        padding=w.shape[-1] // 2)

    def bb(self, x, p, stride, residual):
        t = F.relu(self.bn(self.conv(x, p + ".conv1", stride), p + ".bn1"))
        return F.relu(self.bn(self.conv(t, p + ".conv2"), p + ".bn2") + residual)

    def root(self, children, p):
        return F.relu(self.bn(self.conv(torch.cat(children, 1), p + ".root.conv"), p + ".root.bn"))

    def project(self, x, p):
        return self.bn(self.conv(x, p + ".project.0"), p + ".project.1")

    def tree2level(self, lin, p):
        bottom = F.max_pool2d(lin, 2)
        a1 = self.bb(lin, p + ".tree1.tree1", 2, self.project(bottom, p + ".tree1"))
        a2 = self.bb(a1, p + ".tree1.tree2", 1, a1)
        x1 = self.root([a2, a1], p + ".tree1")
        c1 = self.bb(x1, p + ".tree2.tree1", 1, x1)
        c2 = self.bb(c1, p + ".tree2.tree2", 1, c1)
        return self.root([c2, c1, bottom, x1], p + ".tree2")

    def dcn(self, x, p):
        s = self.sd
        om = F.conv2d(x, s[p + ".conv.conv_offset_mask.weight"],
                      s[p + ".conv.conv_offset_mask.bias"], padding=1)
        y = deform_conv2d(x, om[:, :18], s[p + ".conv.weight"], s[p + ".conv.bias"],
                          padding=1, mask=torch.sigmoid(om[:, 18:27]))
        return F.relu(self.bn(y, p + ".actf.0"))

    def up(self, x, p, f):
        return F.conv_transpose2d(x, self.sd[p + ".weight"], stride=f, padding=f // 2,
                                  groups=x.shape[1])

    def step(self, ida, i, low, skip, f=2):
        return self.dcn(self.up(self.dcn(low, "%s.proj_%d" % (ida, i)), "%s.up_%d" % (ida, i), f)
                        + skip, "%s.node_%d" % (ida, i))

    def __call__(self, x):
        b = "base.base_layer."
        for c, n in ((0, 1), (3, 4), (6, 7)):
            x = F.relu(self.bn(self.conv(x, b + str(c)), b + str(n)))
        l0 = F.relu(self.bn(self.conv(x, "base.level0.0"), "base.level0.1"))
        l1 = F.relu(self.bn(self.conv(l0, "base.level1.0", 2), "base.level1.1"))
        bottom = F.max_pool2d(l1, 2)
        x1 = self.bb(l1, "base.level2.tree1", 2, self.project(bottom, "base.level2"))
        x2 = self.bb(x1, "base.level2.tree2", 1, x1)
        l2 = self.root([x2, x1], "base.level2")
        l3 = self.tree2level(l2, "base.level3")
        l4 = self.tree2level(l3, "base.level4")
        bottom = F.max_pool2d(l4, 2)
        x1 = self.bb(l4, "base.level5.tree1", 2, self.project(bottom, "base.level5"))
        x2 = self.bb(x1, "base.level5.tree2", 1, x1)
        l5 = self.root([x2, x1, bottom], "base.level5")
        m5 = self.step("dla_up.ida_0", 1, l5, l4)
        n4 = self.step("dla_up.ida_1", 1, l4, l3)
        n5 = self.step("dla_up.ida_1", 2, m5, n4)
        p3 = self.step("dla_up.ida_2", 1, l3, l2)
        p4 = self.step("dla_up.ida_2", 2, n4, p3)
        p5 = self.step("dla_up.ida_2", 3, n5, p4)
        q1 = self.step("ida_up", 1, n5, p5)
        q2 = self.step("ida_up", 2, m5, q1, f=4)
        seg = self.conv(F.relu(self.conv(q2, "seg.0", bias=True)), "seg.2", bias=True)
        feature = l5.mean(dim=(2, 3))
        logit = F.linear(feature, self.sd["cls.fc.weight"], self.sd["cls.fc.bias"])
        return {"logit": logit, "feature": feature, "seg": seg}


class Forward(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = util.scratch_dir()
        cls.dir = cls.tmp.name
        cls.bundle = os.path.join(cls.dir, "seed2.safetensors")
        r = util.run_script("make_bundle.py", "--seed", "2", "--out", cls.bundle)
        assert r.returncode == 0, r.stderr
        cls.nets, cls.meta = bundle.load_networks(cls.bundle)
        tensors, _ = bundle.read_bundle(cls.bundle)
        cls.sd = {n: {k: v for k, v in bundle.split_networks(tensors)[n].items()}
                  for n in networks.NETWORK_NAMES}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_run_py_at_512_writes_every_output(self):
        tile = u8_image(1, 1, 512, 512)
        torchvision.io.write_png(tile[0], os.path.join(self.dir, "tile.png"))
        thumb = u8_image(2, 1, 512, 512)
        npy_path = os.path.join(self.dir, "thumb.npy")
        with open(npy_path, "wb") as f:  # uint8 [H,W,3] .npy written by hand (no numpy)
            hdr = "{'descr': '|u1', 'fortran_order': False, 'shape': (512, 512, 3), }"
            hdr += " " * (-(10 + len(hdr) + 1) % 64) + "\n"
            f.write(b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr.encode())
            f.write(bytes(thumb[0].permute(1, 2, 0).contiguous().flatten().tolist()))
        crops = u8_image(3, 2, 256, 256)
        crop_paths = []
        for i in range(2):
            crop_paths.append(os.path.join(self.dir, "crop%d.png" % i))
            torchvision.io.write_png(crops[i], crop_paths[-1])
        feats = torch.rand(64, 512, generator=torch.Generator().manual_seed(4))
        feat_path = os.path.join(self.dir, "feat.npy")
        npy.write_npy(feat_path, feats)
        out = os.path.join(self.dir, "out")
        r = util.run_script("run.py", "--bundle", self.bundle, "--out", out, "--save-inputs",
                            "--multitask", os.path.join(self.dir, "tile.png"),
                            "--foreground", npy_path, "--blur", *crop_paths,
                            "--screener", feat_path)
        self.assertEqual(r.returncode, 0, r.stderr)
        shapes = {
            "multitask_logit": [1, 1], "multitask_feature": [1, 512],
            "multitask_seg": [1, 1, 128, 128], "foreground_logit": [1, 1, 512, 512],
            "foreground_logit_lowres": [1, 1, 64, 64], "blur_logit": [2, 1],
            "screener_logit": [1, 1], "multitask_input": [1, 3, 512, 512],
            "foreground_input": [1, 3, 512, 512], "blur_input": [2, 3, 256, 256],
            "screener_input": [1, 64, 512]}
        self.assertEqual(sorted(os.listdir(out)), sorted(k + ".npy" for k in shapes))
        got = {k: npy.read_npy(os.path.join(out, k + ".npy")) for k in shapes}
        for k, s in shapes.items():
            self.assertEqual(list(got[k].shape), s, k)
            self.assertEqual(got[k].dtype, torch.float32, k)
            self.assertTrue(bool(torch.isfinite(got[k]).all()), k)
        self.assertTrue(torch.allclose(got["multitask_input"], normalise(tile), atol=1e-6))
        self.assertTrue(torch.allclose(got["foreground_input"], normalise(thumb), atol=1e-6))
        self.assertTrue(torch.allclose(got["blur_input"], normalise(crops), atol=1e-6))
        self.assertTrue(torch.equal(got["screener_input"][0], feats))
        with torch.no_grad():
            mt = self.nets["multitask"](normalise(tile))
            fg = self.nets["foreground"](normalise(thumb))
            bl = self.nets["blur"](normalise(crops))
            sc = self.nets["screener"](feats.unsqueeze(0))
        for name, res in (("multitask", mt), ("foreground", fg), ("blur", bl), ("screener", sc)):
            for k, v in res.items():
                self.assertLess(rel_err(got["%s_%s" % (name, k)], v), 1e-5, (name, k))
        # Sane activations at 512 with calibrated random weights: neither dead nor exploding.
        seg = got["multitask_seg"]
        self.assertGreater(float(seg.std()), 0.05)
        self.assertLess(float(seg.abs().max()), 1e3)
        self.assertGreater(float(got["multitask_feature"].std()), 0.01)
        self.assertGreater(float(got["multitask_feature"].min()), -1e-6)  # GAP of ReLU output

    def test_multitask_equals_unrolled_reference_equations(self):
        x = normalise(u8_image(5, 2, 96, 64))  # non-square, batch 2
        with torch.no_grad():
            want = Functional(self.sd["multitask"])(x)
            got = self.nets["multitask"](x)
        self.assertEqual(list(got["seg"].shape), [2, 1, 24, 16])
        for k in ("logit", "feature", "seg"):
            self.assertLess(rel_err(got[k], want[k]), 1e-5, k)

    def test_activation_setting_reaches_the_network(self):
        x = normalise(u8_image(6, 1, 64, 64))
        sd = {k: v.float() for k, v in self.sd["multitask"].items()}
        outs = {}
        for act in ("relu", "leaky:0.0", "leaky:0.1"):
            net = networks.build("multitask", act)
            net.load_state_dict(sd, strict=False)
            with torch.no_grad():
                outs[act] = net.eval()(x)["seg"]
        self.assertTrue(torch.equal(outs["relu"], outs["leaky:0.0"]))
        self.assertGreater(rel_err(outs["leaky:0.1"], outs["relu"]), 1e-3)

    def test_multitask_rejects_sizes_not_multiple_of_32(self):
        with self.assertRaisesRegex(ValueError, "multiples of 32"):
            self.nets["multitask"](torch.zeros(1, 3, 80, 64))

    def test_foreground_definition(self):
        s = self.sd["foreground"]
        x = normalise(u8_image(7, 1, 512, 512))
        h = x
        for i in (1, 2, 3):
            h = F.conv2d(h, s["conv%d.weight" % i], stride=2, padding=1)
            h = F.relu(F.batch_norm(h, s["bn%d.running_mean" % i], s["bn%d.running_var" % i],
                                    s["bn%d.weight" % i], s["bn%d.bias" % i], False, 0, 1e-5))
        low = F.conv2d(h, s["logit.weight"], s["logit.bias"])
        with torch.no_grad():
            got = self.nets["foreground"](x)
        self.assertLess(rel_err(got["logit_lowres"], low), 1e-5)
        self.assertLess(rel_err(got["logit"], F.interpolate(low, size=(512, 512),
                                                            mode="bilinear",
                                                            align_corners=False)), 1e-5)

    def test_blur_definition(self):
        s = self.sd["blur"]
        x = normalise(u8_image(8, 3, 256, 256))
        h = x
        for i in (1, 2):
            h = F.conv2d(h, s["conv%d.weight" % i], stride=2, padding=2)
            h = F.relu(F.batch_norm(h, s["bn%d.running_mean" % i], s["bn%d.running_var" % i],
                                    s["bn%d.weight" % i], s["bn%d.bias" % i], False, 0, 1e-5))
        want = h.mean(dim=(2, 3)) @ s["fc.weight"].t() + s["fc.bias"]
        with torch.no_grad():
            got = self.nets["blur"](x)["logit"]
        self.assertEqual(list(got.shape), [3, 1])
        self.assertLess(rel_err(got, want), 1e-5)

    def test_screener_definition_and_invariances(self):
        s = self.sd["screener"]
        g = torch.Generator().manual_seed(9)
        f = torch.rand(40, 512, generator=g)
        rows = [F.relu(s["conv.weight"][:, :, 0] @ f[i] + s["conv.bias"]) for i in range(40)]
        want = torch.stack(rows).amax(0) @ s["fc.weight"][0] + s["fc.bias"][0]
        net = self.nets["screener"]
        with torch.no_grad():
            got = net(f.unsqueeze(0))["logit"]
            perm = net(f[torch.randperm(40, generator=g)].unsqueeze(0))["logit"]
            dup = net(torch.cat([f, f[:24]]).unsqueeze(0))["logit"]  # padded to 64 by repeats
            zero_pad = net(torch.cat([f, torch.zeros(24, 512)]).unsqueeze(0))["logit"]
        self.assertLess(abs(float(got) - float(want)), 1e-4 * max(1.0, abs(float(want))))
        self.assertTrue(torch.equal(got, perm))
        self.assertTrue(torch.equal(got, dup))
        # Reference 7.3: zero rows are not neutral (they inject ReLU(bias)); shown, not assumed.
        self.assertFalse(torch.equal(got, zero_pad))


if __name__ == "__main__":
    unittest.main(verbosity=2)
