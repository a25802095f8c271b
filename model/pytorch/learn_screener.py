"""train.py screener: the slide-level screener, multi-instance on top-k feature matrices.

    /usr/bin/python3 model/pytorch/train.py screener --features DIR/features.csv --out CKPT
        [--epochs 20] [--batch 32] [--lr 1e-3] [--patience 3] [--val-fraction 0.3]
        [--repeats 1] [--seed 1] [--threads 1] [--resume]

Data: the folder `gastroscreen features` writes. DIR/features.csv has the columns features,
label, patient, slide, k; features is a path relative to DIR of a little-endian float32
.npy of shape [k, 512] (the GAP(L5) rows of the slide's top-k patches in descending patch
score, 1 <= k <= 64), label is positive or negative. Each matrix is padded to 64 rows by
repeating its rows in order (row i = row i mod k), as the C screener does (reference
section 7.3: duplicates do not change the max; zero rows would inject ReLU(bias)).

Recipe (the defaults): Adam, lr 1e-3, halved after --patience 3 epochs without a lower
validation loss; 20 epochs; batch 32; BCE(slide logit, slide label). Patients are split
as in train.py multitask (--val-fraction held out, seeded by (--seed, repeat); --repeats
R for repeated random sub-sampling, metrics as mean and sd). Validation metrics per epoch:
the loss and the slide AUC ("epoch 0" is the untrained network).

Output: CKPT/checkpoint.pt ({"screener": state_dict}, split 1's lowest-validation-loss
epoch; other splits in CKPT/repeat<r>/), CKPT/training.json (recipe, command, seed, the
sha256 of features.csv and one sha256 over the .npy files' sha256s in row order, splits,
history, validation metrics) and CKPT/state.pt for --resume (as train.py multitask: an
interrupted run continues from its last saved epoch). With --threads 1 a seeded run is
reproducible bit for bit, interrupted or not.
"""

import argparse
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import learn_common as lc  # noqa: E402
import networks  # noqa: E402
import npy  # noqa: E402

COLUMNS = ("features", "label", "patient", "slide", "k")
TOPK = networks.SCREENER_TOPK
FEATURE_LEN = 512


def pad_rows(f):
    """Returns f [k,512] padded to [64,512] by repeating its rows in order."""
    k = f.shape[0]
    return f[torch.arange(TOPK) % k]


def read_features(path):
    """Returns ([(matrix [64,512], label, patient, slide)], sha256 over every .npy)."""
    base = os.path.dirname(os.path.abspath(path))
    items = []
    h = hashlib.sha256()
    for i, row in enumerate(lc.read_csv(path, COLUMNS)):
        where = "%s row %d" % (path, i + 2)
        fpath = os.path.join(base, row["features"])
        try:
            f = npy.read_npy(fpath)
        except (OSError, ValueError) as e:
            raise ValueError("%s: %s" % (where, e)) from None
        try:
            k = int(row["k"])
        except ValueError:
            raise ValueError("%s: k %r is not an integer" % (where, row["k"])) from None
        if f.dtype != torch.float32 or f.dim() != 2 or f.shape[1] != FEATURE_LEN:
            raise ValueError("%s: %s is %s %s, expected float32 [k, %d]"
                             % (where, row["features"], str(f.dtype).replace("torch.", ""),
                                list(f.shape), FEATURE_LEN))
        if not 1 <= k <= TOPK or f.shape[0] != k:
            raise ValueError("%s: k %d, %s has %d rows (k must be 1..%d and match)"
                             % (where, k, row["features"], f.shape[0], TOPK))
        if not bool(torch.isfinite(f).all()):
            raise ValueError("%s: %s contains NaN or Inf" % (where, row["features"]))
        h.update(lc.sha256_file(fpath).encode())
        items.append((pad_rows(f), lc.parse_label(row["label"], where), row["patient"],
                      row["slide"]))
    return items, h.hexdigest()


def evaluate(net, items, batch):
    net.eval()
    losses, scores = [], []
    with torch.no_grad():
        for i in range(0, len(items), batch):
            x = torch.stack([it[0] for it in items[i:i + batch]])
            y = torch.tensor([it[1] for it in items[i:i + batch]])
            logit = net(x)["logit"][:, 0]
            losses += F.binary_cross_entropy_with_logits(logit, y, reduction="none").tolist()
            scores += torch.sigmoid(logit).tolist()
    net.train()
    return {"loss": sum(losses) / len(losses),
            "auc": lc.roc_auc(scores, [it[1] for it in items])}


def train_epoch(net, opt, items, batch, gen):
    order = torch.randperm(len(items), generator=gen).tolist()
    total = 0.0
    for i in range(0, len(order), batch):
        chosen = [items[j] for j in order[i:i + batch]]
        x = torch.stack([it[0] for it in chosen])
        y = torch.tensor([it[1] for it in chosen])
        loss = F.binary_cross_entropy_with_logits(net(x)["logit"][:, 0], y, reduction="none")
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
        total += float(loss.sum())
    return total / len(items)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="train.py screener",
                                description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--features", required=True, help="DIR/features.csv")
    p.add_argument("--out", required=True, help="checkpoint folder")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--val-fraction", type=float, default=0.3)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch < 1 or args.repeats < 1:
        p.error("--epochs, --batch and --repeats must be at least 1")
    if not 0.0 < args.val_fraction < 1.0:
        p.error("--val-fraction must be in (0, 1)")
    return args


def recipe(args):
    return {"network": "screener", "seed": args.seed, "optimizer": "Adam", "lr": args.lr,
            "lr_schedule": "halve after %d epochs without validation-loss improvement"
            % args.patience, "epochs": args.epochs, "batch": args.batch,
            "loss": "BCE(slide logit, slide label)",
            "input": "top-k rows padded to %d by repeating rows" % TOPK,
            "val_fraction": args.val_fraction, "repeats": args.repeats}


def main(argv):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        items, npy_digest = read_features(args.features)
        digest = lc.sha256_file(args.features)
        run = lc.Run(args.out, args.resume)
    except (OSError, ValueError) as e:
        print("train.py screener: error: %s" % e, file=sys.stderr)
        return 1
    patients = [it[2] for it in items]
    st = run.state
    if st is not None and (st["manifest_sha256"] != digest
                           or not lc.same_recipe(st["recipe"], recipe(args))):
        print("train.py screener: error: --resume with different features or recipe than %s"
              % run.path, file=sys.stderr)
        return 1
    summary, n = lc.train_splits(
        args, argv, run, "screener", digest, recipe(args), items, patients, "slides",
        build=lambda: networks.build("screener").train(),
        train_epoch=lambda net, opt, tr, gen: train_epoch(net, opt, tr, args.batch, gen),
        evaluate=lambda net, va: evaluate(net, va, args.batch), metrics=("auc",),
        data={"features": os.path.basename(args.features), "features_sha256": digest,
              "npy_sha256": npy_digest, "slides": len(items), "patients": len(set(patients))})
    print("validation over %d split(s): loss %s +- %s, slide AUC %s +- %s"
          % (n, lc.fmt(summary["loss"]["mean"]), lc.fmt(summary["loss"]["sd"]),
             lc.fmt(summary["auc"]["mean"]), lc.fmt(summary["auc"]["sd"])))
    print("wrote %s and %s" % (os.path.join(args.out, "checkpoint.pt"),
                               os.path.join(args.out, "training.json")))
    return 0
