"""What the multi-task and screener recipes share (learn_multitask.py, learn_screener.py).

The paper's protocol (Yu et al. 2019): a train/validation split by patient, repeated random
sub-sampling (several seeded splits, metrics reported as mean and sd), Adam with the learning
rate halved after 3 epochs without validation-loss improvement. This module holds those
pieces and the resumable state file, so both recipes behave the same way:

    split = patient_split(patients, fraction=0.3, seed=1, repeat=0)   # (train, val) sets
    auc = roc_auc(scores, labels)                                      # Mann-Whitney
    state = Run(out_dir, resume)                                       # state.pt load/save
    summary, n = train_splits(args, argv, run, ...)                    # the whole loop

Only the standard library, torch and networks.py are used.
"""

import csv
import hashlib
import json
import math
import os
import random
import time

import torch

import networks


def sha256_file(path):
    """Returns the hex SHA-256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_csv(path, required):
    """Returns the rows of CSV ``path`` as dicts; ValueError naming the file if a column is
    missing or the file has no rows."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError("%s: missing column(s) %s (has %s)"
                             % (path, ", ".join(missing), ", ".join(reader.fieldnames or [])))
        rows = list(reader)
    if not rows:
        raise ValueError("%s: no rows" % path)
    return rows


def parse_label(value, where):
    """Returns 1.0 for positive, 0.0 for negative; ValueError naming ``where`` otherwise."""
    v = value.strip().lower()
    if v in ("positive", "1"):
        return 1.0
    if v in ("negative", "0"):
        return 0.0
    raise ValueError("%s: label %r is neither positive nor negative" % (where, value))


def patient_split(patients, fraction, seed, repeat):
    """Returns (train, val): sorted lists of patient ids, ``round(fraction * n)`` held out
    (at least 1, at most n - 1), drawn by a generator seeded with (seed, repeat) so each
    repeat of the repeated random sub-sampling is a different, reproducible split."""
    ids = sorted(set(patients))
    if len(ids) < 2:
        raise ValueError("need at least 2 patients to split by patient, have %d" % len(ids))
    n_val = min(len(ids) - 1, max(1, int(round(fraction * len(ids)))))
    rng = random.Random("%d/%d" % (seed, repeat))
    val = sorted(rng.sample(ids, n_val))
    train = [p for p in ids if p not in set(val)]
    return train, val


def roc_auc(scores, labels):
    """Returns the ROC AUC (Mann-Whitney U with tie correction), or None when the labels
    are all one class."""
    pairs = sorted(zip(scores, labels))
    n_pos = sum(1 for _, y in pairs if y > 0.5)
    n_neg = len(pairs) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = 0.0
    i = 0
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        mid = (i + j) / 2.0 + 1.0  # average 1-based rank of the tie group
        rank_sum += mid * sum(1 for k in range(i, j + 1) if pairs[k][1] > 0.5)
        i = j + 1
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def mean_sd(values):
    """Returns {"mean", "sd", "n"} of the non-None values (sd with n - 1; 0 for one value)."""
    v = [x for x in values if x is not None]
    if not v:
        return {"mean": None, "sd": None, "n": 0}
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return {"mean": m, "sd": sd, "n": len(v)}


def fmt(x):
    return "n/a" if x is None else "%.4f" % x


def make_optimizer(params, lr, patience):
    """The paper's optimiser: Adam(lr), and a scheduler halving lr after ``patience``
    epochs without validation-loss improvement (call sched.step(val_loss))."""
    opt = torch.optim.Adam(params, lr=lr)
    # ReduceLROnPlateau cuts once the count of non-improving epochs EXCEEDS its patience, so
    # "halved after 3 epochs without improvement" (the 3rd such epoch) is patience 2.
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5,
                                                       patience=max(0, patience - 1))
    return opt, sched


def same_recipe(saved, now):
    """True when a run saved with recipe ``saved`` may be resumed with ``now``: everything
    but the number of epochs (which --resume may raise) must be equal."""
    strip = lambda r: {k: v for k, v in r.items() if k != "epochs"}  # noqa: E731
    return strip(saved) == strip(now)


class Run:
    """The resumable state of a training run in OUT/state.pt.

    ``state`` is a dict the recipe fills (model, optimizer, scheduler, RNG states, epoch,
    history, finished repeats). save() writes it atomically after every epoch, so
    ``--resume`` continues from the last finished epoch and a seeded run gives the same
    result whether or not it was interrupted.
    """

    def __init__(self, out_dir, resume):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, "state.pt")
        os.makedirs(out_dir, exist_ok=True)
        self.state = None
        if resume:
            if not os.path.exists(self.path):
                raise ValueError("--resume: %s does not exist" % self.path)
            self.state = torch.load(self.path, map_location="cpu")

    def save(self, state):
        tmp = self.path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.path)
        self.state = state


def rng_state(gen):
    return {"torch": torch.get_rng_state(), "gen": gen.get_state()}


def set_rng_state(gen, st):
    torch.set_rng_state(st["torch"])
    gen.set_state(st["gen"])


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def save_checkpoint(out_dir, net_name, state_dict):
    """Writes OUT/checkpoint.pt in export.py's format: {net_name: state_dict}."""
    path = os.path.join(out_dir, "checkpoint.pt")
    tmp = path + ".tmp"
    torch.save({net_name: {k: v.detach().clone() for k, v in state_dict.items()}}, tmp)
    os.replace(tmp, path)
    return path


