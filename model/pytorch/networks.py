"""PyTorch mirror of the four gastroscreen networks.

This module is the executable form of ../../shared/reference/network-architecture.md: the
multi-task DLA-34 network (sections 2-5), the foreground network (7.1), the blur detector
(7.2) and the slide-level screener (7.3). Module names are chosen so that ``state_dict()``
keys and shapes equal the project's contract file ``network-weights-keys.tsv`` beside this
file (plus ``num_batches_tracked`` buffers, which are never exported). The C runtime loads
the same names from a bundle, so a model trained with these modules exports directly
(export.py), and the parity tests compare C outputs against ``forward`` here (run.py).

Use::

    net = build("multitask", activation="relu")   # or "foreground", "blur", "screener"
    net.load_state_dict(sd, strict=False)        # num_batches_tracked may be absent
    out = net.eval()(x)                            # dict of named outputs, see each forward

Activation (the checkpoint cannot tell ReLU from leaky ReLU, so the bundle records it):
``"relu"`` (default) or ``"leaky:<slope>"``. It applies to every activation of the
multi-task network that follows a batch norm, i.e. the sites an in-place ABN layer would
replace (reference section 8.2): the three stem convs, level0, level1, BasicBlock conv1,
BasicBlock after the residual add (bn2 itself has none), every Root, and every decoder
DeformConv (``actf``). Tree ``project`` has no activation in either case. The seg head's
ReLU (after a biased conv, no BN) and the three small networks always use plain ReLU.

Only the standard library, torch and torchvision (for ``deform_conv2d``) are used.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

NETWORK_NAMES = ("multitask", "foreground", "blur", "screener")

# Channels of DLA-34 levels 0..5 and the decoder's first/last level (stride 4 output).
DLA34_CHANNELS = (16, 32, 64, 128, 256, 512)
FIRST_LEVEL = 2
LAST_LEVEL = 5
SCREENER_TOPK = 64


def parse_activation(spec):
    """Returns (kind, slope) for an activation spec; raises ValueError on a bad spec."""
    if spec == "relu":
        return ("relu", 0.0)
    if isinstance(spec, str) and spec.startswith("leaky:"):
        try:
            slope = float(spec[len("leaky:"):])
        except ValueError:
            raise ValueError("activation %r: slope is not a number" % spec) from None
        if not math.isfinite(slope) or slope < 0.0 or slope >= 1.0:
            raise ValueError("activation %r: slope must be in [0, 1)" % spec)
        return ("leaky", slope)
    raise ValueError("activation %r: expected 'relu' or 'leaky:<slope>'" % (spec,))


def make_activation(spec):
    """Returns a new nn.Module applying the activation named by ``spec``."""
    kind, slope = parse_activation(spec)
    if kind == "relu":
        return nn.ReLU(inplace=False)
    return nn.LeakyReLU(negative_slope=slope, inplace=False)


def _conv_bn_act(cin, cout, kernel, stride, act):
    # Index layout (conv 0, bn 1, act 2) is what gives keys like base.level1.0.weight.
    return [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        make_activation(act),
    ]


# ------------------------------------------------------------------------------------------
# Encoder: DLA-34 (reference section 2)


class BasicBlock(nn.Module):
    """conv3x3-BN-act, conv3x3-BN, + residual, act. The residual comes from the parent Tree."""

    def __init__(self, cin, cout, stride, act):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act = make_activation(act)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x, residual=None):
        if residual is None:
            residual = x
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + residual)


class Root(nn.Module):
    """Concatenate children in the given order, then 1x1 conv, BN, act."""

    def __init__(self, cin, cout, act):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, stride=1, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = make_activation(act)

    def forward(self, *children):
        return self.act(self.bn(self.conv(torch.cat(children, 1))))


class Tree(nn.Module):
    """DLA hierarchical aggregation tree (reference section 2.2).

    Attribute creation order (tree1, tree2, root, project) fixes the state_dict order.
    """

    def __init__(self, levels, cin, cout, stride, act, level_root=False, root_dim=0):
        super().__init__()
        if root_dim == 0:
            root_dim = 2 * cout
        if level_root:
            root_dim += cin
        if levels == 1:
            self.tree1 = BasicBlock(cin, cout, stride, act)
            self.tree2 = BasicBlock(cout, cout, 1, act)
        else:
            self.tree1 = Tree(levels - 1, cin, cout, stride, act, root_dim=0)
            self.tree2 = Tree(levels - 1, cout, cout, 1, act, root_dim=root_dim + cout)
        if levels == 1:
            self.root = Root(root_dim, cout, act)
        self.levels = levels
        self.level_root = level_root
        self.downsample = nn.MaxPool2d(stride, stride=stride) if stride > 1 else None
        self.project = None
        if cin != cout:
            self.project = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=1, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x, residual=None, children=None):
        children = [] if children is None else children
        bottom = self.downsample(x) if self.downsample is not None else x
        if self.level_root:
            children.append(bottom)
        if self.levels == 1:
            residual = self.project(bottom) if self.project is not None else bottom
            x1 = self.tree1(x, residual)
            x2 = self.tree2(x1)
            return self.root(x2, x1, *children)
        # levels > 1: the original also computes project(bottom) here and hands it to
        # tree1, which is a Tree and recomputes its own residual; the result is discarded
        # (reference 2.2 "quirk"), so it is skipped. Its weights still exist.
        x1 = self.tree1(x)
        children.append(x1)
        return self.tree2(x1, children=children)


class DLA34(nn.Module):
    """DLA-34 encoder with the three-3x3 stride-1 stem. forward returns [L0..L5]."""

    def __init__(self, act):
        super().__init__()
        c = DLA34_CHANNELS
        self.base_layer = nn.Sequential(
            *_conv_bn_act(3, c[0], 3, 1, act),
            *_conv_bn_act(c[0], c[0], 3, 1, act),
            *_conv_bn_act(c[0], c[0], 3, 1, act),
        )
        self.level0 = nn.Sequential(*_conv_bn_act(c[0], c[0], 3, 1, act))
        self.level1 = nn.Sequential(*_conv_bn_act(c[0], c[1], 3, 2, act))
        self.level2 = Tree(1, c[1], c[2], 2, act, level_root=False)
        self.level3 = Tree(2, c[2], c[3], 2, act, level_root=True)
        self.level4 = Tree(2, c[3], c[4], 2, act, level_root=True)
        self.level5 = Tree(1, c[4], c[5], 2, act, level_root=True)

    def forward(self, x):
        x = self.base_layer(x)
        outs = []
        for i in range(6):
            x = getattr(self, "level%d" % i)(x)
            outs.append(x)
        return outs


# ------------------------------------------------------------------------------------------
# Decoder: CenterNet DLAUp / IDAUp with DCNv2-style deformable convs (reference section 3-4)


class ModulatedDeformConv3x3(nn.Module):
    """DCNv2 3x3 layer (stride 1, pad 1, one offset group) on torchvision.ops.deform_conv2d.

    conv_offset_mask is an ordinary 3x3 conv giving 27 channels: 0..17 are the offsets,
    interleaved (dy, dx) per tap k = 3*i + j, passed to torchvision unchanged; 18..26 go
    through a sigmoid and become the mask (reference 4.1-4.2).
    """

    def __init__(self, cin, cout):
        super().__init__()
        # Parameters are registered before the submodule: state_dict order weight, bias,
        # conv_offset_mask.* as in DCNv2.
        self.weight = nn.Parameter(torch.empty(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.empty(cout))
        self.conv_offset_mask = nn.Conv2d(cin, 27, 3, stride=1, padding=1, bias=True)
        bound = 1.0 / math.sqrt(cin * 9)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.bias)
        # Zero offsets and mask logits (mask 0.5) at start, as DCNv2 initialises them.
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def offset_and_mask(self, x):
        """Returns (offset [N,18,H,W], mask [N,9,H,W] after sigmoid) for input x."""
        om = self.conv_offset_mask(x)
        return om[:, :18], torch.sigmoid(om[:, 18:27])

    def forward(self, x):
        offset, mask = self.offset_and_mask(x)
        return deform_conv2d(
            x, offset, self.weight, self.bias, stride=1, padding=1, dilation=1, mask=mask
        )


class DeformConv(nn.Module):
    """The decoder's conv unit: DCN then BN then activation (keys actf.0.*, conv.*)."""

    def __init__(self, cin, cout, act):
        super().__init__()
        self.actf = nn.Sequential(nn.BatchNorm2d(cout), make_activation(act))
        self.conv = ModulatedDeformConv3x3(cin, cout)

    def forward(self, x):
        return self.actf(self.conv(x))


