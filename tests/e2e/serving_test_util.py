"""Helpers shared by the Python serving tests (serving_grpcio_test.py, serving_openai_test.py)."""
import socket
import sys

SKIP = 77  # CTest's SKIP_RETURN_CODE for these tests


def skip(reason):
    """Ends the test as skipped, saying why."""
    print(f"SKIP: {reason}")
    sys.exit(SKIP)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
