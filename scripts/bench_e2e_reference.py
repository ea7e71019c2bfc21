"""PyTorch reference for `wndqn bench e2e`: a single-process DQN loop in the design of CleanRL's
dqn_atari.py (one env, act / store / every 4th step one update), same settings as
configs/pong.toml: Gymnasium ALE Pong with the DQN preprocessing (AtariPreprocessing: no-ops,
frame skip 4 with max-pooling, 84x84 grayscale; 4 stacked frames), Nature CNN, batch 32, double
DQN, Adam, replay ratio 0.25. Measures env steps/s and updates/s after the warm-up.
`--precision bf16` runs the update's forward and backward passes (and the acting forward pass)
under autocast to bfloat16, with channels-last convolutions: PyTorch's own mixed precision.
usage: bench_e2e_reference.py [--seconds 60] [--warmup 2000] [--threads 2] [--precision fp32|bf16]
"""
import argparse
import json
import time

import ale_py
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--seconds", type=float, default=60)
p.add_argument("--warmup", type=int, default=2000)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
a = p.parse_args()
torch.set_num_threads(a.threads)
gym.register_envs(ale_py)
env = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0)
env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, terminal_on_life_loss=False, grayscale_obs=True)
env = gym.wrappers.FrameStackObservation(env, 4)


def qnet():
    return nn.Sequential(nn.Conv2d(4, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(), nn.Conv2d(64, 64, 3, 1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(), nn.Linear(512, env.action_space.n))


q, tq = qnet(), qnet()
tq.load_state_dict(q.state_dict())
bf16 = a.precision == "bf16"
fmt = torch.channels_last if bf16 else torch.contiguous_format
q, tq = q.to(memory_format=fmt), tq.to(memory_format=fmt)
autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
opt = torch.optim.Adam(q.parameters(), lr=1e-4, eps=1.5e-4)
N = 100_000
obs_buf = np.zeros((N, 4, 84, 84), np.uint8)
next_buf = np.zeros((N, 4, 84, 84), np.uint8)
act_buf = np.zeros(N, np.int64)
rew_buf = np.zeros(N, np.float32)
done_buf = np.zeros(N, np.float32)
obs, _ = env.reset(seed=1)
step, updates, i = 0, 0, 0
t_start = None
rng = np.random.default_rng(0)
while True:
    eps = 1.0 if step < a.warmup else 0.1
    if rng.random() < eps:
        action = env.action_space.sample()
    else:
        with torch.no_grad(), autocast:
            action = int(q(torch.as_tensor(obs[None]).float() / 255.0).argmax(1))
    nobs, r, term, trunc, _ = env.step(action)
    j = step % N
    obs_buf[j], next_buf[j], act_buf[j], rew_buf[j], done_buf[j] = obs, nobs, action, np.sign(r), float(term)
    obs = nobs
    if term or trunc:
        obs, _ = env.reset()
    step += 1
    if step == a.warmup:
        t_start, s0, u0 = time.perf_counter(), step, updates
    if step > a.warmup and step % 4 == 0:
        idx = rng.integers(0, min(step, N), 32)
        o = (torch.as_tensor(obs_buf[idx]).float() / 255.0).contiguous(memory_format=fmt)
        no = (torch.as_tensor(next_buf[idx]).float() / 255.0).contiguous(memory_format=fmt)
        with autocast:
            with torch.no_grad():
                na = q(no).argmax(1, keepdim=True)
                y = torch.as_tensor(rew_buf[idx]) + 0.99 * (1 - torch.as_tensor(done_buf[idx])) * tq(no).float().gather(1, na).squeeze(1)
            qa = q(o).float().gather(1, torch.as_tensor(act_buf[idx])[:, None]).squeeze(1)
            loss = F.smooth_l1_loss(qa, y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(q.parameters(), 10.0)
        opt.step()
        updates += 1
        if updates % 1000 == 0:
            tq.load_state_dict(q.state_dict())
    if t_start is not None and time.perf_counter() - t_start >= a.seconds:
        break
secs = time.perf_counter() - t_start
print(json.dumps({"impl": "pytorch-cleanrl-design", "env_steps_per_sec": (step - s0) / secs, "updates_per_sec": (updates - u0) / secs, "seconds": secs, "threads": a.threads, "precision": a.precision}))
