#!/usr/bin/python3
"""bundle.py reads back what it writes (F32/F16/BF16, metadata, layout), and make_bundle.py
is deterministic, seeds networks independently and writes broken files a loader rejects."""

import contextlib
import io
import json
import os
import struct
import unittest

import util
import torch

import bundle
import make_bundle
import networks

CREATED = "2024-05-06T07:08:09Z"


def raw_header(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    return n, json.loads(data[8:8 + n]), data


class ReadWrite(unittest.TestCase):
    def setUp(self):
        self.tmp = util.scratch_dir()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_round_trip_each_dtype_with_exactly_representable_values(self):
        # Values exact in bf16 and f16 alike: small integers and halves.
        vals = torch.tensor([0.0, -0.0, 1.0, -2.5, 0.5, 3.0, -7.0, 96.0])
        tensors = {"blur.fc.weight": vals.view(1, 8), "blur.fc.bias": torch.tensor([0.25]),
                   "screener.fc.bias": torch.tensor([-1.5])}
        meta = bundle.default_metadata({"blur": "synthetic"}, created=CREATED)
        for dtype in ("F32", "F16", "BF16"):
            path = os.path.join(self.dir, "rt-%s.safetensors" % dtype)
            bundle.write_bundle(path, tensors, meta, dtype)
            got, got_meta = bundle.read_bundle(path)
            self.assertEqual(list(got), list(tensors))
            for k, v in tensors.items():
                self.assertEqual(got[k].dtype, bundle.DTYPES[dtype])
                self.assertTrue(torch.equal(got[k].float(), v), k)
            self.assertEqual(got_meta, meta)
            n, header, data = raw_header(path)
            self.assertEqual(n % 8, 0)
            self.assertEqual(header["blur.fc.weight"],
                             {"dtype": dtype, "shape": [1, 8], "data_offsets": [0, 8 * (
                                 4 if dtype == "F32" else 2)]})
            self.assertEqual(len(data), 8 + n + 10 * (4 if dtype == "F32" else 2))

    def test_f32_bytes_are_little_endian_ieee(self):
        path = os.path.join(self.dir, "le.safetensors")
        bundle.write_bundle(path, {"blur.fc.bias": torch.tensor([1.0])},
                            bundle.default_metadata({}, created=CREATED))
        n, _, data = raw_header(path)
        self.assertEqual(data[8 + n:], struct.pack("<f", 1.0))

    def test_metadata_contract(self):
        meta = bundle.default_metadata({"multitask": "TCGA-STAD fold 1"}, "leaky:0.01", CREATED)
        self.assertEqual(tuple(meta), bundle.METADATA_KEYS)
        self.assertEqual(meta["format"], "gastroscreen-bundle")
        self.assertEqual(meta["format_version"], "1")
        self.assertEqual(meta["input_mean"], "0.485,0.456,0.406")
        self.assertEqual(meta["input_std"], "0.229,0.224,0.225")
        self.assertEqual(meta["threshold.screen"], "0.74")
        self.assertEqual(meta["activation"], "leaky:0.01")
        self.assertEqual(meta["bn_eps"], "1e-5")
        self.assertEqual(meta["provenance.multitask"], "TCGA-STAD fold 1")
        self.assertEqual(meta["provenance.blur"], "untrained")
        self.assertEqual(meta["created"], CREATED)
        self.assertRegex(bundle.default_metadata({})["created"],
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        with self.assertRaisesRegex(bundle.BundleError, "unknown network"):
            bundle.default_metadata({"resnet": "x"})

    def test_writer_refuses_bad_tensors(self):
        meta = bundle.default_metadata({}, created=CREATED)
        path = os.path.join(self.dir, "bad.safetensors")
        cases = [({"blur.fc.bias": torch.tensor([float("nan")])}, "NaN"),
                 ({"blur.fc.bias": torch.tensor([1], dtype=torch.int64)}, "not a floating"),
                 ({"fc.bias": torch.tensor([1.0])}, "name must start"),
                 ({"blur.bn1.num_batches_tracked": torch.tensor(1.0)}, "num_batches_tracked")]
        for tensors, msg in cases:
            with self.assertRaisesRegex(bundle.BundleError, msg):
                bundle.write_bundle(path, tensors, meta)
        self.assertFalse(os.path.exists(path))


class Generator(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = util.scratch_dir()
        cls.dir = cls.tmp.name
        # Small multitask calibration keeps this quick; the 512 forward is in test_forward.
        cls.small = ["--nets", "foreground,blur,screener"]

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def gen(self, name, *args):
        path = os.path.join(self.dir, name)
        r = util.run_script("make_bundle.py", "--out", path, "--created", CREATED, *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        return path, r.stdout

    def read(self, path):
        with open(path, "rb") as f:
            return f.read()

    def test_same_seed_same_bytes_other_seed_other_bytes(self):
        a, _ = self.gen("a.safetensors", "--seed", "7", "--calib-size", "64")
        b, _ = self.gen("b.safetensors", "--seed", "7", "--calib-size", "64")
        c, _ = self.gen("c.safetensors", "--seed", "8", *self.small)
        d, _ = self.gen("d.safetensors", "--seed", "7", *self.small)
        self.assertEqual(self.read(a), self.read(b))
        ta, meta = bundle.read_bundle(a)
        tc, _ = bundle.read_bundle(c)
        td, _ = bundle.read_bundle(d)
        self.assertEqual(len(ta), 380)
        for k in ("multitask", "foreground", "blur", "screener"):
            self.assertEqual(meta["provenance." + k], "untrained")
        self.assertEqual(meta["created"], CREATED)
        # Networks are seeded independently: the subset equals the full bundle's tensors.
        for k, v in td.items():
            self.assertTrue(torch.equal(v, ta[k]), k)
        self.assertFalse(torch.equal(tc["screener.conv.weight"], td["screener.conv.weight"]))

    def test_weights_are_not_trivial(self):
        path, _ = self.gen("n.safetensors", "--seed", "3", "--calib-size", "64")
        t, _ = bundle.read_bundle(path)
        # BN stats measured, not defaults; ups are perturbed bilinear; DCN offsets non-zero.
        self.assertGreater(float(t["multitask.base.level2.root.bn.running_mean"].abs().max()), 0.05)
        self.assertFalse(torch.all(t["multitask.base.level2.root.bn.running_var"] == 1))
        up = t["multitask.ida_up.up_2.weight"]
        bil = networks.bilinear_up_kernel(4)
        self.assertGreater(float((up - bil).abs().max()), 0.01)
        self.assertLess(float((up / bil - 1).abs().max()), 0.2001)
        self.assertGreater(float(t["multitask.dla_up.ida_0.proj_1.conv.conv_offset_mask.weight"]
                                 .abs().max()), 0.0)

    def test_dtype_option(self):
        path, _ = self.gen("h.safetensors", "--seed", "3", "--dtype", "bf16", *self.small)
        _, header, _ = raw_header(path)
        dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
        self.assertEqual(dtypes, {"BF16"})

    def test_every_broken_kind_is_rejected_by_the_loader(self):
        expect = {
            "missing-tensor": "missing key",
            "unexpected-tensor": "unexpected key",
            "wrong-shape": "has shape",
            "bad-dtype": "dtype 'I64' not allowed",
            "nan-values": "NaN or Inf",
            "inf-values": "NaN or Inf",
            "truncated": "outside the",
            "header-overflow": "runs past the end",
            "duplicate-key": "duplicate key",
            "offsets-gap": "gap or overlap",
            "metadata-non-string": "__metadata__ must be an object of strings",
            "missing-metadata": "metadata key\\(s\\) missing: activation",
            "bad-format-version": "format_version '999'",
        }
        self.assertEqual(set(expect), set(make_bundle.KINDS))
        for kind, msg in expect.items():
            with self.subTest(kind=kind):
                # In-process (main() is the CLI) to spare 13 interpreter start-ups.
                path = os.path.join(self.dir, "broken-%s.safetensors" % kind)
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    rc = make_bundle.main(["--seed", "1", "--out", path, "--broken", kind,
                                           "--created", CREATED] + self.small)
                self.assertEqual(rc, 0)
                self.assertTrue(out.getvalue().startswith("broken: %s: " % kind), out.getvalue())
                with self.assertRaisesRegex(bundle.BundleError, msg):
                    bundle.load_networks(path)

    def test_bad_arguments_fail(self):
        for args in (["--nets", "resnet"], ["--broken", "nope"], ["--activation", "gelu"],
                     ["--calib-size", "100"]):
            r = util.run_script("make_bundle.py", "--seed", "1", "--out",
                                os.path.join(self.dir, "x"), *args)
            self.assertNotEqual(r.returncode, 0, args)
            self.assertIn("error", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
