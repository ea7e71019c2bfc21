"""Reference trajectories from PyTorch's optimizers, for agents/src/optim.rs's tests.

Same problem as the Rust test: parameters a=[0.5,-1,2], b=[0.1,0.3] (float64); at step t the
loss is sum(sin(0.37 i + t) * (p + 0.05 p^2)) over each parameter. Prints JSON: name -> final
parameters (a then b) after 25 steps.
"""
import json

import torch

CONFIGS = {
    "adam": lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.9, 0.999), eps=1e-8),
    "adamax": lambda ps: torch.optim.Adamax(ps, lr=0.01, betas=(0.5, 0.999), eps=1e-8),
    "rmsprop_centered": lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.95, eps=0.01, centered=True),
    "rmsprop_momentum": lambda ps: torch.optim.RMSprop(ps, lr=0.001, alpha=0.99, eps=1e-8, momentum=0.9),
}

out = {}
for name, make in CONFIGS.items():
    a = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.1, 0.3], dtype=torch.float64, requires_grad=True)
    opt = make([a, b])
    for t in range(25):
        opt.zero_grad()
        loss = 0
        for p in (a, b):
            i = torch.arange(p.numel(), dtype=torch.float64)
            loss = loss + (torch.sin(i * 0.37 + t) * (p + 0.05 * p * p)).sum()
        loss.backward()
        opt.step()
    out[name] = a.detach().tolist() + b.detach().tolist()
print(json.dumps(out))
