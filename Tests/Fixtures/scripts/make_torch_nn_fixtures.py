"""PyTorch references for the Swift model API (Sources/OnnxTrainNN), under Tests/Fixtures/torch-nn/<case>/.

Each case defines a model in PyTorch exactly as Tests/OnnxTrainNNTests defines it in Swift and writes
  weights.safetensors   the initial state_dict (safetensors.torch.save_file), which the Swift model loads
  data.npz              the inputs and targets (x, y), and the batch the forward output is taken on
  reference.npz         output: the model's eval-mode output on x[:batch]
                        sgd_losses / adamw_losses: the loss before each of 20 optimizer steps, batches
                        of `batch` rows cycling through x (SGD with momentum 0.9, weight decay 1e-4;
                        AdamW lr 1e-3, weight decay 1e-2), each run from weights.safetensors
                        train_output: the eval-mode output on x[:batch] after the 20 SGD steps

Cases:
  net      the torch.js proposal's Net: Conv2d(3,16,5,p2), MaxPool2d(2), ReLU, Conv2d(16,32,5,p2),
           MaxPool2d(2), ReLU, view, Linear(32,10) on [N, 3, 4, 4]; cross entropy
  encoder  Embedding(11, 16), TransformerEncoderLayer(16, 2, 32, dropout 0, batch_first, relu, post-norm,
           causal mask), TransformerEncoderLayer(16, 2, 32, dropout 0, batch_first, gelu, norm_first),
           Linear(16, 11) on token ids [N, 6]; next-token cross entropy over [N*6, 11]

Single-threaded, float32, deterministic; re-running gives the same bytes.
Run from this folder: /work/venv/bin/python make_torch_nn_fixtures.py
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from common import FIXTURES, fresh_dir, save_npz, seed_all

OUT = FIXTURES / "torch-nn"
STEPS = 20


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(3, 16, 5, stride=1, padding=2), nn.MaxPool2d(2), nn.ReLU(),
                                   nn.Conv2d(16, 32, 5, stride=1, padding=2), nn.MaxPool2d(2), nn.ReLU())
        self.mlp = nn.Linear(32, 10)

    def forward(self, x):
        x = self.convs(x)
        x = x.view(x.size(0), -1)
        return self.mlp(x)


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


def write_case(name, model, x, y, batch, loss_fn):
    folder = fresh_dir(OUT / name)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "weights.safetensors"))
    save_npz(folder / "data.npz", {"x": x.numpy(), "y": y.numpy(), "batch": np.array(batch, dtype=np.int64)})
    model.eval()
    with torch.no_grad():
        output = model(x[:batch]).numpy()
    sgd = train(model, state, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4), loss_fn, x, y, batch)
    model.eval()
    with torch.no_grad():
        train_output = model(x[:batch]).numpy()
    adamw = train(model, state, lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-2), loss_fn, x, y, batch)
    save_npz(folder / "reference.npz", {"output": output, "sgd_losses": sgd, "adamw_losses": adamw, "train_output": train_output})
    print(f"{name}: output {output.shape}, sgd {sgd[0]:.4f} -> {sgd[-1]:.4f}, adamw {adamw[0]:.4f} -> {adamw[-1]:.4f}")


def main():
    torch.set_num_threads(1)
    seed_all(17)
    OUT.mkdir(exist_ok=True)
    net = Net()
    x = torch.randn(32, 3, 4, 4)
    y = torch.randint(0, 10, (32,))
    write_case("net", net, x, y, 8, net_loss)

    seed_all(18)
    encoder = Encoder()
    tokens = torch.randint(0, 11, (16, 7))
    write_case("encoder", encoder, tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous(), 4, encoder_loss)


if __name__ == "__main__":
    main()
