"""The periodic job of the example, and where it records its runs.

cleanup() is the work itself. Each run appends one line, "<unix time> <pid>
<how>", to the file named by $JOB_LOG (nothing when it is unset), so that a
test or a curious user can count how many times it ran per period.
"""

import os
import sys
import time


def cleanup(how="scheduler"):
    """Do the periodic work once and record the run."""
    path = os.environ.get("JOB_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{time.time():.3f} {os.getpid()} {how}\n")
    print(f"cleanup ran ({how}, pid {os.getpid()})", file=sys.stderr, flush=True)


if __name__ == "__main__":
    # `python3 -m jobs`: one run, as forkd's [[schedule]] starts it.
    cleanup(os.environ.get("FORKD_SCHEDULE", "once"))
