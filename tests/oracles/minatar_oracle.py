"""Oracle for envs/tests/minatar_parity.rs: plays action sequences in the `minatar` package
(1.0.15, the implementation MinAtar results come from) and records what it shows.

usage: minatar_oracle.py JOBS.json OUT_DIR
JOBS.json is a list of {"game", "seed", "sticky", "ramping", "actions"}: the package's game name,
the seed given to `Environment.seed`, `sticky_action_prob`, `difficulty_ramping`, and indices of
the six actions. The game is reset after seeding and after every terminal step. For job k it
writes OUT_DIR/k.json ([reward, terminal] per step) and OUT_DIR/k.u8 (the state after the
reset, then after every step, and after a terminal step also the state after the reset that
follows it, each as C x 10 x 10 bytes 0/1, channel first).

With "draws": N instead of a game, it writes numpy RandomState(seed)'s first N outputs of
rand() (as its 64 bits), randint(0, n) for n in 1..9, choice([True, False], p=[1/3, 2/3]) in turn (as JSON), so
the Rust sampler can be checked draw for draw.
"""
import json
import sys
from pathlib import Path

import numpy as np
from minatar import Environment


def draws(seed, n):
    r = np.random.RandomState(seed)
    out = []
    for i in range(n):
        k = i % 11
        if k == 0:
            out.append(int(np.float64(r.rand()).view(np.uint64)))  # the bits: JSON floats may round
        elif k == 10:
            out.append(bool(r.choice([True, False], p=[1 / 3, 2 / 3])))
        else:
            out.append(int(r.randint(0, k)))
    return out


def play(job, out_dir, k):
    env = Environment(job["game"], sticky_action_prob=job["sticky"], difficulty_ramping=job["ramping"])
    env.seed(job["seed"])
    env.reset()
    states = [env.state()]
    steps = []
    for a in job["actions"]:
        r, term = env.act(a)
        steps.append([float(r), bool(term)])
        states.append(env.state())
        if term:
            env.reset()
            states.append(env.state())
    arr = np.stack(states).astype(np.uint8).transpose(0, 3, 1, 2)
    (out_dir / f"{k}.u8").write_bytes(np.ascontiguousarray(arr).tobytes())
    (out_dir / f"{k}.json").write_text(json.dumps(steps))


def main():
    jobs = json.loads(Path(sys.argv[1]).read_text())
    out_dir = Path(sys.argv[2])
    for k, job in enumerate(jobs):
        if "draws" in job:
            (out_dir / f"{k}.json").write_text(json.dumps(draws(job["seed"], job["draws"])))
        else:
            play(job, out_dir, k)


if __name__ == "__main__":
    main()
