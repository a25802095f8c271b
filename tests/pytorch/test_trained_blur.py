#!/usr/bin/python3
"""The committed trained blur network (model/trained/blur.safetensors) still does what its
training record says, on held-out real tissue rebuilt from the shared data:
- it is a valid partial bundle: blur.<key> tensors only, threshold.blur and training.blur set,
  the record's threshold is the bundle's, and the record meets the targets;
- every data file in the record still has the recorded sha256;
- on the targets' part of the held-out set (learn_blur.build_test_set(reduced=True): the CMU-1
  test strip, the TCGA test tiles split by nuclear share, one Kather tile per class in four
  renderings, HistoQC template1, a histolab tile, each also defocused by Gaussian sigma 2, 3, 4,
  6 and pill-box radius 2, 3, 4, 6, 8 px then JPEG q=80; and the FQPath 40x image in focus and
  out of focus at 0.25 and 0.35 um/px) it calls at most 2% of the sharp crops of every texture
  blurry, except the FQPath 40x image as is (at most the recorded 1 of 16), and catches at
  least 95% of the crops defocused by Gaussian sigma >= 2 or pill-box radius >= 2 px (a
  radius-2 pill-box has the second moment of a Gaussian of sigma 1: counting it is the
  stricter reading);
- side by side with the classical measure (the C focus_tool) on the same crops, it makes no
  more false calls on any texture and fewer on the 40x tissue judged as is (where the classical
  measure calls most of an in-focus image blurry), catches at least as many on every texture
  but Kather adipose (the known miss, model/trained/README.md) and more overall;
- it judges both images of the real FQPath defocus pair right, at native scale and at
  0.5 um/px;
- with the bundle's sparse-tissue rule (threshold.blur_sparse_tissue = 0.5: a crop under half
  tissue is also judged by the classical measure, blurry if either says so; the runtime's
  verdict, learn_blur.rule_blurry) the Kather adipose tile's defocused copies are all caught,
  no sharp crop of any texture becomes blurry, and on the held-out sparse-tissue set
  (learn_blur.build_sparse_set: 5-50% tissue crops of the CMU-1 test strip and TCGA test half)
  no sharp crop is called blurry and at least 95% of the Gaussian sigma >= 2 copies are caught,
  more than by the network alone.
Skips, saying so, when the shared data folder (or, for the comparison, the focus_tool) is
absent."""

import os
import unittest

import util
import torch

import bundle
import learn_blur
import networks

BUNDLE = os.path.join(util.SOURCE_DIR, "model", "trained", "blur.safetensors")
HAVE_DATA = os.path.isdir(learn_blur.shared_data())
FOCUS_TOOL = os.path.join(os.environ.get("GS_BUILD_DIR", ""), "tests", "focus_tool")


# The known misses of the committed network (model/trained/README.md): one of the 16 crops of
# the FQPath 40x image judged as is (6%, the classical measure 14 of 16), and the Kather
# adipose tile (87% glass) whose defocused copies it does not catch.
FQ_NATIVE_FALSE_BLUR = 1
ADIPOSE_MISS = "Kather adipose"


def allowed_false_blur(texture, n):
    if texture == learn_blur.TEX_FQ_NATIVE:
        return FQ_NATIVE_FALSE_BLUR
    return learn_blur.TARGET_FALSE_BLUR * n


def counts(text):
    a, b = text.split("/")
    return int(a), int(b)


