"""train.py multitask: the paper's recipe for the multi-task network (Yu et al. 2019).

    /usr/bin/python3 model/pytorch/train.py multitask --manifest DIR/manifest.csv --out CKPT
        [--epochs 100] [--batch 16] [--lr 1e-3] [--patience 3] [--lambda 0.01]
        [--val-fraction 0.3] [--repeats 1] [--seed 1] [--crop N] [--threads 1]
        [--activation relu|leaky:S] [--no-augment] [--resume]

Data: the folder `gastroscreen dataset` writes. DIR/manifest.csv has the columns patch,
mask, slide, patient, x, y, x0, y0, w0, h0, label, tissue_fraction, lesion_fraction; patch
and mask are paths relative to DIR (512x512 RGB PNG, 0/255 grey PNG); label is positive or
negative. Patients, not patches, are split: --val-fraction of them (rounded, at least one)
are held out, drawn with a generator seeded by (--seed, repeat). --repeats 4 is the
paper's repeated random sub-sampling: 4 independent splits, each trained from scratch, the
validation metrics reported per split and as mean and sd.

Recipe (the defaults): Adam, lr 1e-3, halved after --patience 3 epochs without a lower
validation loss; 100 epochs; batch 16; loss = lambda * BCE(cls logit, patch label) +
BCE(seg logits, mask) with lambda 0.01. The seg output is at 1/4 resolution, so the mask
is DOWNSAMPLED by area averaging (4x4 mean) to the seg map size and used as a soft target
(a 4x4 block half lesion has target 0.5); the logits are not upsampled. Augmentation of
the training views (image and mask together): random crop-and-resize (area 64%..100% of
the output view, aspect ratio 3/4..4/3, resized bilinearly to the view size), horizontal
and vertical flips, a 90-degree rotation, a contrast change (x0.8..1.2 about the view's
mean) and Gaussian noise (sd 0..0.03 of the pixel range), then the bundle's normalisation
(px/255 - (0.485,0.456,0.406)) / (0.229,0.224,0.225). The view is the whole 512 patch, or
with --crop N (a multiple of 32) an N x N window; validation uses the centre N x N window
without augmentation.

Validation metrics per epoch: the loss above, the patch AUC (sigmoid of the cls logit
against the label) and the pixel Dice (seg sigmoid >= 0.5 against the area-averaged mask
>= 0.5, pooled over all validation pixels; n/a when both are empty). A progress line per
epoch prints them with the training loss and the learning rate; "epoch 0" is the
untrained network, the baseline a falling validation loss is measured from.

Output: CKPT/checkpoint.pt in export.py's format ({"multitask": state_dict}) holding the
weights of the epoch with the lowest validation loss of the first split; with --repeats
R > 1 the other splits' best weights go to CKPT/repeat<r>/checkpoint.pt. CKPT/training.json
holds the recipe, command, seed, the manifest's sha256, each split's patients, epochs run,
the per-epoch history and the validation metrics (per split, and mean/sd over splits).
CKPT/state.pt is rewritten after every epoch; --resume continues an interrupted run from
its last saved epoch (same manifest, seed and recipe; --epochs may be raised; a finished run
is not extended). With --threads 1 (the default) a seeded run is reproducible bit for bit,
interrupted or not.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision.io  # noqa: E402

import learn_common as lc  # noqa: E402
import networks  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
COLUMNS = ("patch", "mask", "slide", "patient", "label")
SEG_STRIDE = 4
PATCH_SIZE = 512


def read_manifest(path):
    """Returns [(patch_path, mask_path, label, patient)] from DIR/manifest.csv."""
    base = os.path.dirname(os.path.abspath(path))
    items = []
    for i, row in enumerate(lc.read_csv(path, COLUMNS)):
        where = "%s row %d" % (path, i + 2)
        items.append((os.path.join(base, row["patch"]), os.path.join(base, row["mask"]),
                      lc.parse_label(row["label"], where), row["patient"]))
    return items


def load_pair(item):
    """Returns (image float [3,H,W] in 0..1, mask float [1,H,W] in 0..1)."""
    img = torchvision.io.read_image(item[0], torchvision.io.ImageReadMode.RGB).float() / 255.0
    mask = torchvision.io.read_image(item[1], torchvision.io.ImageReadMode.GRAY).float() / 255.0
    if img.shape[1:] != mask.shape[1:]:
        raise ValueError("%s: mask %s is %s, patch is %s" % (item[0], item[1],
                                                           list(mask.shape[1:]),
                                                           list(img.shape[1:])))
    return img, mask


def _u(gen, lo, hi):
    return lo + (hi - lo) * float(torch.rand(1, generator=gen))


def augment(img, mask, size, gen):
    """Returns a random training view (image, mask) of size x size (module docstring)."""
    h, w = img.shape[1:]
    area = _u(gen, 0.64, 1.0) * size * size
    ratio = float(torch.exp(torch.empty(1).uniform_(-0.2877, 0.2877, generator=gen)))
    cw = max(8, min(w, int(round((area * ratio) ** 0.5))))
    ch = max(8, min(h, int(round((area / ratio) ** 0.5))))
    y0 = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
    x0 = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
    both = torch.cat([img, mask], 0)[None, :, y0:y0 + ch, x0:x0 + cw]
    both = F.interpolate(both, size=(size, size), mode="bilinear", align_corners=False)[0]
    if float(torch.rand(1, generator=gen)) < 0.5:
        both = both.flip(2)
    if float(torch.rand(1, generator=gen)) < 0.5:
        both = both.flip(1)
    both = torch.rot90(both, int(torch.randint(0, 4, (1,), generator=gen)), dims=(1, 2))
    img, mask = both[:3], both[3:].clamp(0, 1)
    c = _u(gen, 0.8, 1.2)
    m = img.mean()
    img = (img - m) * c + m
    img = img + _u(gen, 0.0, 0.03) * torch.randn(img.shape, generator=gen)
    return img.clamp(0, 1), mask


def centre(img, mask, size):
    h, w = img.shape[1:]
    y0, x0 = (h - size) // 2, (w - size) // 2
    return img[:, y0:y0 + size, x0:x0 + size], mask[:, y0:y0 + size, x0:x0 + size]


def normalise(img):
    return (img - MEAN) / STD


def batch_loss(net, x, labels, masks, lam):
    """Returns (per-sample loss [N], outputs): lam * BCE(cls) + mean-over-pixels BCE(seg)."""
    out = net(x)
    target = F.avg_pool2d(masks, SEG_STRIDE)  # area average to the seg map size
    cls = F.binary_cross_entropy_with_logits(out["logit"][:, 0], labels, reduction="none")
    seg = F.binary_cross_entropy_with_logits(out["seg"], target, reduction="none")
    return lam * cls + seg.mean(dim=(1, 2, 3)), out, target


def evaluate(net, items, size, lam, batch):
    """Returns {"loss", "auc", "dice"} on the centre views of ``items`` (eval mode)."""
    net.eval()
    losses, scores, labels = [], [], []
    inter = psum = tsum = 0.0
    with torch.no_grad():
        for i in range(0, len(items), batch):
            views = [centre(*load_pair(it), size) for it in items[i:i + batch]]
            x = torch.stack([normalise(v[0]) for v in views])
            m = torch.stack([v[1] for v in views])
            y = torch.tensor([it[2] for it in items[i:i + batch]])
            loss, out, target = batch_loss(net, x, y, m, lam)
            losses += loss.tolist()
            scores += torch.sigmoid(out["logit"][:, 0]).tolist()
            labels += y.tolist()
            pred = torch.sigmoid(out["seg"]) >= 0.5
            truth = target >= 0.5
            inter += float((pred & truth).sum())
            psum += float(pred.sum())
            tsum += float(truth.sum())
    net.train()
    dice = 2.0 * inter / (psum + tsum) if psum + tsum > 0 else None
    return {"loss": sum(losses) / len(losses), "auc": lc.roc_auc(scores, labels), "dice": dice}


def train_epoch(net, opt, items, size, lam, batch, gen, augmenting):
    order = torch.randperm(len(items), generator=gen).tolist()
    total, n = 0.0, 0
    for i in range(0, len(order), batch):
        chosen = [items[j] for j in order[i:i + batch]]
        views = []
        for it in chosen:
            img, mask = load_pair(it)
            views.append(augment(img, mask, size, gen) if augmenting else centre(img, mask, size))
        x = torch.stack([normalise(v[0]) for v in views])
        m = torch.stack([v[1] for v in views])
        y = torch.tensor([it[2] for it in chosen])
        loss, _, _ = batch_loss(net, x, y, m, lam)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
        total += float(loss.sum())
        n += len(chosen)
    return total / n


def parse_args(argv):
    p = argparse.ArgumentParser(prog="train.py multitask",
                                description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--manifest", required=True, help="DIR/manifest.csv of gastroscreen dataset")
    p.add_argument("--out", required=True, help="checkpoint folder")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=3,
                   help="epochs without validation-loss improvement before lr is halved")
    p.add_argument("--lambda", dest="lam", type=float, default=0.01,
                   help="weight of the classification BCE")
    p.add_argument("--val-fraction", type=float, default=0.3)
    p.add_argument("--repeats", type=int, default=1, help="random sub-sampling splits (paper: 4)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--crop", type=int, default=0, help="train on N x N views (multiple of 32)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--activation", default="relu")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    args = p.parse_args(argv)
    size = args.crop or PATCH_SIZE
    if size % 32 or size < 32 or size > PATCH_SIZE:
        p.error("--crop %d: must be a multiple of 32 in 32..%d" % (args.crop, PATCH_SIZE))
    if args.epochs < 1 or args.batch < 1 or args.repeats < 1:
        p.error("--epochs, --batch and --repeats must be at least 1")
    if not 0.0 < args.val_fraction < 1.0:
        p.error("--val-fraction must be in (0, 1)")
    networks.parse_activation(args.activation)
    args.size = size
    return args


def recipe(args):
    return {"network": "multitask", "seed": args.seed, "optimizer": "Adam", "lr": args.lr,
            "lr_schedule": "halve after %d epochs without validation-loss improvement"
            % args.patience, "epochs": args.epochs, "batch": args.batch,
            "loss": "%g * BCE(cls logit, patch label) + BCE(seg logits, 4x4 area-averaged mask)"
            % args.lam, "augment": not args.no_augment, "view": args.size,
            "val_fraction": args.val_fraction, "repeats": args.repeats,
            "activation": args.activation, "normalisation": "(px/255 - 0.485,0.456,0.406)"
            " / (0.229,0.224,0.225)"}


def main(argv):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        items = read_manifest(args.manifest)
        digest = lc.sha256_file(args.manifest)
        run = lc.Run(args.out, args.resume)
    except (OSError, ValueError) as e:
        print("train.py multitask: error: %s" % e, file=sys.stderr)
        return 1
    patients = [it[3] for it in items]
    st = run.state
    if st is not None and (st["manifest_sha256"] != digest
                           or not lc.same_recipe(st["recipe"], recipe(args))):
        print("train.py multitask: error: --resume with a different manifest or recipe than "
              "%s" % run.path, file=sys.stderr)
        return 1
    summary, n = lc.train_splits(
        args, argv, run, "multitask", digest, recipe(args), items, patients, "patches",
        build=lambda: networks.build("multitask", args.activation).train(),
        train_epoch=lambda net, opt, tr, gen: train_epoch(
            net, opt, tr, args.size, args.lam, args.batch, gen, not args.no_augment),
        evaluate=lambda net, va: evaluate(net, va, args.size, args.lam, args.batch),
        metrics=("auc", "dice"), baseline_first=True,
        data={"manifest": os.path.basename(args.manifest), "manifest_sha256": digest,
              "patches": len(items), "patients": len(set(patients))})
    print("validation over %d split(s): loss %s +- %s, patch AUC %s +- %s, pixel Dice %s +- %s"
          % (n, lc.fmt(summary["loss"]["mean"]), lc.fmt(summary["loss"]["sd"]),
             lc.fmt(summary["auc"]["mean"]), lc.fmt(summary["auc"]["sd"]),
             lc.fmt(summary["dice"]["mean"]), lc.fmt(summary["dice"]["sd"])))
    print("wrote %s and %s" % (os.path.join(args.out, "checkpoint.pt"),
                               os.path.join(args.out, "training.json")))
    return 0
