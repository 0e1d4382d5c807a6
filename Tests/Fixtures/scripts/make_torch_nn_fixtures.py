"""PyTorch references for the Swift model API (Sources/OnnxTrainNN), under Tests/Fixtures/torch-nn/<case>/.

Each case defines a model in PyTorch exactly as Tests/OnnxTrainNNTests defines it in Swift and writes
  weights.safetensors   the initial state_dict (safetensors.torch.save_file), which the Swift model loads
  data.npz              the inputs and targets (x, y), and the batch the forward output is taken on
  reference.npz         output: the model's eval-mode output on x[:batch]
                        sgd_losses / adamw_losses: the loss before each of 20 optimizer steps, batches
                        of `batch` rows cycling through x (SGD with momentum 0.9, weight decay 1e-4;
                        AdamW lr 1e-3, weight decay 1e-2), each run from weights.safetensors
                        train_output: the eval-mode output on x[:batch] after the 20 SGD steps
                        after_sgd.<name>: every buffer (BatchNorm running statistics) after those steps
                        net only: nesterov_losses (SGD lr 0.05, momentum 0.9, Nesterov, weight decay 1e-4),
                        dampening_losses (SGD lr 0.05, momentum 0.5, dampening 0.3) and adam_losses
                        (Adam lr 1e-3, L2 weight decay 1e-3); torch_export.onnx: the initial model exported
                        by torch.onnx (TorchScript exporter, eval mode, no constant folding, opset 17),
                        whose initializers keep the state_dict names

Cases:
  net      the torch.js proposal's Net: Conv2d(3,16,5,p2), MaxPool2d(2), ReLU, Conv2d(16,32,5,p2),
           MaxPool2d(2), ReLU, view, Linear(32,10) on [N, 3, 4, 4]; cross entropy
  encoder  Embedding(11, 16), TransformerEncoderLayer(16, 2, 32, dropout 0, batch_first, relu, post-norm,
           causal mask), TransformerEncoderLayer(16, 2, 32, dropout 0, batch_first, gelu, norm_first),
           Linear(16, 11) on token ids [N, 6]; next-token cross entropy over [N*6, 11]
  convzoo  Conv2d, BatchNorm2d, ReLU, ConvTranspose2d (stride 2), GroupNorm, SiLU, AvgPool2d, MaxPool2d
           (stride 1, padding 1), AdaptiveAvgPool2d, Flatten, Linear, BatchNorm1d, Tanh, Dropout(0), Linear
           on [N, 1, 8, 8]; cross entropy (BatchNorm trains on batch statistics, updating running ones)
  attention  MultiheadAttention(12, 3) sequence-first (PyTorch's default) as cross-attention from x
           [5, N, 12] to a Linear projection of x with a key padding mask, then Linear; MSE against [5, N, 12]
  rnnzoo   Conv1d, 2-layer bidirectional LSTM, GRU, last step, LayerNorm, GELU, Linear, Softmax on
           [N, 5, 3]; mean squared error against [N, 3]

Single-threaded, float32, deterministic; re-running gives the same bytes.
Run from this folder: /work/venv/bin/python make_torch_nn_fixtures.py
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from common import FIXTURES, fresh_dir, save_npz, seed_all
from models import ProposalNet

OUT = FIXTURES / "torch-nn"
STEPS = 20


def Net():
    """The torch.js proposal's Net exactly: no BatchNorm, Linear(32, 10) on 3x4x4 inputs."""
    return ProposalNet(channels=3, classes=10, features=32, batchnorm=False)


class Encoder(nn.Module):
    def __init__(self, vocab=11, d=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layer1 = nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=True)
        self.layer2 = nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=True, activation="gelu", norm_first=True)
        self.head = nn.Linear(d, vocab)

    def forward(self, tokens):
        t = tokens.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(t)
        h = self.layer1(self.embed(tokens), src_mask=mask, is_causal=True)
        return self.head(self.layer2(h))


class ConvZoo(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.ConvTranspose2d(4, 4, 2, stride=2), nn.GroupNorm(2, 4), nn.SiLU(),
            nn.AvgPool2d(2), nn.MaxPool2d(3, stride=1, padding=1), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(0.0), nn.Linear(8, 3))

    def forward(self, x):
        return self.head(self.features(x))


class RecurrentZoo(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 6, 3, padding=1)
        self.lstm = nn.LSTM(6, 5, num_layers=2, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(10, 4, batch_first=True)
        self.norm = nn.LayerNorm(4)
        self.act = nn.GELU()
        self.out = nn.Linear(4, 3)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)
        h, _ = self.lstm(h)
        h, _ = self.gru(h)
        return self.softmax(self.out(self.act(self.norm(h[:, -1]))))


class CrossAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.memory = nn.Linear(12, 12)
        self.attention = nn.MultiheadAttention(12, 3)
        self.out = nn.Linear(12, 12)

    def forward(self, x):
        # Padding: the last key position of every odd batch row.
        padding = torch.zeros(x.shape[1], x.shape[0], dtype=torch.bool)
        padding[1::2, -1] = True
        memory = self.memory(x)
        attended, weights = self.attention(x, memory, memory, key_padding_mask=padding)
        return self.out(attended) + weights.mean()


class SequenceFirst(nn.Module):
    """Feeds batch-first data [N, L, E] to a sequence-first model and returns batch-first results."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.transpose(0, 1)).transpose(0, 1)


def mse_loss(model, x, y):
    return F.mse_loss(model(x), y)


def net_loss(model, x, y):
    return F.cross_entropy(model(x), y)


def encoder_loss(model, x, y):
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def train(model, state, optimizer_factory, loss_fn, x, y, batch):
    model.load_state_dict(state)
    model.train()
    optimizer = optimizer_factory(model.parameters())
    losses = []
    n = x.shape[0]
    for step in range(STEPS):
        start = (step * batch) % n
        xb, yb = x[start:start + batch], y[start:start + batch]
        optimizer.zero_grad()
        loss = loss_fn(model, xb, yb)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return np.array(losses, dtype=np.float32)


def write_case(name, model, x, y, batch, loss_fn, extra=None):
    folder = fresh_dir(OUT / name)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "weights.safetensors"))
    save_npz(folder / "data.npz", {"x": x.numpy(), "y": y.numpy(), "batch": np.array(batch, dtype=np.int64)})
    model.eval()
    with torch.no_grad():
        output = model(x[:batch]).numpy()
    if name == "net":
        torch.onnx.export(model, (x[:batch],), str(folder / "torch_export.onnx"), dynamo=False, do_constant_folding=False,
                          opset_version=17, input_names=["input"], output_names=["output"])
    sgd = train(model, state, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4), loss_fn, x, y, batch)
    model.eval()
    with torch.no_grad():
        train_output = model(x[:batch]).numpy()
    buffers = {f"after_sgd.{k}": v.detach().numpy().copy() for k, v in model.named_buffers()}
    adamw = train(model, state, lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-2), loss_fn, x, y, batch)
    more = {key: train(model, state, factory, loss_fn, x, y, batch) for key, factory in (extra or {}).items()}
    save_npz(folder / "reference.npz", {"output": output, "sgd_losses": sgd, "adamw_losses": adamw, "train_output": train_output,
                                        **buffers, **more})
    print(f"{name}: output {output.shape}, sgd {sgd[0]:.4f} -> {sgd[-1]:.4f}, adamw {adamw[0]:.4f} -> {adamw[-1]:.4f}")


def main():
    torch.set_num_threads(1)
    seed_all(17)
    OUT.mkdir(exist_ok=True)
    net = Net()
    x = torch.randn(32, 3, 4, 4)
    y = torch.randint(0, 10, (32,))
    write_case("net", net, x, y, 8, net_loss, extra={
        "nesterov_losses": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
        "dampening_losses": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, dampening=0.3),
        "adam_losses": lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-3),
    })

    seed_all(18)
    encoder = Encoder()
    tokens = torch.randint(0, 11, (16, 7))
    write_case("encoder", encoder, tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous(), 4, encoder_loss)

    seed_all(19)
    zoo = ConvZoo()
    x = torch.randn(24, 1, 8, 8)
    y = torch.randint(0, 3, (24,))
    write_case("convzoo", zoo, x, y, 6, net_loss)

    seed_all(20)
    rnn = RecurrentZoo()
    x = torch.randn(12, 5, 3)
    y = torch.softmax(torch.randn(12, 3), dim=-1)
    write_case("rnnzoo", rnn, x, y, 4, mse_loss)

    seed_all(21)
    attention = CrossAttention()
    x = torch.randn(5, 8, 12)
    y = torch.randn(5, 8, 12)
    # Batches are rows of the first axis; this model is sequence-first, so cases slice x along dim 1
    # (batch) through a transposed copy: store x batch-first and let forward see [5, N, 12].
    write_case("attention", SequenceFirst(attention), x.transpose(0, 1).contiguous(), y.transpose(0, 1).contiguous(), 4, mse_loss)


if __name__ == "__main__":
    main()
