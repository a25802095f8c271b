#!/usr/bin/python3
"""The mirror's state_dict keys, shapes, order and parameter counts equal the contract:
model/pytorch/network-weights-keys.tsv (multitask) and reference section 7.4 (small nets)."""

import os
import unittest

import util
import torch.nn as nn

import networks

TSV = os.path.join(util.MIRROR_DIR, "network-weights-keys.tsv")


def read_tsv():
    rows = []
    with open(TSV) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            key, shape, kind = line.rstrip("\n").split("\t")
            rows.append((key, shape, kind))
    return rows


def shape_text(t):
    return "x".join(str(d) for d in t.shape) if t.dim() else "scalar"


class MultiTaskKeys(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.net = networks.build("multitask")

    def test_keys_shapes_and_order_equal_tsv(self):
        rows = read_tsv()
        self.assertEqual(len(rows), 404)
        params = {n for n, _ in self.net.named_parameters()}
        mine = [(k, shape_text(v), "param" if k in params else "buffer")
                for k, v in self.net.state_dict().items()]
        self.assertEqual(len(mine), len(rows))
        for got, want in zip(mine, rows):
            self.assertEqual(got, want)

    def test_parameter_count_matches_reference_section_6(self):
        self.assertEqual(networks.count_parameters(self.net), 19362402)
        self.assertEqual(sum(1 for _ in self.net.parameters()), 233)

    def test_exported_state_has_no_num_batches_tracked(self):
        sd = networks.exported_state(self.net)
        # 57 BNs: stem 3, level0/1 2, 12 BasicBlocks x 2, 6 Roots, 6 projects, 16 DCN actf.
        self.assertEqual(len(sd), 404 - 57)
        self.assertFalse(any(k.endswith("num_batches_tracked") for k in sd))

    def test_levels2_project_weights_exist(self):
        sd = self.net.state_dict()
        self.assertEqual(list(sd["base.level3.project.0.weight"].shape), [128, 64, 1, 1])
        self.assertEqual(list(sd["base.level4.project.1.running_var"].shape), [256])


def bn_keys(name):
    return ["%s.%s" % (name, s) for s in ("weight", "bias", "running_mean", "running_var")]


class SmallNetKeys(unittest.TestCase):
    def check(self, name, keys_shapes, count):
        net = networks.build(name)
        got = [(k, list(v.shape)) for k, v in networks.exported_state(net).items()]
        self.assertEqual(got, keys_shapes)
        self.assertEqual(networks.count_parameters(net), count)

    def test_foreground(self):
        ks = [("conv1.weight", [16, 3, 3, 3])] + [(k, [16]) for k in bn_keys("bn1")]
        ks += [("conv2.weight", [32, 16, 3, 3])] + [(k, [32]) for k in bn_keys("bn2")]
        ks += [("conv3.weight", [64, 32, 3, 3])] + [(k, [64]) for k in bn_keys("bn3")]
        ks += [("logit.weight", [1, 64, 1, 1]), ("logit.bias", [1])]
        self.check("foreground", ks, 23761)

    def test_blur(self):
        ks = [("conv1.weight", [16, 3, 5, 5])] + [(k, [16]) for k in bn_keys("bn1")]
        ks += [("conv2.weight", [32, 16, 5, 5])] + [(k, [32]) for k in bn_keys("bn2")]
        ks += [("fc.weight", [1, 32]), ("fc.bias", [1])]
        self.check("blur", ks, 14129)

    def test_screener(self):
        ks = [("conv.weight", [512, 512, 1]), ("conv.bias", [512]),
              ("fc.weight", [1, 512]), ("fc.bias", [1])]
        self.check("screener", ks, 263169)

    def test_unknown_network_rejected(self):
        with self.assertRaisesRegex(ValueError, "unknown network 'resnet'"):
            networks.build("resnet")


class Activation(unittest.TestCase):
    def test_parse(self):
        self.assertEqual(networks.parse_activation("relu"), ("relu", 0.0))
        self.assertEqual(networks.parse_activation("leaky:0.01"), ("leaky", 0.01))
        for bad in ("gelu", "leaky:", "leaky:x", "leaky:-0.1", "leaky:1.5", "leaky:nan", None):
            with self.assertRaises(ValueError, msg=bad):
                networks.parse_activation(bad)

    def test_leaky_replaces_every_bn_site_but_not_seg_head(self):
        net = networks.build("multitask", "leaky:0.01")
        leaky = [n for n, m in net.named_modules() if isinstance(m, nn.LeakyReLU)]
        relu = [n for n, m in net.named_modules() if isinstance(m, nn.ReLU)]
        # stem 3 + level0 + level1 + 12 BasicBlocks + 6 Roots + 16 DeformConvs = 39 sites
        self.assertEqual(len(leaky), 39)
        self.assertTrue(all(m.negative_slope == 0.01 for m in net.modules()
                            if isinstance(m, nn.LeakyReLU)))
        self.assertEqual(relu, ["seg.1"])
        plain = networks.build("multitask")
        self.assertEqual(sum(isinstance(m, nn.ReLU) for m in plain.modules()), 40)


if __name__ == "__main__":
    unittest.main(verbosity=2)
