"""Oracle for envs/tests/parity.rs: plays action sequences in ale-py 0.12.1 (the Python ALE that
Gymnasium, CleanRL and EnvPool results come from) and applies the DQN preprocessing with numpy,
independently of the Rust code.

usage: ale_oracle.py JOBS.json OUT_DIR
JOBS.json is a list of {"game", "seed", "sticky", "frameskip", "obs_every", "actions"}: ALE's
random_seed and repeat_action_probability, the frames per step, and action indices into the
minimal action set. For job k it writes OUT_DIR/k.json (per step: [reward, lives, game_over,
truncated, screen_hash]) and OUT_DIR/k.u8 (the 84x84 observation of every obs_every-th step,
after max-pooling the last two frames and area resizing). No no-ops, FIRE or episodic life: the
parts the Rust side would have to share an RNG for. Sticky actions are ALE's own, so the same
random_seed must give the same trajectory.
"""
import json
import sys
from pathlib import Path

import numpy as np
from ale_py import ALEInterface, LoggerMode, roms

MASK = (1 << 64) - 1


def screen_weights(n):
    """The per-pixel weights of the screen hash (an LCG, the same in the Rust test)."""
    w, x = np.empty(n, dtype=np.uint64), 0x2545F4914F6CDD1D
    for i in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) & MASK
        w[i] = x
    return w


def area_weights(src, dst):
    """Row i: how much of source pixel j falls in output pixel i, normalised (INTER_AREA)."""
    scale = src / dst
    w = np.zeros((dst, src))
    for i in range(dst):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(np.floor(lo)), min(int(np.ceil(hi)), src)):
            w[i, j] = max(0.0, min(hi, j + 1) - max(lo, j)) / scale
    return w


def play(job, weights, wy, wx):
    ale = ALEInterface()
    ale.setInt("random_seed", job["seed"])
    ale.setFloat("repeat_action_probability", job["sticky"])
    ale.loadROM(roms.get_rom_path(job["game"]))
    ale.reset_game()
    action_set = ale.getMinimalActionSet()
    frames, steps = [], []
    for t, a in enumerate(job["actions"]):
        reward, prev = 0, None
        for i in range(job["frameskip"]):
            reward += ale.act(action_set[a])
            if i == job["frameskip"] - 2 and not ale.game_over():
                prev = ale.getScreenGrayscale()
            if ale.game_over():
                break
        last = ale.getScreenGrayscale()
        h = int((last.reshape(-1).astype(np.uint64) * weights).sum(dtype=np.uint64))
        if t % job["obs_every"] == 0:
            img = np.maximum(last, prev) if prev is not None else last
            small = np.floor(wy @ img.astype(np.float64) @ wx.T + 0.5).clip(0, 255).astype(np.uint8)
            frames.append(small)
        steps.append([reward, ale.lives(), bool(ale.game_over(with_truncation=False)), bool(ale.game_truncated()), f"{h:016x}"])
        if ale.game_over():
            break
    return steps, frames


def main():
    jobs, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    ALEInterface.setLoggerMode(LoggerMode.Error)
    weights = screen_weights(210 * 160)
    wy, wx = area_weights(210, 84), area_weights(160, 84)
    out.mkdir(parents=True, exist_ok=True)
    with np.errstate(over="ignore"):
        for k, job in enumerate(jobs):
            steps, frames = play(job, weights, wy, wx)
            (out / f"{k}.json").write_text(json.dumps(steps))
            np.stack(frames).tofile(out / f"{k}.u8")


if __name__ == "__main__":
    main()
