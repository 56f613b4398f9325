#!/usr/bin/env python3
"""`bitfleet serve` driven by a real gRPC client bitfleet did not write: Python grpcio, with stubs
generated from proto/ by grpcio-tools. TP=2 under mpirun when available, else TP=1.

Checks: health goes SERVING; greedy "Hello world" equals `bitfleet run --temp 0`, also while 31
other streams share the batch, and each of those equals its own single-stream answer; a NaN
temperature is INVALID_ARGUMENT; a short deadline is DEADLINE_EXCEEDED; SIGTERM exits 0.

Exit 77 (CTest: skipped) when grpcio, the bitfleet binary or the proto files are missing.
Usage: serving_grpcio_test.py PROTO_DIR (BITFLEET_BIN in the environment).
"""
import concurrent.futures
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from serving_test_util import skip, wait_ports

try:
    import grpc
    from grpc_tools import protoc
except ImportError as error:  # grpcio is optional (scripts/install-test-tools.sh)
    skip(f"grpcio / grpcio-tools not installed: {error}")


def generate_stubs(proto_dir, out_dir):
    for proto in ("bitfleet/v1/inference.proto", "grpc/health/v1/health.proto"):
        rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", proto])
        if rc != 0:
            raise RuntimeError(f"protoc failed on {proto}")
    sys.path.insert(0, out_dir)


def load_health_messages(out_dir):
    """The generated grpc.health.v1 messages. Loaded by path: the package name `grpc` is grpcio's."""
    import importlib.util
    path = os.path.join(out_dir, "grpc", "health", "v1", "health_pb2.py")
    spec = importlib.util.spec_from_file_location("bitfleet_health_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    proto_dir = sys.argv[1]
    binary = os.environ.get("BITFLEET_BIN", "")
    if not os.access(binary, os.X_OK):
        skip("BITFLEET_BIN is not set to the bitfleet binary")
    work = tempfile.mkdtemp(prefix="bitfleet-grpcio-")
    try:
        return run(binary, proto_dir, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(binary, proto_dir, work):
    generate_stubs(proto_dir, work)
    from bitfleet.v1 import inference_pb2 as pb
    from bitfleet.v1 import inference_pb2_grpc as pb_grpc
    health_pb2 = load_health_messages(work)

    model = os.path.join(work, "tiny.gguf")
    subprocess.run([binary, "synth", "--arch", "llama", "--preset", "tiny", "--type", "f16", "--seed", "3", "-o", model],
                   check=True, capture_output=True)
    tp = 2 if shutil.which("mpirun") else 1
    log = open(os.path.join(work, "serve.log"), "w")
    ports_file = os.path.join(work, "ports.json")
    serve = subprocess.Popen([binary, "serve", "--model", model, "--tp", str(tp), "--port", "0", "--ports-file",
                              ports_file, "--threads", "1", "--ctx", "512", "--mpirun-args",
                              "--bind-to none --mca btl self,vader,tcp --mca btl_tcp_if_include lo"],
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    failures = []

    def check(condition, what):
        if not condition:
            failures.append(what)
            print(f"FAIL: {what}")

    try:
        ports = wait_ports(ports_file, serve)
        if ports is None:
            log.flush()
            print(open(log.name).read())
            print("FAIL: serve wrote no ports file")
            return 1
        channel = grpc.insecure_channel(f"127.0.0.1:{ports['api']}")
        health_check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                           request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                           response_deserializer=health_pb2.HealthCheckResponse.FromString)
        stub = pb_grpc.InferenceStub(channel)
        deadline = time.time() + 90
        serving = False
        while time.time() < deadline and serve.poll() is None:
            try:
                status = health_check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    serving = True
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        if not serving:
            log.flush()
            print(open(log.name).read())
            print("FAIL: serve never became SERVING")
            return 1

        def generate(prompt, max_tokens=24, timeout=60, **sampling):
            sampling.setdefault("temperature", 0.0)  # greedy unless told otherwise
            request = pb.GenerateRequest(prompt=prompt, max_tokens=max_tokens, sampling=pb.SamplingParams(**sampling))
            text, tokens, finish = "", [], None
            for message in stub.Generate(request, timeout=timeout):
                text += message.text
                tokens.extend(message.token_ids)
                if message.finish_reason:
                    finish = message.finish_reason
            return text, tokens, finish

        reference = subprocess.run([binary, "run", "-m", model, "-p", "Hello world", "-n", "24", "--temp", "0", "-t", "1"],
                                   check=True, capture_output=True, text=True).stdout
        text, tokens, finish = generate("Hello world")
        check(text + "\n" == reference, f"greedy text {text!r} != bitfleet run {reference!r}")
        check(finish is not None, "no finish reason")

        prompts = ["Hello world"] + [f"Story number {i} begins" for i in range(31)]
        alone = {p: generate(p)[1] for p in prompts[1:4]}
        with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
            together = list(pool.map(generate, prompts))
        check(together[0][0] + "\n" == reference, "greedy text changed while 31 other streams shared the batch")
        for p, out in zip(prompts, together):
            if p in alone:
                check(out[1] == alone[p], f"{p!r}: batched tokens differ from its single-stream tokens")

        try:
            generate("Hello", temperature=math.nan)
            check(False, "NaN temperature was accepted")
        except grpc.RpcError as error:
            check(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"NaN temperature gave {error.code()}")
        # A deadline 158 years away (a client's "no timeout" as a huge duration) is no deadline.
        text, tokens, finish = generate("Hello world", timeout=5e9)
        check(text + "\n" == reference, f"with a far deadline: {text!r} != bitfleet run {reference!r}")
        try:
            generate("Hello", max_tokens=480, timeout=0.005)
            check(False, "a 5 ms deadline did not expire")
        except grpc.RpcError as error:
            check(error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline gave {error.code()}")
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            code = serve.wait(timeout=60)
            check(code == 0, f"serve exited {code} after SIGTERM")
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            check(False, "serve did not exit after SIGTERM")
    if failures:
        log.flush()
        print(open(log.name).read()[-4000:])
        return 1
    print(f"OK: grpcio client against bitfleet serve (TP={tp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
