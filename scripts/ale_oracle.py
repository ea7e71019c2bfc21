"""Oracle for envs/tests/parity.rs: plays an action sequence in ale-py (the Python ALE, a newer
emulator build than the ALE 0.6 inside ale-sys) and applies the DQN preprocessing with numpy,
independently of the Rust code.

usage: ale_oracle.py GAME SEED FRAMESKIP OUT_DIR < actions (one action index per line)
Writes OUT_DIR/obs.u8 (one 84x84 frame per step, after max-pooling and area resizing) and
OUT_DIR/steps.json ([reward, lives, game_over] per step). No sticky actions, no no-ops, no FIRE,
no episodic life: the parts that need no RNG shared with the Rust side.
"""
import json
import sys
from pathlib import Path

import numpy as np
from ale_py import ALEInterface, LoggerMode, roms


def area_weights(src, dst):
    """Row i: how much of source pixel j falls in output pixel i, normalised (INTER_AREA)."""
    scale = src / dst
    w = np.zeros((dst, src))
    for i in range(dst):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(np.floor(lo)), min(int(np.ceil(hi)), src)):
            w[i, j] = max(0.0, min(hi, j + 1) - max(lo, j)) / scale
    return w


def main():
    game, seed, frameskip, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    actions = [int(x) for x in sys.stdin.read().split()]
    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.setInt("random_seed", seed)
    ale.setFloat("repeat_action_probability", 0.0)
    ale.loadROM(roms.get_rom_path(game))
    action_set = ale.getMinimalActionSet()
    wy, wx = area_weights(210, 84), area_weights(160, 84)
    frames, steps = [], []
    for a in actions:
        reward, prev = 0, None
        for i in range(frameskip):
            reward += ale.act(action_set[a])
            if i == frameskip - 2:
                prev = ale.getScreenGrayscale()
            if ale.game_over():
                break
        last = ale.getScreenGrayscale()
        img = np.maximum(last, prev) if prev is not None else last
        small = np.floor(wy @ img.astype(np.float64) @ wx.T + 0.5).clip(0, 255).astype(np.uint8)
        frames.append(small)
        steps.append([reward, ale.lives(), bool(ale.game_over())])
        if ale.game_over():
            break
    out.mkdir(parents=True, exist_ok=True)
    np.stack(frames).tofile(out / "obs.u8")
    (out / "steps.json").write_text(json.dumps(steps))


if __name__ == "__main__":
    main()
