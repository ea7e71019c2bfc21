"""K DQN updates in PyTorch, for agents/tests/normalization_oracle.rs.

The Rust test writes a JSON problem on stdin: the network (arch, variant, shapes), the update's
settings, the online and target networks' variables under wndqn's names, and K batches. This
script builds the same network from PyTorch's own modules, each normalization from the library
a published result would use:

- layer norm: `nn.LayerNorm` (eps 1e-5), over the channels at every position (`channels`, the
  map permuted to NHWC, as Flax) or over `[C, H, W]` (`chw`, as CleanRL's PQN);
- spectral norm: `torch.nn.utils.parametrizations.spectral_norm` (one power iteration per
  forward pass in training mode, none in eval mode), its `_u` and `_v` set to wndqn's;
- weight norm: `torch.nn.utils.parametrizations.weight_norm` (dim 0), the projected variant
  scaling every row of `v` back to its initial norm after each optimizer step;

then runs wndqn's update with them: Q(s, a) in training mode (spectral norm's one iteration of
the update), the target network and double DQN's argmax in eval mode, Huber loss, global
gradient clipping, `torch.optim.Adam` (or `torch.optim.RMSprop` when the problem's `optimizer`
says so), a hard target copy every `sync_every` updates (buffers
included). Prints JSON: each update's loss, the first update's gradients, the spectral vectors
and the projected norms after every update, and every variable after the last one.
"""
import json
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrizations as P

torch.set_num_threads(1)


