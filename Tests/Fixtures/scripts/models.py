"""The PyTorch model definitions of the repository, in one place: the training and gradient fixture
generators, the PyTorch oracle (Tests/Oracle), the benchmark (Benchmarks/export_models.py) and the
examples' export scripts (Examples/*/export.py) all import them from here."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    """Linear layers fc1..fcN of the given sizes with a ReLU between each two: MLP(16, 32, 4) (the
    default, the fixtures' MLP), MLP(784, 512, 512, 10) (the benchmark's), MLP(64, 256, 128, 10)
    (the digits example's)."""

    def __init__(self, *sizes):
        super().__init__()
        sizes = sizes or (16, 32, 4)
        self.depth = len(sizes) - 1
        for i in range(self.depth):
            setattr(self, f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1]))

    def forward(self, x):
        for i in range(1, self.depth):
            x = F.relu(getattr(self, f"fc{i}")(x))
        return getattr(self, f"fc{self.depth}")(x)


class SmallCNN(nn.Module):
    """[N, 1, 8, 8] -> Conv(4, 3x3, pad 1) -> BatchNorm -> ReLU -> MaxPool(2) -> Dropout(p) -> flatten -> Linear(64, 4).

    p defaults to 0.0 so the Dropout node is in the graph (ratio 0, training_mode true) but
    the training trajectory is deterministic and comparable across runtimes.
    conv_bias=False drops the Conv's bias, which the BatchNorm right after it would cancel anyway.
    """

    def __init__(self, p=0.0, classes=4, conv_bias=True):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, kernel_size=3, padding=1, bias=conv_bias)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(p)
        self.fc = nn.Linear(4 * 4 * 4, classes)

    def forward(self, x):
        x = self.drop(self.pool(F.relu(self.bn(self.conv(x)))))  # [N, 4, 4, 4]
        return self.fc(torch.flatten(x, 1))


class ProposalNet(nn.Module):
    """The torch.js proposal's Net, with an optional BatchNorm after the first convolution:

        convs = Sequential(Conv2d(channels, 16, 5, stride 1, padding 2), [BatchNorm2d(16)], MaxPool2d(2), ReLU(),
                           Conv2d(16, 32, 5, stride 1, padding 2), MaxPool2d(2), ReLU(), [AdaptiveAvgPool2d(1)])
        mlp = Linear(features, classes)

    `features` is 32 with `global_pool` (the benchmark's CNN), else 32 * (side / 4)^2 (the cnn example:
    12x12 images -> 32 * 3 * 3)."""

    def __init__(self, channels=3, classes=10, features=32, batchnorm=True, global_pool=False):
        super().__init__()
        layers = [nn.Conv2d(channels, 16, 5, stride=1, padding=2)]
        if batchnorm:
            layers.append(nn.BatchNorm2d(16))
        layers += [nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(16, 32, 5, stride=1, padding=2), nn.MaxPool2d(2), nn.ReLU()]
        if global_pool:
            layers.append(nn.AdaptiveAvgPool2d(1))
        self.convs = nn.Sequential(*layers)
        self.mlp = nn.Linear(features, classes)

    def forward(self, x):
        return self.mlp(torch.flatten(self.convs(x), 1))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention written out by hand: tril mask + masked_fill(-inf) + softmax."""

    def __init__(self, d, heads, block):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.register_buffer("mask", torch.tril(torch.ones(block, block)).view(1, 1, block, block))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        hs = C // self.heads
        q = q.view(B, T, self.heads, hs).transpose(1, 2)  # [B, H, T, hs]
        k = k.view(B, T, self.heads, hs).transpose(1, 2)
        v = v.view(B, T, self.heads, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # [B, H, T, T]
        att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, d, heads, block):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, heads, block)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.gelu = nn.GELU()  # exact (erf) form
        self.out = nn.Linear(4 * d, d)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.out(self.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """Token + positional Embedding, `layers` blocks, final LayerNorm, linear head. Input int64 [B, T].

    flat_logits=True returns [B*T, vocab] so onnxruntime's CrossEntropyLoss block (which takes the
    classes from the last dim but the ONNX op from axis 1) lines up with labels of shape [B*T].
    """

    def __init__(self, vocab=32, d=32, heads=4, block=8, layers=2, flat_logits=False):
        super().__init__()
        self.vocab = vocab
        self.flat_logits = flat_logits
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(block, d)
        self.blocks = nn.ModuleList([Block(d, heads, block) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx):
        B, T = idx.shape
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)
        x = self.tok(idx) + self.pos(pos)
        for blk in self.blocks:
            x = blk(x)
        logits = self.head(self.ln_f(x))
        return logits.reshape(-1, self.vocab) if self.flat_logits else logits


class EmbeddingBag(nn.Module):
    """nn.Embedding -> mean over the sequence -> Linear: the smallest model whose gradient has GatherGrad."""

    def __init__(self, vocab=12, d=6, classes=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.fc = nn.Linear(d, classes)

    def forward(self, idx):
        return self.fc(self.emb(idx).mean(dim=1))


class SeedModel(nn.Module):
    """MyModel from onnxruntime's train-pytorch-in-js walkthrough: Linear(10, 5) -> ReLU -> Linear(5, 2)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 5)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(5, 2)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: conv3x3-BN-ReLU-conv3x3-BN plus the shortcut (a 1x1 conv + BN
    when the shape changes), then ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class TinyResNet(nn.Module):
    """A torchvision-style ResNet in miniature (torchvision is not installable beside torch 2.13+cpu here):
    stem conv3x3-BN-ReLU-MaxPool, a BasicBlock, a strided BasicBlock with a downsample shortcut,
    global average pooling, Linear. [N, 1, 8, 8] -> [N, classes]."""

    def __init__(self, classes=4, width=4):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = BasicBlock(width, width, 1)
        self.layer2 = BasicBlock(width, 2 * width, 2)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class UpsamplingCNN(nn.Module):
    """Conv(stride 2) -> ReLU -> ConvTranspose(stride 2, padding 1, output_padding 1, groups 2) -> ReLU
    -> flatten -> Linear: a decoder-style block whose training graph needs ConvTransposeGrad."""

    def __init__(self, classes=4):
        super().__init__()
        self.down = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.fc = nn.Linear(2 * 8 * 8, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.up(F.relu(self.down(x)))), 1))


class SeqClassifier(nn.Module):
    """A recurrent sequence classifier on batch-first input [B, T, I]: LSTM or GRU, then a Linear on
    the time-mean of the outputs; with `states`, also on the last layer's final hidden (and cell) state,
    so the gradient reaches the RNN through Y, Y_h and Y_c."""

    def __init__(self, kind, inputs, hidden, classes, layers=1, bidirectional=False, states=False):
        super().__init__()
        rnn = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = rnn(inputs, hidden, num_layers=layers, bidirectional=bidirectional, batch_first=True)
        self.states = states
        width = hidden * (2 if bidirectional else 1)
        if states:
            width += hidden * (2 if kind == "lstm" else 1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        y, state = self.rnn(x)
        features = [y.mean(dim=1)]
        if self.states:
            features += [s[-1] for s in (state if isinstance(state, tuple) else (state,))]
        return self.fc(torch.cat(features, dim=1))


def randomize_norm_params(model, bn_stats=True):
    """Make BatchNorm/LayerNorm affine params (and BN running stats) non-trivial so they are really tested."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
            if bn_stats and isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
