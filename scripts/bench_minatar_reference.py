"""PyTorch and `minatar` references for wndqn's MinAtar benchmarks (scripts/bench_minatar.sh).

  env  --game G --seconds S: the package's env steps per second on one core, random actions,
       the observation read every step (`state()`), as a DQN loop needs it.
  e2e  --game G --seconds S: a DQN loop of CleanRL's design (dqn.py: one process, numpy replay
       buffer, epsilon-greedy, a gradient step every frame) on the package, with configs/
       minatar.toml's agent: MinAtar's network (conv 16 3x3 -> dense 128), centered RMSProp
       (lr 2.5e-4, alpha 0.95, eps 0.01, momentum 0.95), Huber loss, no double DQN, target copy
       every 1,000 updates, batch 32, replay 100k, warm-up 5k frames (not timed), one intra-op
       thread. Env steps per second after the warm-up.
Each prints one JSON object.
"""
import argparse
import json
import time

import numpy as np
from minatar import Environment

p = argparse.ArgumentParser()
p.add_argument("what", choices=["env", "e2e"])
p.add_argument("--game", default="breakout")
p.add_argument("--seconds", type=float, default=10.0)
p.add_argument("--warmup", type=int, default=5000)
args = p.parse_args()


def env_speed():
    env = Environment(args.game, sticky_action_prob=0.1, difficulty_ramping=True)
    env.seed(0)
    env.reset()
    rng = np.random.default_rng(0)
    n, t0 = 0, time.perf_counter()
    while True:
        for a in rng.integers(0, 6, 256):
            _, term = env.act(a)
            env.state()
            if term:
                env.reset()
        n += 256
        if time.perf_counter() - t0 >= args.seconds:
            break
    secs = time.perf_counter() - t0
    return {"impl": "minatar", "game": args.game, "env_steps_per_sec": n / secs, "seconds": secs}


def e2e():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(1)
    torch.manual_seed(0)
    env = Environment(args.game, sticky_action_prob=0.1, difficulty_ramping=True)
    env.seed(0)
    env.reset()
    c = env.state_shape()[2]

    def qnet():
        return nn.Sequential(nn.Conv2d(c, 16, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(1024, 128), nn.ReLU(),
                             nn.Linear(128, 6))

    online, target = qnet(), qnet()
    target.load_state_dict(online.state_dict())
    opt = torch.optim.RMSprop(online.parameters(), lr=2.5e-4, alpha=0.95, eps=0.01, momentum=0.95, centered=True)
    cap = 100_000
    obs_buf = np.zeros((cap, c, 10, 10), dtype=np.bool_)
    next_buf = np.zeros((cap, c, 10, 10), dtype=np.bool_)
    act_buf = np.zeros(cap, dtype=np.int64)
    rew_buf = np.zeros(cap, dtype=np.float32)
    term_buf = np.zeros(cap, dtype=np.float32)
    rng = np.random.default_rng(0)
    obs = env.state().transpose(2, 0, 1)
    step, updates, t0 = 0, 0, None
    while True:
        eps = max(0.1, 1.0 - 0.9 * step / 100_000)
        if rng.random() < eps:
            a = int(rng.integers(6))
        else:
            with torch.no_grad():
                a = int(online(torch.from_numpy(obs).float().unsqueeze(0)).argmax(1))
        r, term = env.act(a)
        nxt = env.state().transpose(2, 0, 1)
        i = step % cap
        obs_buf[i], next_buf[i], act_buf[i], rew_buf[i], term_buf[i] = obs, nxt, a, r, term
        step += 1
        if term:
            env.reset()
            nxt = env.state().transpose(2, 0, 1)
        obs = nxt
        if step < args.warmup:
            continue
        if t0 is None:
            t0, start_step = time.perf_counter(), step
        idx = rng.integers(0, min(step, cap), 32)
        o = torch.from_numpy(obs_buf[idx]).float()
        n = torch.from_numpy(next_buf[idx]).float()
        with torch.no_grad():
            y = torch.from_numpy(rew_buf[idx]) + 0.99 * (1 - torch.from_numpy(term_buf[idx])) * target(n).max(1)[0]
        q = online(o).gather(1, torch.from_numpy(act_buf[idx]).unsqueeze(1)).squeeze(1)
        loss = F.smooth_l1_loss(q, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        updates += 1
        if updates % 1000 == 0:
            target.load_state_dict(online.state_dict())
        if time.perf_counter() - t0 >= args.seconds:
            break
    secs = time.perf_counter() - t0
    return {"impl": "pytorch-loop", "game": args.game, "env_steps_per_sec": (step - start_step) / secs,
            "updates_per_sec": updates / secs, "seconds": secs}


print(json.dumps(env_speed() if args.what == "env" else e2e()))