@unittest.skipUnless(HAVE_DATA, "shared data folder %s absent" % learn_blur.shared_data())
class TrainedBlur(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(1)
        cls.net, cls.threshold, cls.record = learn_blur.load_trained(BUNDLE)
        cls.tensors, cls.meta = bundle.read_bundle(BUNDLE)
        cls.items = learn_blur.build_test_set(reduced=True)
        probs = learn_blur.net_probs(cls.net, [it["crop"] for it in cls.items])
        cls.probs = probs
        cls.blurry = [int(p > cls.threshold) for p in probs]
        cls.m = learn_blur.summarise(cls.items, cls.blurry, probs)

    def test_partial_bundle_holds_the_blur_network_and_its_record(self):
        want = ["blur." + k for k in networks.exported_state(networks.build("blur"))]
        self.assertEqual(list(self.tensors), want)
        self.assertNotEqual(self.meta["provenance.blur"], bundle.UNTRAINED)
        self.assertEqual(self.meta["provenance.multitask"], bundle.UNTRAINED)
        self.assertEqual(float(self.meta["threshold.blur"]), self.record["threshold"])
        self.assertTrue(0.0 < self.threshold < 1.0)
        self.assertEqual(float(self.meta[learn_blur.SPARSE_KEY]), learn_blur.SPARSE_TISSUE)
        for key in ("command", "seed", "recipe", "data", "held_out", "metrics"):
            self.assertIn(key, self.record)
        m = self.record["metrics"]
        self.assertLessEqual(m["false_blur"], learn_blur.TARGET_FALSE_BLUR)
        self.assertGreaterEqual(m["catch_sigma_ge_2"], learn_blur.TARGET_CATCH)
        for t, fb in m["false_blur_by_texture"].items():
            n_fb, n = counts(fb)
            self.assertLessEqual(n_fb, allowed_false_blur(t, n), t)
        self.assertTrue(m["fqpath_right"])

    def test_recorded_data_files_are_unchanged(self):
        self.assertGreater(len(self.record["data"]), 10)
        for d in self.record["data"]:
            self.assertEqual(learn_blur.sha256(learn_blur.data_path(d["file"])), d["sha256"],
                             d["file"])
        uses = {d["file"]: d["use"] for d in self.record["data"]}
        for f in (learn_blur.SLIDE_TCGA, learn_blur.FQ_IN, learn_blur.FQ_OUT, learn_blur.TEMPLATE):
            self.assertEqual(uses[f], "held out", f)

    def test_held_out_false_blur_per_texture_and_catch_rate(self):
        m = self.m
        self.assertGreaterEqual(m["sharp_tiles"], 80)
        tex = m["false_blur_by_texture"]
        for t in (learn_blur.TEX_TCGA_LOW, learn_blur.TEX_FQ_NATIVE, learn_blur.TEX_FQ_035,
                  "Kather stroma", "Kather adipose", "Kather mucosa"):
            self.assertIn(t, tex)
        for t, fb in tex.items():
            n_fb, n = counts(fb)
            self.assertLessEqual(n_fb, allowed_false_blur(t, n), "%s: %s" % (t, tex))
        # Gaussian sigma >= 2 and pill-box radius >= 2, every one counted
        self.assertGreaterEqual(m["defocused_tiles"], 300)
        self.assertGreaterEqual(m["catch_sigma_ge_2"], learn_blur.TARGET_CATCH, m["caught_by_psf"])

    @unittest.skipUnless(os.path.exists(FOCUS_TOOL), "no focus_tool at %s" % FOCUS_TOOL)
    def test_at_least_as_good_as_the_classical_measure_on_every_texture(self):
        scores, verdicts = learn_blur.classical_scores([it["crop"] for it in self.items],
                                                       FOCUS_TOOL)
        c = learn_blur.summarise(self.items, verdicts, [-s for s in scores])
        for t, fb in self.m["false_blur_by_texture"].items():
            self.assertLessEqual(counts(fb)[0], counts(c["false_blur_by_texture"][t])[0], t)
        for t, v in self.m["by_texture"].items():
            if t == ADIPOSE_MISS:
                continue
            self.assertGreaterEqual(counts(v["caught"])[0], counts(c["by_texture"][t]["caught"])[0],
                                    "%s: network %s, classical %s" % (t, v, c["by_texture"][t]))
        self.assertGreater(self.m["catch_sigma_ge_2"], c["catch_sigma_ge_2"])
        # where the classical measure fails: in-focus 40x tissue judged as is
        self.assertGreater(counts(c["false_blur_by_texture"][learn_blur.TEX_FQ_NATIVE])[0],
                           counts(self.m["false_blur_by_texture"][learn_blur.TEX_FQ_NATIVE])[0])

    @unittest.skipUnless(os.path.exists(FOCUS_TOOL), "no focus_tool at %s" % FOCUS_TOOL)
    def test_sparse_tissue_rule(self):
        sparse = learn_blur.sparse_tissue_of(BUNDLE)
        self.assertEqual(sparse, learn_blur.SPARSE_TISSUE)
        crops = [it["crop"] for it in self.items]
        verdicts = learn_blur.classical_scores(crops, FOCUS_TOOL)[1]
        tissue = [learn_blur.tissue_fraction(c) for c in crops]
        rule = learn_blur.rule_blurry(self.probs, self.threshold, tissue, verdicts, sparse)
        r = learn_blur.summarise(self.items, rule, self.probs)
        # the target the network alone misses: Kather adipose, 87% glass
        caught, n = counts(r["by_texture"][ADIPOSE_MISS]["caught"])
        self.assertEqual(caught, n, r["by_texture"][ADIPOSE_MISS])
        self.assertLess(counts(self.m["by_texture"][ADIPOSE_MISS]["caught"])[0], n)
        # no false blur added anywhere, nothing the network caught lost
        self.assertEqual(r["false_blur_by_texture"], self.m["false_blur_by_texture"])
        for a, b in zip(rule, self.blurry):
            self.assertGreaterEqual(a, b)
        self.assertGreater(r["catch_sigma_ge_2"], self.m["catch_sigma_ge_2"])
        # the held-out sparse-tissue set
        sp = learn_blur.build_sparse_set()
        sp_crops = [it["crop"] for it in sp]
        sp_probs = learn_blur.net_probs(self.net, sp_crops)
        sp_verdicts = learn_blur.classical_scores(sp_crops, FOCUS_TOOL)[1]
        sp_rule = learn_blur.rule_blurry(sp_probs, self.threshold, [it["tissue"] for it in sp],
                                         sp_verdicts, sparse)
        sharp = [i for i, it in enumerate(sp) if it["label"] == 0]
        self.assertGreaterEqual(len(sharp), 40)
        self.assertEqual([sp_rule[i] for i in sharp], [0] * len(sharp),
                         [sp[i]["name"] for i in sharp if sp_rule[i]])
        gauss = [i for i, it in enumerate(sp) if it["kind"] == "gauss" and it["size"] >= 2]
        rule_catch = sum(sp_rule[i] for i in gauss) / len(gauss)
        net_catch = sum(sp_probs[i] > self.threshold for i in gauss) / len(gauss)
        self.assertGreaterEqual(rule_catch, learn_blur.TARGET_CATCH)
        self.assertGreater(rule_catch, net_catch)

    def test_real_defocus_pair(self):
        fq = learn_blur.fq_pair_crops()
        for (img, scale), crops in sorted(fq.items()):
            probs = learn_blur.net_probs(self.net, crops)
            share = sum(p > self.threshold for p in probs) / len(probs)
            if img == "in_focus":
                self.assertLess(share, 0.5, "%s %s: %s" % (img, scale, probs))
            else:
                self.assertGreater(share, 0.5, "%s %s: %s" % (img, scale, probs))


if __name__ == "__main__":
    unittest.main()
