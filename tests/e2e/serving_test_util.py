"""Helpers shared by the Python serving tests (serving_grpcio_test.py, serving_openai_test.py)."""
import json
import os
import sys
import time

SKIP = 77  # CTest's SKIP_RETURN_CODE for these tests


def skip(reason):
    """Ends the test as skipped, saying why."""
    print(f"SKIP: {reason}")
    sys.exit(SKIP)


def wait_ports(path, process, seconds=90):
    """The ports of a server started with port 0 flags and `--ports-file path` (a dict with "api",
    "http", "metrics", "control"; None for a port that is off), once it has bound them; None when
    the process exits first or the time runs out. The server writes the file whole (a rename)."""
    deadline = time.time() + seconds
    while time.time() < deadline and process.poll() is None:
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
        time.sleep(0.05)
    return None
