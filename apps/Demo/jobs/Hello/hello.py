"""Greet someone in a few visible steps: the smallest complete JobHost job."""

from __future__ import annotations

import argparse
import sys
import time

from jobhost.job import context, progress, set_result

MAX_GREETING = 200
STEP_SECONDS = 0.2  # slow enough to watch the progress bar move in the UI


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--greeting", default="Hello")
    parser.add_argument("--name", required=True)
    parser.add_argument("--test", action="store_true", help="run as a test (same steps)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if len(args.greeting) > MAX_GREETING:
        print(
            f"Greeting must be at most {MAX_GREETING} characters, got {len(args.greeting)}",
            file=sys.stderr,
        )
        return 2
    steps = ["Warming up", "Finding the right words", "Clearing throat"]
    for number, step in enumerate(steps):
        progress(number / len(steps), step)
        print(f"{step}...", flush=True)
        time.sleep(STEP_SECONDS)
    message = f"{args.greeting}, {args.name}!"
    progress(1.0, "Greeted")
    set_result({"message": message, "user": context.user, "test": context.test})
    print(message, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