class Layer(nn.Module):
    def __init__(self, name, module, pre, prob):
        super().__init__()
        self.name, self.m = name, module
        variant = prob["variant"]
        self.spectral = variant == "spectral_norm" and (prob["spectral_layers"] == "all" or name in pre)
        self.wn = variant.startswith("weight_norm")
        self.project = variant == "weight_norm_projected"
        if self.wn:
            P.weight_norm(self.m, "weight", dim=0)
        if self.spectral:
            P.spectral_norm(self.m, "weight")
        self.ln = None
        self.ln_channels = False

    def add_ln(self, shape, channels):
        self.ln = nn.LayerNorm(shape[:1] if channels else shape, eps=1e-5)
        self.ln_channels = channels

    def forward(self, x):
        y = self.m(x)
        if self.ln is not None:
            if self.ln_channels and y.dim() == 4:
                y = self.ln(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            else:
                y = self.ln(y)
        return y

    # wndqn's variable names <-> this layer's tensors
    def tensors(self):
        m, n = self.m, self.name
        out = {}
        if self.wn:
            pw = m.parametrizations.weight
            out[n + ".g"] = pw.original0
            out[n + ".v"] = pw.original1
        elif self.spectral:
            pw = m.parametrizations.weight
            out[n + ".weight"] = pw.original
            out[n + ".sn_u"] = pw[0]._u
            out[n + ".sn_v"] = pw[0]._v
        else:
            out[n + ".weight"] = m.weight
        out[n + ".bias"] = m.bias
        if self.ln is not None:
            out[n + ".ln.weight"] = self.ln.weight
            out[n + ".ln.bias"] = self.ln.bias
        return out


class Net(nn.Module):
    def __init__(self, prob):
        super().__init__()
        arch, shape, actions = prob["arch"], prob["obs_shape"], prob["actions"]
        hidden_ln = prob["variant"] == "layer_norm"
        channels = prob["layer_norm_axes"] == "channels"
        pre = {"fc1"}
        self.convs, self.dense = nn.ModuleList(), nn.ModuleList()
        if arch in ("nature", "minatar"):
            c, h, w = shape
            specs = [(c, 32, 8, 4), (32, 64, 4, 2), (64, 64, 3, 1)] if arch == "nature" else [(c, 16, 3, 1)]
            for i, (ci, co, k, s) in enumerate(specs):
                h, w = (h - k) // s + 1, (w - k) // s + 1
                layer = Layer(f"conv{i}", nn.Conv2d(ci, co, k, s), pre, prob)
                if hidden_ln:
                    layer.add_ln([co, h, w], channels)
                self.convs.append(layer)
            feat, width = co * h * w, 512 if arch == "nature" else 128
        else:
            n = 1
            for d in shape:
                n *= d
            layer = Layer("fc0", nn.Linear(n, prob["hidden"]), pre, prob)
            if hidden_ln:
                layer.add_ln([prob["hidden"]], channels)
            self.dense.append(layer)
            feat = width = prob["hidden"]
        self.fc1 = Layer("fc1", nn.Linear(feat, width), pre, prob)
        if hidden_ln:
            self.fc1.add_ln([width], channels)
        self.q = Layer("q", nn.Linear(width, actions), pre, prob)
        self.u8 = prob["u8"]

    def layers(self):
        return list(self.convs) + list(self.dense) + [self.fc1, self.q]

    def forward(self, x):
        x = x / 255.0 if self.u8 else x
        for layer in self.convs:
            x = F.relu(layer(x))
        x = x.flatten(1)
        for layer in self.dense:
            x = F.relu(layer(x))
        return self.q(F.relu(self.fc1(x)))

    def named(self):
        out = {}
        for layer in self.layers():
            out.update(layer.tensors())
        return out

    def load(self, values):
        with torch.no_grad():
            for name, t in self.named().items():
                t.copy_(torch.tensor(values[name], dtype=torch.float32).view_as(t))


def main():
    prob = json.load(sys.stdin)
    online, target = Net(prob), Net(prob)
    online.load(prob["online"])
    target.load(prob["target"])
    # The projected variant's targets: every row's ||v|| as initialized.
    norm0 = {l.name: torch.tensor(prob["online"][l.name + ".v_norm0"]) for l in online.layers() if l.project}
    params = [p for p in online.parameters() if p.requires_grad]
    o = prob.get("optimizer", {"name": "adam"})
    if o["name"] == "rmsprop":
        opt = torch.optim.RMSprop(
            params, lr=prob["lr"], alpha=o["alpha"], eps=o["eps"], centered=o["centered"], momentum=o["momentum"]
        )
    else:
        opt = torch.optim.Adam(params, lr=prob["lr"], betas=(0.9, 0.999), eps=1e-8)
    out = {"losses": [], "sn": [], "v_norms": []}
    for k, b in enumerate(prob["batches"]):
        dt = torch.uint8 if prob["u8"] else torch.float32
        obs = torch.tensor(b["obs"], dtype=torch.float32).view(-1, *prob["obs_shape"]).to(dt)
        nxt = torch.tensor(b["next_obs"], dtype=torch.float32).view(-1, *prob["obs_shape"]).to(dt)
        act = torch.tensor(b["actions"], dtype=torch.int64)
        rew = torch.tensor(b["rewards"], dtype=torch.float32)
        term = torch.tensor(b["terminated"], dtype=torch.float32)
        online.train()
        q = online(obs).gather(1, act.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            online.eval()
            target.eval()
            tq = target(nxt)
            if prob["double"]:
                nv = tq.gather(1, online(nxt).argmax(1, keepdim=True)).squeeze(1)
            else:
                nv = tq.max(1).values
            y = rew + (1.0 - term) * nv * prob["gamma"]
            online.train()
        loss = F.smooth_l1_loss(q, y, beta=1.0)
        opt.zero_grad()
        loss.backward()
        if k == 0:
            out["grads"] = {n: t.grad.flatten().tolist() for n, t in online.named().items() if t.grad is not None}
        if prob["clip"] > 0:
            torch.nn.utils.clip_grad_norm_(params, prob["clip"])
        opt.step()
        with torch.no_grad():
            for layer in online.layers():
                if layer.project:
                    v = layer.m.parametrizations.weight.original1
                    now = v.flatten(1).norm(dim=1)
                    v.mul_((norm0[layer.name] / now).view(-1, *[1] * (v.dim() - 1)))
        if (k + 1) % prob["sync_every"] == 0:
            target.load_state_dict(online.state_dict())
        out["losses"].append(loss.item())
        named = online.named()
        out["sn"].append({n: t.flatten().tolist() for n, t in named.items() if ".sn_" in n})
        out["v_norms"].append(
            {l.name: named[l.name + ".v"].detach().flatten(1).norm(dim=1).tolist() for l in online.layers() if l.project}
        )
    out["online"] = {n: t.detach().flatten().tolist() for n, t in online.named().items()}
    out["target"] = {n: t.detach().flatten().tolist() for n, t in target.named().items()}
    print(json.dumps(out))


main()
