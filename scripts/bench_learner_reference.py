"""PyTorch reference for `wndqn bench learner`: the same DQN update in a plain PyTorch loop.

Nature CNN (4x84x84 u8 input / 255, 6 actions), or with `--network minatar` MinAtar's network
(conv 16 3x3 -> dense 128 on 4x10x10 inputs, Breakout's channels, 6 actions), batch 32, double DQN (`--double 0`: max targets), Huber loss, global
gradient-norm clipping at 10 (`--clip`; 0 = off), Adam(lr=1e-4, eps=1.5e-4) or (`--optimizer rmsprop`) configs/minatar.toml's
centered RMSprop with momentum, synthetic batch, `--threads` intra-op
threads. `--variant weight_norm` wraps every layer in torch's weight_norm parametrization.
`--cuda-graph` (CUDA only) captures the whole update once (forwards, loss, backward, clipping,
a capturable Adam step) as a CUDA graph and replays it, copying a fresh pinned-host batch into the
graph's static inputs before each replay: the launch-free upper bound for this update.
`--precision bf16` runs the forward and backward passes under autocast to bfloat16 (CPU or CUDA):
what PyTorch users turn on for mixed precision; `--channels-last` puts the convolutions' inputs
and weights in channels-last memory format, which oneDNN's bf16 kernels prefer.
Prints one JSON object like `wndqn bench learner --json`.
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--variant", default="plain", choices=["plain", "weight_norm"])
p.add_argument("--network", default="nature", choices=["nature", "minatar"])
p.add_argument("--threads", type=int, default=2)
p.add_argument("--seconds", type=float, default=10.0)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--device", default="cpu")
p.add_argument("--cuda-graph", action="store_true")
p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
p.add_argument("--channels-last", action="store_true")
p.add_argument("--optimizer", default="adam", choices=["adam", "rmsprop"])
p.add_argument("--double", type=int, default=1, help="double-DQN targets (configs/minatar.toml: 0)")
p.add_argument("--clip", type=float, default=10.0, help="gradient-norm clip, 0 = off (configs/minatar.toml: 0)")
args = p.parse_args()
if args.cuda_graph and not args.device.startswith("cuda"):
    p.error("--cuda-graph needs --device cuda")
torch.set_num_threads(args.threads)
torch.manual_seed(0)
dev = torch.device(args.device)


def layer(m):
    return nn.utils.parametrizations.weight_norm(m) if args.variant == "weight_norm" else m


def qnet():
    if args.network == "minatar":
        return nn.Sequential(
            layer(nn.Conv2d(4, 16, 3, 1)), nn.ReLU(), nn.Flatten(),
            layer(nn.Linear(1024, 128)), nn.ReLU(),
            layer(nn.Linear(128, 6)),
        ).to(dev)
    return nn.Sequential(
        layer(nn.Conv2d(4, 32, 8, 4)), nn.ReLU(),
        layer(nn.Conv2d(32, 64, 4, 2)), nn.ReLU(),
        layer(nn.Conv2d(64, 64, 3, 1)), nn.ReLU(), nn.Flatten(),
        layer(nn.Linear(3136, 512)), nn.ReLU(),
        layer(nn.Linear(512, 6)),
    ).to(dev)


online, target = qnet(), qnet()
target.load_state_dict(online.state_dict())
fmt = torch.channels_last if args.channels_last else torch.contiguous_format
if args.channels_last:
    online, target = online.to(memory_format=fmt), target.to(memory_format=fmt)
autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
if args.optimizer == "rmsprop":
    # configs/minatar.toml's (MinAtar's examples/dqn.py).
    opt = torch.optim.RMSprop(online.parameters(), lr=2.5e-4, alpha=0.95, eps=0.01, momentum=0.95, centered=True,
                              capturable=args.cuda_graph)
else:
    opt = torch.optim.Adam(online.parameters(), lr=1e-4, eps=1.5e-4, capturable=args.cuda_graph)
B = args.batch
side = 10 if args.network == "minatar" else 84
obs = torch.randint(0, 256, (B, 4, side, side), dtype=torch.uint8, device=dev)
nxt = torch.randint(0, 256, (B, 4, side, side), dtype=torch.uint8, device=dev)
act = torch.randint(0, 2, (B,), device=dev)
rew = torch.randn(B, device=dev)
term = torch.zeros(B, device=dev)


def loss_and_step():
    with autocast:
        with torch.no_grad():
            x = (nxt.float() / 255.0).contiguous(memory_format=fmt)
            if args.double:
                a = online(x).argmax(1, keepdim=True)
                y = rew + 0.99 * (1 - term) * target(x).float().gather(1, a).squeeze(1)
            else:
                y = rew + 0.99 * (1 - term) * target(x).float().max(1).values
        q = online((obs.float() / 255.0).contiguous(memory_format=fmt)).float().gather(1, act.unsqueeze(1)).squeeze(1)
        loss = F.smooth_l1_loss(q, y)
    loss.backward()
    if args.clip > 0:
        nn.utils.clip_grad_norm_(online.parameters(), args.clip)
    opt.step()
    return loss


def update():
    opt.zero_grad()
    return loss_and_step().item()


if args.cuda_graph:
    # Warm up on a side stream (as torch.cuda.graphs requires), then capture one update.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            loss_and_step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = loss_and_step()
    host = [t.cpu().pin_memory() for t in (obs, nxt, act, rew, term)]

    def update():
        for dst, src in zip((obs, nxt, act, rew, term), host):
            dst.copy_(src, non_blocking=True)
        graph.replay()

for _ in range(5):
    update()
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < args.seconds:
    update()
    n += 1
if dev.type == "cuda":
    torch.cuda.synchronize()
secs = time.perf_counter() - t0
impl = "pytorch-cuda-graph" if args.cuda_graph else "pytorch"
print(json.dumps({"updates_per_sec": n / secs, "variant": args.variant, "network": args.network, "device": args.device,
                  "threads": args.threads, "batch": B, "updates": n, "seconds": secs, "impl": impl,
                  "precision": args.precision, "channels_last": args.channels_last}))
