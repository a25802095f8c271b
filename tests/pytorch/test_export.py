#!/usr/bin/python3
"""export.py: checkpoint hygiene, exact round trip, and a clear error naming the key (or
network) for every kind of bad checkpoint, with a non-zero exit status."""

import contextlib
import io
import os
import unittest

import util
import torch

import bundle
import export
import make_bundle
import networks

CREATED = "2024-05-06T07:08:09Z"


def small_state_dicts(seed=5):
    return make_bundle.make_state_dicts(seed, ["foreground", "blur", "screener"])


class Export(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = util.scratch_dir()
        cls.dir = cls.tmp.name
        cls.small = small_state_dicts()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.dir, name)

    def save(self, name, ckpt):
        p = self.path(name)
        torch.save(ckpt, p)
        return p

    def export_main(self, *args):
        """Runs export.main in-process; returns (exit status, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = export.main([str(a) for a in args])
        return rc, out.getvalue(), err.getvalue()

    def test_full_checkpoint_round_trip_with_hygiene(self):
        # multitask as a CenterNet/DataParallel checkpoint: wrapped, "module."-prefixed, with
        # num_batches_tracked and the unused ImageNet head base.fc.*; values randomised so
        # a mix-up of tensors cannot pass.
        g = torch.Generator().manual_seed(3)
        mt = networks.build("multitask").state_dict()
        mt = {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v)
              for k, v in mt.items()}
        wrapped = {"epoch": 12, "state_dict": {"module." + k: v for k, v in mt.items()}}
        wrapped["state_dict"]["module.base.fc.weight"] = torch.zeros(1000, 512, 1, 1)
        wrapped["state_dict"]["module.base.fc.bias"] = torch.zeros(1000)
        screener = dict(self.small["screener"])
        screener["conv.weight"] = screener["conv.weight"].unsqueeze(-1)  # Conv2d variant
        ckpt = {"multitask": wrapped, "foreground": self.small["foreground"],
                "blur": self.small["blur"], "screener": screener}
        src = self.save("full.pt", ckpt)
        out = self.path("full.safetensors")
        r = util.run_script("export.py", "--checkpoint", src, "--out", out,
                            "--provenance", "blur=synthetic blur set v2", "--created", CREATED)
        self.assertEqual(r.returncode, 0, r.stderr)
        tensors, meta = bundle.read_bundle(out)
        want = bundle.flatten_networks({
            "multitask": networks.exported_state(networks.build("multitask")),
            "foreground": self.small["foreground"], "blur": self.small["blur"],
            "screener": self.small["screener"]})
        self.assertEqual(list(tensors), list(want))  # module order, no fc, no counters
        for k in want:
            src_t = (mt[k.split(".", 1)[1]] if k.startswith("multitask.")
                     else self.small[k.split(".", 1)[0]][k.split(".", 1)[1]])
            self.assertTrue(torch.equal(tensors[k], src_t.float()), k)
        self.assertEqual(meta["provenance.blur"], "synthetic blur set v2")
        self.assertRegex(meta["provenance.multitask"],
                         r"^exported from checkpoint full\.pt \(sha256 [0-9a-f]{64}\); "
                         r"training data not stated$")
        self.assertEqual(meta["created"], CREATED)
        self.assertEqual(meta["creator"], "gastroscreen export.py " + bundle.TOOL_VERSION)
        nets, _ = bundle.load_networks(out)
        self.assertEqual(set(nets), set(networks.NETWORK_NAMES))

    def test_f16_export_equals_half_rounding(self):
        src = self.save("f16.pt", {"blur": self.small["blur"]})
        rc, _, err = self.export_main("--checkpoint", src, "--out", self.path("f16.st"),
                                      "--allow-missing", "--dtype", "f16")
        self.assertEqual(rc, 0, err)
        t, _ = bundle.read_bundle(self.path("f16.st"))
        for k, v in self.small["blur"].items():
            self.assertEqual(t["blur." + k].dtype, torch.float16)
            self.assertTrue(torch.equal(t["blur." + k], v.half()), k)

    def test_missing_network_is_an_error_unless_allowed(self):
        src = self.save("two.pt", {"blur": self.small["blur"],
                                   "screener": self.small["screener"]})
        out = self.path("two.st")
        rc, _, err = self.export_main("--checkpoint", src, "--out", out)
        self.assertEqual(rc, 1)
        self.assertIn("missing network(s) multitask, foreground", err)
        self.assertFalse(os.path.exists(out))
        rc, _, err = self.export_main("--checkpoint", src, "--out", out, "--allow-missing",
                                      "--provenance", "screener=untrained")
        self.assertEqual(rc, 0, err)
        t, meta = bundle.read_bundle(out)
        self.assertEqual(meta["provenance.multitask"], "untrained")
        self.assertEqual(meta["provenance.foreground"], "untrained")
        self.assertEqual(meta["provenance.screener"], "untrained")
        self.assertNotEqual(meta["provenance.blur"], "untrained")
        self.assertEqual({k.split(".")[0] for k in t}, {"blur", "screener"})

    def check_error(self, name, ckpt, *needles, extra=()):
        src = self.save(name + ".pt", ckpt)
        out = self.path(name + ".st")
        rc, _, err = self.export_main("--checkpoint", src, "--out", out, "--allow-missing",
                                      *extra)
        self.assertEqual(rc, 1, name)
        self.assertTrue(err.startswith("export.py: error: "), err)
        for n in needles:
            self.assertIn(n, err)
        self.assertFalse(os.path.exists(out))

    def test_unexpected_key_named(self):
        sd = dict(self.small["blur"])
        sd["fc2.weight"] = torch.zeros(1, 32)
        self.check_error("unexpected", {"blur": sd}, "blur: unexpected key fc2.weight [1, 32]")

    def test_missing_key_named(self):
        sd = dict(self.small["foreground"])
        del sd["bn2.running_var"]
        self.check_error("missingkey", {"foreground": sd},
                         "foreground: missing key bn2.running_var (expected shape [32])")

    def test_wrong_shape_named(self):
        sd = dict(self.small["screener"])
        sd["fc.weight"] = torch.zeros(2, 512)
        self.check_error("shape", {"screener": sd},
                         "screener: key fc.weight has shape [2, 512], expected [1, 512]")

    def test_all_problems_reported_together(self):
        blur = dict(self.small["blur"])
        blur["conv1.weight"] = torch.zeros(16, 3, 3, 3)
        fg = dict(self.small["foreground"])
        fg["logit.bias"] = torch.tensor([float("nan")])
        self.check_error("many", {"blur": blur, "foreground": fg},
                         "blur: key conv1.weight has shape [16, 3, 3, 3], expected [16, 3, 5, 5]",
                         "foreground: key logit.bias contains NaN or Inf")

    def test_integer_tensor_rejected(self):
        sd = dict(self.small["blur"])
        sd["fc.bias"] = torch.tensor([1], dtype=torch.int64)
        self.check_error("int", {"blur": sd}, "blur: key fc.bias has dtype int64")

    def test_unknown_network_and_bad_containers(self):
        self.check_error("unknown", {"blurr": self.small["blur"]}, "unknown network key(s) 'blurr'")
        self.check_error("notdict", [1, 2], "expected a dict keyed by network name, got list")
        self.check_error("notsd", {"blur": 3}, "blur: expected a state_dict")

    def test_bad_arguments(self):
        src = self.save("ok.pt", {"blur": self.small["blur"]})
        self.check_error("prov", {"blur": self.small["blur"]}, "--provenance 'resnet=x'",
                         extra=("--provenance", "resnet=x"))
        self.check_error("prov2", {"blur": self.small["blur"]},
                         "--provenance multitask: network is not in the checkpoint",
                         extra=("--provenance", "multitask=trained on X"))
        self.check_error("act", {"blur": self.small["blur"]}, "--activation",
                         extra=("--activation", "gelu"))
        rc, _, err = self.export_main("--checkpoint", self.path("nonexistent.pt"),
                                      "--out", self.path("x.st"))
        self.assertEqual(rc, 1)
        self.assertIn("nonexistent.pt: no such file", err)
        with open(self.path("garbage.pt"), "wb") as f:
            f.write(b"this is not a checkpoint")
        rc, _, err = self.export_main("--checkpoint", self.path("garbage.pt"),
                                      "--out", self.path("x.st"))
        self.assertEqual(rc, 1)
        self.assertIn("garbage.pt: cannot load checkpoint", err)
        self.assertTrue(os.path.exists(src))

    def test_pickled_objects_refused(self):
        # weights_only loading: an arbitrary object in the checkpoint is not unpickled.
        self.check_error("pickle", {"blur": self.small["blur"], "extra": io.StringIO("x")},
                         "cannot load checkpoint")


if __name__ == "__main__":
    unittest.main(verbosity=2)
