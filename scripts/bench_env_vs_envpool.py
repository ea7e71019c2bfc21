"""Preprocessed Atari env throughput, side by side: wndqn (`wndqn bench env`) against EnvPool.

Same game and the same preprocessing on both sides, EnvPool's Pong-v5 defaults: frame skip 4
with max-pooling of the last two frames, up to 30 no-ops, FIRE on reset, no episodic life, no
reward clipping, no sticky actions, 84x84 grayscale by area averaging, 4 stacked frames, random
actions. Two comparisons, each run REPEATS times interleaved, medians reported:
  1. one env, one thread (EnvPool num_envs=1, num_threads=1);
  2. two threads: EnvPool with 8 envs on 2 threads (sync, batch_size=8, and async, batch_size=4;
     the faster counts) against wndqn with 2 threads, one env each.
usage: .venv/bin/python scripts/bench_env_vs_envpool.py [--repeats 5] [--seconds 5] [--game Pong]
"""
import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

import envpool

ROOT = Path(__file__).resolve().parent.parent
SETS = ["env.repeat_action_probability=0", "env.episodic_life=false", "env.clip_rewards=false",
        "env.frameskip=4", "env.noop_max=30", "env.fire_reset=true", "env.max_pool=true",
        "env.frame_stack=4", "env.frame_size=84"]


def ours(game, threads, seconds):
    cmd = [str(ROOT / "target/release/wndqn"), "bench", "env", "--game", game, "--threads", str(threads),
           "--seconds", str(seconds), "--json"]
    for s in SETS:
        cmd += ["--set", s]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["env_steps_per_sec"]


def theirs(game, num_envs, batch, threads, seconds):
    env = envpool.make(f"{game}-v5", env_type="gymnasium", num_envs=num_envs, batch_size=batch,
                       num_threads=threads, seed=0, repeat_action_probability=0.0,
                       episodic_life=False, reward_clip=False)
    n_act = env.action_space.n
    rng = np.random.default_rng(0)
    if batch == num_envs:
        env.reset()
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            env.step(rng.integers(0, n_act, size=num_envs))
            steps += num_envs
    else:
        env.async_reset()
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            _, _, _, _, info = env.recv()
            env.send(rng.integers(0, n_act, size=batch), info["env_id"])
            steps += batch
    secs = time.perf_counter() - t0
    env.close()
    return steps / secs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--game", default="Pong")
    a = p.parse_args()
    r = {k: [] for k in ["ours1", "pool1", "ours2", "pool8sync", "pool8async"]}
    for _ in range(a.repeats):
        r["ours1"].append(ours(a.game, 1, a.seconds))
        r["pool1"].append(theirs(a.game, 1, 1, 1, a.seconds))
        r["ours2"].append(ours(a.game, 2, a.seconds))
        r["pool8sync"].append(theirs(a.game, 8, 8, 2, a.seconds))
        r["pool8async"].append(theirs(a.game, 8, 4, 2, a.seconds))
    m = {k: statistics.median(v) for k, v in r.items()}
    print(f"{a.game}, env steps/s (frameskip 4), median of {a.repeats} interleaved runs of {a.seconds}s:")
    for k, v in r.items():
        print(f"  {k:11s} {m[k]:8.0f}   runs: {' '.join(f'{x:.0f}' for x in v)}")
    pool2 = max(m["pool8sync"], m["pool8async"])
    print(f"1 thread : wndqn {m['ours1']:.0f} vs EnvPool {m['pool1']:.0f}  -> {m['ours1'] / m['pool1']:.2f}x")
    print(f"2 threads: wndqn {m['ours2']:.0f} vs EnvPool 8 envs {pool2:.0f}  -> {m['ours2'] / pool2:.2f}x")
    print(json.dumps({"medians": m, "ratio_1thread": m["ours1"] / m["pool1"], "ratio_2threads": m["ours2"] / pool2}))


if __name__ == "__main__":
    main()
