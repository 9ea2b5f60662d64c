"""Benchmark (issue 27): the return of a uniformly random policy, the floor that the quick
Figure 1's methods are measured against (docs/baselines.md). Each episode draws actions uniformly
from the gymnasium env's own action space until ``terminated`` or the env's time limit.

    python bench/random_policy.py [--env InvertedPendulum-v4] [--episodes 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics

import gymnasium as gym


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="InvertedPendulum-v4")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    env = gym.make(args.env)
    env.action_space.seed(args.seed)
    returns = []
    for i in range(args.episodes):
        env.reset(seed=args.seed + i)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    print(f"{args.env}: uniformly random actions, {args.episodes} episodes (seeds {args.seed}.."
          f"{args.seed + args.episodes - 1}): return mean {statistics.mean(returns):.1f}, "
          f"std {statistics.stdev(returns):.1f}, min {min(returns):.0f}, max {max(returns):.0f}")


if __name__ == "__main__":
    main()
