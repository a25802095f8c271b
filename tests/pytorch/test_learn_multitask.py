#!/usr/bin/python3
"""The multi-task chain learns: train.py multitask -> export.py -> the C runtime.

Data: learn_data.make_patch_dataset, 64-px patches cut with openslide from the real H&E
tissue of tests/data/CMU-1-Small-Region.svs, in `gastroscreen dataset`'s manifest format,
with a synthetic learnable target (mask = grey < 200, label = tissue fraction above the
median), 6 "patients". Nothing here is about cancer.

1. train.py multitask --crop 64 --batch 4 --epochs 6 (54 steps): the validation loss of the
   best epoch is below 0.9 x the untrained network's (history epoch 0), training.json
   names the manifest's sha256 and a patient-disjoint split. Three epochs were not enough
   on every CPU: with seed 1 the validation loss went 0.698 -> 0.506 on an AVX-512 Xeon but
   0.698 -> 0.671, 0.728, 0.738 on an AVX2 EPYC (PyTorch's kernels differ, and BatchNorm's
   running statistics after 27 steps of batch 4 still lag); its epochs 4-6 reached 0.525,
   0.389, 0.362.
2. export.py --training multitask=training.json, then `gastroscreen infer --model B
   TILE.png --out DIR` on a 128-px CMU-1 tissue tile and a 64-px patch: every multitask
   output of C against PyTorch (networks.py on the same bundle) within
   TOL * max|PyTorch|. TOL 1e-5 is a hundred times tighter than the seeded-bundle parity
   (tests/parity/runtime_parity.py, 1e-3): DCN offsets trained from zero stay small, so the
   reference is well conditioned and float32 summation order is the only difference
   (measured at most 7.8e-7 over the outputs; 1e-5 leaves >10x for other CPUs' kernels).
"""

import hashlib
import json
import os
import subprocess
import sys
import unittest

import util

import torch
import torchvision.io

import bundle
import learn_data
import npy

TOL = 1e-5


def gastroscreen():
    return os.path.join(os.environ.get("GS_BUILD_DIR", os.path.join(util.SOURCE_DIR, "build",
                                                                    "release")),
                        "daemon", "gastroscreen")


class MultitaskChainLearns(unittest.TestCase):
    def setUp(self):
        if not os.path.exists(gastroscreen()):
            self.fail("%s not built" % gastroscreen())
        self.tmp = util.scratch_dir()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_train_export_infer(self):
        data = os.path.join(self.dir, "data")
        n = learn_data.make_patch_dataset(data, size=64, step=240, patients=6)
        self.assertGreater(n, 30)
        manifest = os.path.join(data, "manifest.csv")
        out = os.path.join(self.dir, "ckpt")
        r = subprocess.run([util.PYTHON, os.path.join(util.MIRROR_DIR, "train.py"), "multitask",
                            "--manifest", manifest, "--out", out, "--crop", "64", "--batch", "4",
                            "--epochs", "6", "--seed", "1"], capture_output=True, text=True)
        sys.stderr.write(r.stdout)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "training.json")) as f:
            info = json.load(f)
        with open(manifest, "rb") as f:
            self.assertEqual(info["data"]["manifest_sha256"], hashlib.sha256(f.read()).hexdigest())
        split = info["splits"][0]
        self.assertEqual(set(split["train_patients"]) & set(split["val_patients"]), set())
        untrained = split["history"][0]["val"]["loss"]
        best = split["val"]["loss"]
        print("multitask val loss: untrained %.4f, best %.4f (epoch %d)"
              % (untrained, best, split["best_epoch"]), file=sys.stderr)
        self.assertLess(best, 0.9 * untrained)

        b = os.path.join(self.dir, "trained.safetensors")
        r = util.run_script("export.py", "--checkpoint", os.path.join(out, "checkpoint.pt"),
                            "--out", b, "--allow-missing", "--training",
                            "multitask=" + os.path.join(out, "training.json"),
                            "--provenance", "multitask=CI: synthetic target on CMU-1 tissue")
        self.assertEqual(r.returncode, 0, r.stderr)
        nets, meta = bundle.load_networks(b, ["multitask"])
        self.assertEqual(json.loads(meta["training.multitask"])["seed"], 1)

        tile = os.path.join(self.dir, "tile128.png")
        import openslide
        rgb = openslide.OpenSlide(learn_data.SLIDE).read_region((700, 900), 0, (128, 128))
        t = torch.frombuffer(bytearray(rgb.convert("RGB").tobytes()), dtype=torch.uint8)
        torchvision.io.write_png(t.view(128, 128, 3).permute(2, 0, 1).contiguous(), tile)
        patch = os.path.join(data, "patches", "0000.png")
        worst = 0.0
        for name, img in (("tile128", tile), ("patch64", patch)):
            cdir = os.path.join(self.dir, name + ".c")
            r = subprocess.run([gastroscreen(), "infer", "--model", b, img, "--out", cdir],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            u8 = npy.read_npy(os.path.join(cdir, "tiles_u8.npy")).permute(0, 3, 1, 2)
            mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
            std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
            with torch.no_grad():
                ref = nets["multitask"]((u8.float() / 255.0 - mean) / std)
            for out_name, key in (("multitask_logit", "logit"), ("multitask_feature", "feature"),
                                  ("multitask_seg", "seg")):
                c = npy.read_npy(os.path.join(cdir, out_name + ".npy"))
                p = ref[key]
                self.assertEqual(list(c.shape), list(p.shape), out_name)
                ratio = float((c - p).abs().max()) / float(p.abs().max())
                print("%s %s: max|C-PyTorch| / max|PyTorch| = %.3g" % (name, out_name, ratio),
                      file=sys.stderr)
                worst = max(worst, ratio)
                self.assertLessEqual(ratio, TOL, "%s %s" % (name, out_name))
        self.assertGreater(worst, 0.0)  # C really ran its own arithmetic


if __name__ == "__main__":
    torch.set_num_threads(1)
    unittest.main()
