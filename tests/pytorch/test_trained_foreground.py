#!/usr/bin/python3
"""The committed trained foreground network (model/trained/foreground.safetensors) still gives
the metrics its training record (model/trained/foreground.json) states.

Recomputes, with the committed weights and threshold, the held-out metrics the record holds:
IoU / Dice against the committed 512x512 classical masks of the held-out slides (TCGA-CR-7395,
BigPicture 29; the masks were made by tests/tools/tissue_mask_tool, so no build is needed
here), the predicted tissue fraction of every labelled histolab tile, the fluorescence NDPI and
the share of HistoQC ink / coverslip-edge pixels called tissue. Also checks that the bundle is
a valid partial bundle whose training.foreground record matches the JSON record, and that the
shared data files still have the sha256 the training recorded.

Run: /usr/bin/python3 tests/pytorch/test_trained_foreground.py (about half a minute).
"""

import hashlib
import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "model", "pytorch"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import bundle  # noqa: E402
import learn_foreground as lf  # noqa: E402

BUNDLE = os.path.join(ROOT, "model", "trained", "foreground.safetensors")
RECORD = os.path.join(ROOT, "model", "trained", "foreground.json")
# Same code, same weights, one thread: results repeat to float rounding; this allows a few
# pixels of 512x512 to flip at the threshold on another CPU or torch build.
TOL = 0.003


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def have_shared():
    return os.path.isdir(lf.SHARED)


class TrainedForeground(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(1)
        with open(RECORD) as f:
            cls.record = json.load(f)
        nets, cls.meta = bundle.load_networks(BUNDLE, ["foreground"])
        cls.net = nets["foreground"]
        cls.threshold = float(cls.meta["threshold.foreground"])
        cls.metrics = cls.record["metrics"]

    def test_bundle_is_the_recorded_partial_bundle(self):
        self.assertEqual(sha256(BUNDLE), self.record["bundle_sha256"])
        tensors, meta = bundle.read_bundle(BUNDLE)
        self.assertTrue(all(k.startswith("foreground.") for k in tensors))
        self.assertEqual(len(tensors), 17)  # 3 conv + 3 x 4 BN + logit weight and bias
        self.assertEqual(meta["threshold.foreground"], self.record["threshold.foreground"])
        self.assertNotEqual(meta["provenance.foreground"], bundle.UNTRAINED)
        self.assertEqual(meta["provenance.blur"], bundle.UNTRAINED)
        training = json.loads(meta["training.foreground"])
        for key in ("command", "seed", "recipe", "data", "excluded", "held_out", "metrics"):
            self.assertEqual(training[key], self.record[key], key)
        self.assertIn("tcga", training["held_out"])
        self.assertIn("b29", training["held_out"])

    @unittest.skipUnless(have_shared(), "shared data folder not present")
    def test_training_data_unchanged(self):
        self.assertGreater(len(self.record["data"]), 40)
        for entry in self.record["data"]:
            path = os.path.join(lf.SHARED, entry["file"])
            self.assertEqual(sha256(path), entry["sha256"], entry["file"])

    @unittest.skipUnless(have_shared(), "shared data folder not present")
    def test_held_out_slides(self):
        for name, want in self.metrics["held_out_slides"].items():
            ref = lf.ref_mask_29() if name == "b29" else None
            got = lf.heldout_metrics(self.net, self.threshold, name, lf.load_classical_512(name),
                                     ref)
            for key, value in want.items():
                self.assertAlmostEqual(got[key], value, delta=TOL, msg="%s %s" % (name, key))
        # And the figures are still worth having (not just repeatable).
        self.assertGreaterEqual(self.metrics["held_out_slides"]["tcga"]["iou"], 0.85)

    @unittest.skipUnless(have_shared(), "shared data folder not present")
    def test_tiles_and_fluorescence(self):
        for tile, want in self.metrics["tiles"].items():
            im = lf.on_white(lf.Image.open(os.path.join(lf.SHARED, lf.HISTOLAB + tile + ".png")))
            frac = float((lf.predict(self.net, im) > self.threshold).float().mean())
            self.assertAlmostEqual(frac, want["net"], delta=TOL, msg=tile)
            if want["split"] == "held-out" and want["label"].startswith("background"):
                self.assertLess(frac, lf.TILE_TISSUE_FRACTION, tile)
        src = lf.SOURCES["ndpi"]
        p = lf.predict(self.net, lf.read_source(os.path.join(lf.SHARED, src[0]), src[1]))
        frac = float((p > self.threshold).float().mean())
        self.assertAlmostEqual(frac, self.metrics["ndpi_fluorescence_net_tissue"], delta=TOL)

    @unittest.skipUnless(have_shared(), "shared data folder not present")
    def test_histoqc_ink_and_edge(self):
        for name, want in self.metrics["histoqc"].items():
            im = lf.read_source(os.path.join(lf.SHARED, lf.SOURCES[name][0]), "image")
            p = lf.predict(self.net, im)
            up = F.interpolate(p[None, None], size=(im.height, im.width), mode="bilinear",
                               align_corners=False)[0, 0] > self.threshold
            marked = torch.from_numpy(lf.load_no_tissue(name, im.size))
            share = float(up[marked].float().mean())
            self.assertAlmostEqual(share, want["net_marked_called_tissue"], delta=TOL, msg=name)


if __name__ == "__main__":
    unittest.main()