def train_splits(args, argv, run, net_name, digest, recipe, items, patients, unit, build,
                 train_epoch, evaluate, metrics, data, baseline_first=False):
    """Runs the paper's protocol for one recipe: ``args.repeats`` patient splits, each
    trained from scratch for ``args.epochs`` epochs, keeping the epoch with the lowest
    validation loss; writes OUT/checkpoint.pt (split 1), OUT/repeat<r>/checkpoint.pt,
    OUT/training.json and, after every epoch, ``run``'s state.pt. Returns (summary, the
    number of splits): summary is {name: mean_sd} over the splits for "loss" and each of
    ``metrics``.

    What is the recipe's own comes in as values and callables: ``items`` with their
    ``patients`` (one id per item), ``unit`` ("slides", "patches") for the split line and
    training.json, ``build()`` -> a fresh network in train mode, ``train_epoch(net, opt,
    items, gen)`` -> mean training loss, ``evaluate(net, items)`` -> {"loss", *metrics},
    ``metrics`` (names printed as val_<name> after val_loss), ``data`` for training.json.
    ``digest`` is the data's sha256 a resume must match (the caller checks it and
    ``recipe`` against run.state before calling). ``baseline_first`` prints the untrained
    network's line before the split line (the multi-task recipe's order).
    """
    st = run.state
    done = st["done"] if st else []
    gen = torch.Generator()

    def metric_text(vm):
        return "".join(" val_%s %s" % (m, fmt(vm[m])) for m in metrics)

    for r in range(len(done), args.repeats):
        train_p, val_p = patient_split(patients, args.val_fraction, args.seed, r)
        tr = [it for it, p in zip(items, patients) if p in set(train_p)]
        va = [it for it, p in zip(items, patients) if p in set(val_p)]
        torch.manual_seed(args.seed * 1000 + r)
        gen.manual_seed(args.seed * 1000 + r)
        net = build()
        opt, sched = make_optimizer(net.parameters(), args.lr, args.patience)
        history, best, start = [], None, 0
        if st is not None and st.get("current") and st["current"]["repeat"] == r:
            cur = st["current"]
            net.load_state_dict(cur["model"])
            opt.load_state_dict(cur["opt"])
            sched.load_state_dict(cur["sched"])
            set_rng_state(gen, cur["rng"])
            history, best, start = cur["history"], cur["best"], cur["epoch"]
        split_line = ("split %d/%d: %d train %s (%d patients), %d validation %s (%d patients)"
                      % (r + 1, args.repeats, len(tr), unit, len(train_p), len(va), unit,
                         len(val_p)))
        if not baseline_first:
            print(split_line, flush=True)
        if start == 0:
            # The untrained network's validation metrics: the baseline learning is judged by.
            vm = evaluate(net, va)
            history.append({"epoch": 0, "train_loss": None, "lr": args.lr, "val": vm})
            print("split %d/%d epoch 0/%d (untrained) val_loss %.4f%s"
                  % (r + 1, args.repeats, args.epochs, vm["loss"], metric_text(vm)),
                  flush=True)
        if baseline_first:
            print(split_line, flush=True)
        for epoch in range(start, args.epochs):
            t0 = time.time()
            tl = train_epoch(net, opt, tr, gen)
            vm = evaluate(net, va)
            lr = opt.param_groups[0]["lr"]
            sched.step(vm["loss"])
            history.append({"epoch": epoch + 1, "train_loss": tl, "lr": lr, "val": vm})
            if best is None or vm["loss"] < best["val"]["loss"]:
                best = {"epoch": epoch + 1, "val": vm, "model": {
                    k: v.clone() for k, v in networks.exported_state(net).items()}}
            st = {"manifest_sha256": digest, "recipe": recipe, "done": done,
                  "current": {"repeat": r, "epoch": epoch + 1, "model": net.state_dict(),
                              "opt": opt.state_dict(), "sched": sched.state_dict(),
                              "rng": rng_state(gen), "history": history, "best": best}}
            run.save(st)
            # Printed after the save: a line seen means that epoch survives a kill.
            print("split %d/%d epoch %d/%d train_loss %.4f val_loss %.4f%s lr %g (%.1f s)"
                  % (r + 1, args.repeats, epoch + 1, args.epochs, tl, vm["loss"],
                     metric_text(vm), lr, time.time() - t0), flush=True)
        sub = args.out if r == 0 else os.path.join(args.out, "repeat%d" % r)
        os.makedirs(sub, exist_ok=True)
        save_checkpoint(sub, net_name, best["model"])
        done.append({"repeat": r, "train_patients": train_p, "val_patients": val_p,
                     "train_" + unit: len(tr), "val_" + unit: len(va),
                     "best_epoch": best["epoch"], "val": best["val"], "history": history})
        st = {"manifest_sha256": digest, "recipe": recipe, "done": done, "current": None}
        run.save(st)
    summary = {k: mean_sd([d["val"][k] for d in done]) for k in ("loss",) + tuple(metrics)}
    info = {"network": net_name, "command": "train.py %s " % net_name + " ".join(argv),
            "seed": args.seed, "recipe": recipe, "data": data,
            "splits": done, "validation": summary,
            "checkpoint": "checkpoint.pt holds split 1's lowest-validation-loss epoch"}
    write_json(os.path.join(args.out, "training.json"), info)
    return summary, len(done)
