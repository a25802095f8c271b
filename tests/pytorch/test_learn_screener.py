#!/usr/bin/python3
"""train.py screener learns, and a seeded run survives a kill bit for bit.

Data: learn_data.make_feature_dataset, 192 synthetic slides in `gastroscreen features`'
format ([k,512] float32 .npy, 4 <= k <= 64) whose label is learnable (positive slides have
a shifted block of feature columns in their top rows). Nothing here is about cancer.
"""

import json
import os
import subprocess
import sys
import unittest

import util

import torch

import learn_data

TRAIN = os.path.join(util.MIRROR_DIR, "train.py")


def train(*args):
    return subprocess.run([util.PYTHON, TRAIN, "screener"] + [str(a) for a in args],
                          capture_output=True, text=True)


class ScreenerLearns(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = util.scratch_dir()
        cls.data = os.path.join(cls.tmp.name, "data")
        learn_data.make_feature_dataset(cls.data)
        cls.csv = os.path.join(cls.data, "features.csv")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_validation_loss_falls(self):
        out = os.path.join(self.tmp.name, "learn")
        r = train("--features", self.csv, "--out", out, "--seed", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        sys.stderr.write(r.stdout)
        with open(os.path.join(out, "training.json")) as f:
            info = json.load(f)
        split = info["splits"][0]
        start = split["history"][0]
        self.assertEqual(start["epoch"], 0)
        self.assertEqual(len(split["history"]), 21)  # untrained + the recipe's 20 epochs
        best = split["val"]
        self.assertLess(best["loss"], 0.5 * start["val"]["loss"])
        self.assertGreaterEqual(best["auc"], 0.9)
        self.assertEqual(set(split["train_patients"]) & set(split["val_patients"]), set())
        self.assertEqual(len(split["train_patients"]) + len(split["val_patients"]), 24)
        ckpt = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
        self.assertEqual(list(ckpt), ["screener"])
        b = os.path.join(out, "b.safetensors")
        r = util.run_script("export.py", "--checkpoint", os.path.join(out, "checkpoint.pt"),
                            "--out", b, "--allow-missing", "--training",
                            "screener=" + os.path.join(out, "training.json"))
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_killed_run_resumes_to_the_same_weights(self):
        a = os.path.join(self.tmp.name, "straight")
        r = train("--features", self.csv, "--out", a, "--seed", "3", "--epochs", "8")
        self.assertEqual(r.returncode, 0, r.stderr)
        b = os.path.join(self.tmp.name, "killed")
        p = subprocess.Popen([util.PYTHON, TRAIN, "screener", "--features", self.csv, "--out", b,
                              "--seed", "3", "--epochs", "8"], stdout=subprocess.PIPE, text=True)
        for line in p.stdout:
            if " epoch 3/8 " in line:
                p.kill()
                break
        p.wait()
        self.assertNotEqual(p.returncode, 0, "the run finished before it was killed")
        self.assertFalse(os.path.exists(os.path.join(b, "checkpoint.pt")))
        r = train("--features", self.csv, "--out", b, "--seed", "3", "--epochs", "8",
                  "--resume")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn(" epoch 1/8 ", r.stdout)
        ca = torch.load(os.path.join(a, "checkpoint.pt"), weights_only=True)["screener"]
        cb = torch.load(os.path.join(b, "checkpoint.pt"), weights_only=True)["screener"]
        for k in ca:
            self.assertTrue(torch.equal(ca[k], cb[k]), k)
        r = train("--features", self.csv, "--out", b, "--seed", "4", "--resume")
        self.assertEqual(r.returncode, 1)  # another recipe or data cannot resume this run

    def test_bad_matrix_refused(self):
        d = os.path.join(self.tmp.name, "bad")
        learn_data.make_feature_dataset(d, slides=8)
        path = os.path.join(d, "features.csv")
        with open(path) as f:
            lines = f.read().splitlines()
        cells = lines[3].split(",")
        cells[4] = str(int(cells[4]) + 1)  # k no longer matches the .npy's rows
        lines[3] = ",".join(cells)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        r = train("--features", path, "--out", os.path.join(d, "out"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("row 4", r.stderr)
        self.assertIn(cells[0], r.stderr)


if __name__ == "__main__":
    torch.set_num_threads(1)
    unittest.main()