def bilinear_up_kernel(f):
    """Returns the [2f, 2f] bilinear kernel CenterNet initialises its depthwise ups with."""
    k = 2 * f
    c0 = (2 * f - 1 - (f % 2)) / (2.0 * f)
    axis = torch.tensor([1.0 - abs(i / f - c0) for i in range(k)], dtype=torch.float32)
    return axis[:, None] * axis[None, :]


def make_up(channels, f):
    """Depthwise ConvTranspose2d(kernel 2f, stride f, pad f/2), bilinear-initialised."""
    up = nn.ConvTranspose2d(
        channels,
        channels,
        2 * f,
        stride=f,
        padding=f // 2,
        output_padding=0,
        groups=channels,
        bias=False,
    )
    with torch.no_grad():
        up.weight.copy_(bilinear_up_kernel(f).expand(channels, 1, 2 * f, 2 * f))
    return up


class IDAUp(nn.Module):
    """Iterative deep aggregation: proj_i, up_i, node_i for i = 1..n-1 (sum merge)."""

    def __init__(self, out_ch, in_channels, up_factors, act):
        super().__init__()
        for i in range(1, len(in_channels)):
            # setattr order proj, up, node is the state_dict order of the key list.
            setattr(self, "proj_%d" % i, DeformConv(in_channels[i], out_ch, act))
            setattr(self, "up_%d" % i, make_up(out_ch, int(up_factors[i])))
            setattr(self, "node_%d" % i, DeformConv(out_ch, out_ch, act))

    def forward(self, layers, startp, endp):
        """Mutates ``layers[startp+1:endp]`` in place, as CenterNet does."""
        for i in range(startp + 1, endp):
            j = i - startp
            layers[i] = getattr(self, "up_%d" % j)(getattr(self, "proj_%d" % j)(layers[i]))
            layers[i] = getattr(self, "node_%d" % j)(layers[i] + layers[i - 1])


