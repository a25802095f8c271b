#!/usr/bin/python3
"""Smoke test of `gastroscreen bench`: it runs, and its JSON has every figure, positive.

    /usr/bin/python3 tests/bench/smoke.py --gastroscreen PATH

No timing is asserted (machines are noisy). What is checked:
- `bench --json --repeat 1 --quick` prints one JSON object with the machine, one decoder
  shape with positive times and rates (the ratio and rates consistent with the times), the
  dense reference, and with --no-network the network section skipped with a reason;
- without --model the build's default bundle is measured, with the per-part breakdown of a
  tile's time (every part present, non-negative, shares summing to 1), for fp32 and, on a CPU
  with native bf16, bf16; --precision fp32 measures fp32 only, an unknown precision is a
  usage error;
- `--threads 1` is honoured and reported;
- usage errors exit 2; a missing bundle exits 1 naming the file;
- with a seeded bundle (model/pytorch/make_bundle.py): the multi-task section has positive
  tiles/s and GFLOP/s, the FLOPs counted from the bundle's layers equal the reference's
  28.56 GMAC per 512x512 tile (network-architecture.md section 6) to 0.1%, and the small
  networks have positive times; a bundle without the multi-task network reports it absent.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import unittest

ARGS = None
SOURCE = os.environ.get(
    "GS_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)


def run(*extra, check_rc=0):
    p = subprocess.run(
        [ARGS.gastroscreen, "bench"] + list(extra), capture_output=True, text=True, timeout=1500
    )
    if check_rc is not None and p.returncode != check_rc:
        raise AssertionError(
            "bench %s exited %d (expected %d)\nstdout:\n%s\nstderr:\n%s"
            % (" ".join(extra), p.returncode, check_rc, p.stdout, p.stderr)
        )
    return p


def positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def make_bundle(path, nets):
    subprocess.run(
        [
            "/usr/bin/python3",
            os.path.join(SOURCE, "model", "pytorch", "make_bundle.py"),
            "--seed",
            "3",
            "--nets",
            nets,
            "--created",
            "2026-01-01T00:00:00Z",
            "--out",
            path,
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )


class BenchSmoke(unittest.TestCase):
    def check_common(self, r, threads=None):
        m = r["machine"]
        self.assertTrue(isinstance(m["cpu"], str) and m["cpu"])
        self.assertTrue(positive(m["cpus"]))
        self.assertTrue(positive(m["threads"]))
        if threads is not None:
            self.assertEqual(m["threads"], threads)
        self.assertRegex(m["onednn"], r"^\d+\.\d+\.\d+$")
        self.assertTrue(m["isa"].startswith("cpu_isa"))
        # The measured bf16/fp32 multiply-add rate (0 without the instructions) and its verdict
        # (ops/cpu_rate.h: AMX, or native bf16 at >= 1.5x the fp32 rate).
        self.assertTrue(m["bf16_rate"] >= 0 and m["bf16_rate"] < 16, m["bf16_rate"])
        self.assertIsInstance(m["bf16_pays"], bool)
        self.assertEqual(m["bf16_pays"], "amx" in m["isa"] or
                         ("bf16" in m["isa"] and m["bf16_rate"] >= 1.5), m)
        self.assertEqual(r["repeat"], 1)
        rows = r["deform_vs_dense"]
        self.assertEqual(len(rows), 1, "--quick runs one shape")
        row = rows[0]
        self.assertEqual(row["shape"], "%d->%d@%d" % (row["cin"], row["cout"], row["res"]))
        for k in ("gflop", "deform_ms", "dense_ms", "ratio", "deform_gflops", "dense_gflops"):
            self.assertTrue(positive(row[k]), "%s = %r" % (k, row[k]))
        flop = 2e-9 * row["cin"] * row["cout"] * 9 * row["res"] ** 2
        self.assertAlmostEqual(row["gflop"], flop, delta=1e-4 * flop)
        self.assertAlmostEqual(row["ratio"], row["deform_ms"] / row["dense_ms"], delta=1e-3 * row["ratio"])
        self.assertAlmostEqual(
            row["dense_gflops"], row["gflop"] / (row["dense_ms"] * 1e-3), delta=1e-3 * row["dense_gflops"]
        )
        self.assertTrue(row["dense_impl"])
        ref = r["dense_reference"]
        self.assertTrue(ref["definition"])
        self.assertTrue(positive(ref["median_gflops"]))
        self.assertTrue(positive(ref["aggregate_gflops"]))
        self.assertAlmostEqual(ref["median_gflops"], row["dense_gflops"], delta=1e-3 * ref["median_gflops"])

    def test_quick_json_without_network(self):
        r = json.loads(run("--json", "--repeat", "1", "--quick", "--no-network").stdout)
        self.check_common(r)
        self.assertIsNone(r["network"])
        self.assertIn("--no-network", r["network_skipped"])

    def test_default_bundle_and_parts(self):
        r = json.loads(run("--json", "--repeat", "1", "--quick").stdout)
        self.check_common(r)
        net = r["network"]
        self.assertTrue(net["bundle"].endswith("default.safetensors"), net["bundle"])
        layers = net["multitask"]["layers"]
        self.assertEqual([x["batch"] for x in layers], [1])
        parts = layers[0]["parts"]
        self.assertEqual(
            [p["part"] for p in parts],
            ["input", "encoder", "decoder_offsets", "decoder_dcn", "transposed_convs", "heads",
             "reorders"],
        )
        for p in parts:
            self.assertTrue(p["ms"] >= 0 and 0 <= p["share"] <= 1, p)
        self.assertAlmostEqual(sum(p["share"] for p in parts), 1.0, delta=1e-3)
        self.assertAlmostEqual(sum(p["ms"] for p in parts), layers[0]["profiled_ms"], delta=1e-2)
        self.assertTrue(positive(layers[0]["profiled_ms"]))
        # fp32 first (also at the top), bf16 after it when the CPU runs bf16 natively.
        mt = net["multitask"]
        self.assertEqual(mt["precision"], "fp32")
        names = [p["precision"] for p in mt["precisions"]]
        self.assertIn(names, (["fp32"], ["fp32", "bf16"]))
        self.assertEqual(mt["precisions"][0]["batches"], mt["batches"])
        for p in mt["precisions"]:
            self.assertTrue(positive(p["batches"][0]["ms"]))
            self.assertTrue(positive(p["dense_reference_gflops"]))
            # The reference convs run in the precision they stand for.
            self.assertEqual(p["dense_reference_src_type"],
                             {"fp32": "f32", "bf16": "bf16", "int8": "u8"}[p["precision"]])
            self.assertEqual(len(p["layers"][0]["parts"]), 7)
        text = run("--repeat", "1", "--quick").stdout
        for name in names:
            self.assertRegex(text, r"in %s: [0-9.]+ GFLOP/s, so the network at that rate would take "
                             r"[0-9.]+ ms per tile" % name)

    def test_precision_option(self):
        r = json.loads(run("--json", "--repeat", "1", "--quick", "--precision", "fp32").stdout)
        self.assertEqual([p["precision"] for p in r["network"]["multitask"]["precisions"]], ["fp32"])
        p = run("--precision", "int4", check_rc=2)
        self.assertIn("int4", p.stderr)

    def test_threads_and_text(self):
        r = json.loads(run("--json", "--repeat", "1", "--quick", "--threads", "1", "--no-network").stdout)
        self.check_common(r, threads=1)
        text = run("--repeat", "1", "--quick", "--no-network").stdout
        self.assertIn("networks: skipped", text)
        self.assertIn("ratio", text)

    def test_usage_errors(self):
        for bad in (["--repeat", "0"], ["--threads", "x"], ["--bogus"], ["extra"],
                    ["--no-network", "--model", "b"]):
            p = run(*bad, check_rc=2)
            self.assertIn("gastroscreen bench:", p.stderr)
        p = run("--help")
        self.assertIn("--model", p.stdout)

    def test_missing_bundle(self):
        p = run("--json", "--repeat", "1", "--quick", "--model", "/nonexistent/b.safetensors", check_rc=1)
        self.assertIn("/nonexistent/b.safetensors", p.stderr)

    def test_with_seeded_bundle(self):
        with tempfile.TemporaryDirectory() as tmp:
            full = os.path.join(tmp, "full.safetensors")
            make_bundle(full, "multitask,foreground,blur,screener")
            r = json.loads(run("--json", "--repeat", "1", "--quick", "--model", full).stdout)
            self.check_common(r)
            net = r["network"]
            self.assertEqual(net["bundle"], full)
            mt = net["multitask"]
            self.assertEqual(mt["tile"], 512)
            # Reference section 6: 28.56 G multiply-adds per 512x512 tile, 2 FLOPs each.
            self.assertAlmostEqual(mt["gflop_per_tile"], 2 * 28.56, delta=0.001 * 2 * 28.56)
            self.assertEqual([b["batch"] for b in mt["batches"]], [1])
            b = mt["batches"][0]
            self.assertTrue(positive(mt["interleaved_dense_reference_gflops"]))
            for k in ("ms", "tiles_per_s", "gflops", "fraction_of_dense_reference",
                      "fraction_of_interleaved_dense_reference"):
                self.assertTrue(positive(b[k]), "%s = %r" % (k, b[k]))
            self.assertAlmostEqual(b["gflops"], mt["gflop_per_tile"] * b["tiles_per_s"], delta=1e-3 * b["gflops"])
            self.assertAlmostEqual(
                b["fraction_of_interleaved_dense_reference"],
                b["gflops"] / mt["interleaved_dense_reference_gflops"],
                delta=1e-3 * b["fraction_of_interleaved_dense_reference"],
            )
            # Each precision also against dense convs in that precision (fp32's is the
            # interleaved reference itself), and the network's time at that rate.
            for p in mt["precisions"]:
                ref = p["dense_reference_gflops"]
                self.assertTrue(positive(ref), p)
                if p["precision"] == "fp32":
                    self.assertEqual(ref, mt["interleaved_dense_reference_gflops"])
                # JSON reals carry 6 significant digits: compare relatively.
                self.assertAlmostEqual(p["ms_per_tile_at_dense_reference"],
                                       mt["gflop_per_tile"] / ref * 1e3,
                                       delta=1e-4 * mt["gflop_per_tile"] / ref * 1e3)
                for b in p["batches"]:
                    self.assertAlmostEqual(b["fraction_of_same_precision_dense_reference"],
                                           b["gflops"] / ref, delta=1e-4 * b["gflops"] / ref)
            self.assertEqual([s["name"] for s in net["small"]], ["foreground", "blur", "screener"])
            for s in net["small"]:
                self.assertTrue(positive(s["ms"]))

            small = os.path.join(tmp, "small.safetensors")
            make_bundle(small, "foreground,blur,screener")
            r = json.loads(run("--json", "--repeat", "1", "--quick", "--model", small).stdout)
            self.assertIsNone(r["network"]["multitask"])
            self.assertEqual(len(r["network"]["small"]), 3)
            text = run("--repeat", "1", "--quick", "--model", small).stdout
            self.assertIn("multi-task: absent from the bundle", text)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--gastroscreen", required=True)
    ARGS, rest = ap.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