class DLAUp(nn.Module):
    """CenterNet DLAUp over channels [64,128,256,512] at scales [1,2,4,8] (reference 3.2)."""

    def __init__(self, channels, scales, act):
        super().__init__()
        channels = list(channels)
        in_channels = list(channels)
        scales = list(scales)
        for i in range(len(channels) - 1):
            j = len(channels) - i - 2
            ups = [s // scales[j] for s in scales[j:]]
            setattr(self, "ida_%d" % i, IDAUp(channels[j], in_channels[j:], ups, act))
            for t in range(j + 1, len(channels)):
                scales[t] = scales[j]
                in_channels[t] = channels[j]
        self.n = len(channels)

    def forward(self, layers):
        layers = list(layers)
        out = [layers[-1]]
        for i in range(len(layers) - 1):
            getattr(self, "ida_%d" % i)(layers, len(layers) - i - 2, len(layers))
            out.insert(0, layers[-1])
        return out


class ClsBranch(nn.Module):
    """Global average pool of L5 -> 512-d feature -> Linear(512, 1) logit (reference 5.2)."""

    def __init__(self, cin):
        super().__init__()
        self.fc = nn.Linear(cin, 1)

    def forward(self, l5):
        feature = l5.mean(dim=(2, 3))
        return self.fc(feature), feature


class MultiTask(nn.Module):
    """The multi-task network (reference section 5).

    forward(x [N,3,H,W], H and W multiples of 32) returns a dict:
      "logit"   [N,1]            classification logit (patch score = sigmoid)
      "feature" [N,512]          GAP of the encoder output L5, the screener's input row
      "seg"     [N,1,H/4,W/4]    segmentation logit map (heatmap = sigmoid)
    """

    def __init__(self, activation="relu"):
        super().__init__()
        parse_activation(activation)
        self.activation = activation
        c = DLA34_CHANNELS
        self.base = DLA34(activation)
        scales = [2**i for i in range(len(c) - FIRST_LEVEL)]
        self.dla_up = DLAUp(c[FIRST_LEVEL:], scales, activation)
        self.ida_up = IDAUp(
            c[FIRST_LEVEL],
            list(c[FIRST_LEVEL:LAST_LEVEL]),
            [2**i for i in range(LAST_LEVEL - FIRST_LEVEL)],
            activation,
        )
        self.seg = nn.Sequential(
            nn.Conv2d(c[FIRST_LEVEL], 256, 3, padding=1, bias=True),
            nn.ReLU(inplace=False),
            nn.Conv2d(256, 1, 1, bias=True),
        )
        self.cls = ClsBranch(c[-1])

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % 32 or x.shape[3] % 32:
            raise ValueError(
                "multitask input must be [N,3,H,W] with H, W multiples of 32, got %s"
                % (list(x.shape),)
            )
        levels = self.base(x)
        l5 = levels[-1]
        up = self.dla_up(levels[FIRST_LEVEL:])
        y = [up[i].clone() for i in range(LAST_LEVEL - FIRST_LEVEL)]
        self.ida_up(y, 0, len(y))
        logit, feature = self.cls(l5)
        return {"logit": logit, "feature": feature, "seg": self.seg(y[-1])}


# ------------------------------------------------------------------------------------------
# Small networks (reference section 7)


class Foreground(nn.Module):
    """Tissue network: 3 strided CBR + 1x1 logit + bilinear x8 (reference 7.1).

    forward(x [N,3,512,512]) returns a dict:
      "logit"        [N,1,H,W]      upsampled logit (align_corners=False); mask = sigmoid >= t
      "logit_lowres" [N,1,H/8,W/8]  the 1x1 conv output before upsampling
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(64)
        self.logit = nn.Conv2d(64, 1, 1, bias=True)

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % 8 or x.shape[3] % 8:
            raise ValueError(
                "foreground input must be [N,3,H,W] with H, W multiples of 8, got %s"
                % (list(x.shape),)
            )
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        low = self.logit(x)
        up = F.interpolate(low, scale_factor=8, mode="bilinear", align_corners=False)
        return {"logit": up, "logit_lowres": low}


# The blur network's "tissue" pool (bundle metadata pool.blur, model/FORMAT.md; the C forward
# gs_net_run_blur applies the same rule): the global average after conv2 runs only over the
# feature positions whose 4x4 input block (the conv stride) holds tissue, so a crop that is mostly
# glass is judged by its tissue and not diluted by the glass. A pixel is tissue when its grey
# (19595 R + 38470 G + 7471 B + 32768) >> 16, on the 0..255 pixel, is below BLUR_GLASS_GREY (the
# classical focus measure's glass level); a block holds tissue when at least BLUR_BLOCK_TISSUE of
# its 16 pixels are tissue. When fewer than 1/BLUR_MIN_SHARE_DIV of the positions hold tissue the
# plain mean is used (almost no tissue: nothing better to weigh).
BLUR_POOLS = ("mean", "tissue")
BLUR_GLASS_GREY = 215
BLUR_BLOCK_TISSUE = 4
BLUR_MIN_SHARE_DIV = 32
BLUR_STRIDE = 4


def blur_tissue_mask(px, fh, fw):
    """Returns the [N,1,fh,fw] float mask (1 = tissue block) of the 0..255 RGB pixels ``px``
    [N,3,H,W] (any float dtype, integral values): see BLUR_GLASS_GREY. Blocks past the image edge
    (H or W not a multiple of 4) count only their pixels inside it."""
    p = px.round().to(torch.int64)
    g = (19595 * p[:, 0] + 38470 * p[:, 1] + 7471 * p[:, 2] + 32768) >> 16
    t = (g < BLUR_GLASS_GREY).to(torch.float32)[:, None]
    ph, pw = fh * BLUR_STRIDE - t.shape[2], fw * BLUR_STRIDE - t.shape[3]
    t = F.pad(t, (0, pw, 0, ph))
    cnt = F.avg_pool2d(t, BLUR_STRIDE) * (BLUR_STRIDE * BLUR_STRIDE)
    m = (cnt >= BLUR_BLOCK_TISSUE - 0.5).to(torch.float32)
    enough = m.sum(dim=(2, 3), keepdim=True) * BLUR_MIN_SHARE_DIV >= fh * fw
    return torch.where(enough, m, torch.ones_like(m))


class Blur(nn.Module):
    """Blur detector: 2 strided 5x5 CBR, global pool, Linear(32, 1) (reference 7.2).

    ``pool`` "mean" is the plain global average; "tissue" averages only over tissue positions
    (blur_tissue_mask; needs the input normalisation ``mean``/``std``, the bundle's input_mean
    and input_std, to recover the pixels). Same weights and keys either way.

    forward(x [N,3,256,256]) returns a dict:
      "logit" [N,1]  P(blurred) = sigmoid(logit)
    """

    def __init__(self, pool="mean", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        super().__init__()
        if pool not in BLUR_POOLS:
            raise ValueError("blur pool must be one of %s, got %r" % (", ".join(BLUR_POOLS), pool))
        self.pool = pool
        self.in_mean = tuple(float(v) for v in mean)
        self.in_std = tuple(float(v) for v in std)
        self.conv1 = nn.Conv2d(3, 16, 5, stride=2, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 5, stride=2, padding=2, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 1)

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError("blur input must be [N,3,H,W], got %s" % (list(x.shape),))
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        if self.pool == "mean":
            return {"logit": self.fc(h.mean(dim=(2, 3)))}
        mean = torch.tensor(self.in_mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.in_std, dtype=x.dtype).view(1, 3, 1, 1)
        with torch.no_grad():
            m = blur_tissue_mask((x * std + mean) * 255.0, h.shape[2], h.shape[3])
        pooled = (h * m).sum(dim=(2, 3)) / m.sum(dim=(2, 3))
        return {"logit": self.fc(pooled)}


class Screener(nn.Module):
    """Slide-level screener: shared Linear over k rows, ReLU, max over k, FC (reference 7.3).

    forward(f [N,k,512]) (the top-k patch features, any k >= 1) returns a dict:
      "logit" [N,1]  slide score = sigmoid(logit)
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(512, 512, 1, bias=True)
        self.fc = nn.Linear(512, 1)

    def forward(self, f):
        if f.dim() != 3 or f.shape[2] != 512 or f.shape[1] < 1:
            raise ValueError("screener input must be [N,k,512], got %s" % (list(f.shape),))
        h = F.relu(self.conv(f.transpose(1, 2)))
        return {"logit": self.fc(h.amax(dim=2))}


def build(name, activation="relu"):
    """Returns a new network named ``name`` (one of NETWORK_NAMES) with default init.

    ``activation`` only affects the multitask network (see the module docstring).
    """
    if name == "multitask":
        return MultiTask(activation)
    if name == "foreground":
        return Foreground()
    if name == "blur":
        return Blur()
    if name == "screener":
        return Screener()
    raise ValueError("unknown network %r (expected one of %s)" % (name, ", ".join(NETWORK_NAMES)))


def exported_state(net):
    """Returns the net's state_dict without num_batches_tracked, in state_dict order."""
    return {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


def count_parameters(net):
    """Returns the number of trainable parameter elements (BN running stats excluded)."""
    return sum(p.numel() for p in net.parameters())
