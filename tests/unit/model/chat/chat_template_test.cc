// The chat-template interpreter on exact cases: Jinja's whitespace control under Hugging Face's
// options, Python's printing and arithmetic, scoping, refusals at load time, and the limits that
// keep a template from holding a thread. Its broad equivalence with Python's Jinja2 is checked
// by chat_template_oracle_test.py over a corpus of templates.
#include "model/chat/chat_template.h"

#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace bitfleet::chat {
namespace {

using Json = nlohmann::ordered_json;

Json Messages() {
  return Json{{"messages",
               Json::array({{{"role", "system"}, {"content", " Be brief. "}},
                            {{"role", "user"}, {"content", "héllo"}},
                            {{"role", "assistant"}, {"content", "hi"}}})}};
}

// Renders `source` with Messages(); the error's message when it fails.
std::string Render(const std::string& source, const ChatRenderOptions& options = {},
                   const Json& variables = Messages()) {
  auto parsed = ChatTemplate::Parse(source);
  if (!parsed.ok()) return "PARSE: " + std::string(parsed.status().message());
  auto text = (*parsed)->Render(variables, options);
  if (!text.ok()) return "RENDER: " + std::string(text.status().message());
  return *text;
}

bool Contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(ChatTemplateTest, RendersAChatMlConversation) {
  ChatRenderOptions options;
  options.bos_token = "<s>";
  EXPECT_EQ(Render("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m.content | trim }}"
                   "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
                   options),
            "<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhéllo<|im_end|>\n<|im_start|>assistant\n"
            "hi<|im_end|>\n<|im_start|>assistant\n");
  options.add_generation_prompt = false;
  EXPECT_EQ(Render("{% if add_generation_prompt %}G{% endif %}{{ eos_token }}|", options), "|");
}

// trim_blocks drops the newline after a block tag, lstrip_blocks the indentation before one;
// `-` strips all whitespace on its side, `+` keeps what the options would drop; a template's
// last newline is dropped.
TEST(ChatTemplateTest, WhitespaceControlAsHuggingFaceRendersTemplates) {
  EXPECT_EQ(Render("{% for m in messages %}\n    {% if m.role == 'user' %}\n        [{{ m.content }}]\n"
                   "    {% endif %}\n{% endfor %}\nend\n"),
            "        [héllo]\nend");
  EXPECT_EQ(Render("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
  EXPECT_EQ(Render("x\n  {%+ if true %}y{% endif +%}\nz"), "x\n  y\nz");
  EXPECT_EQ(Render("{{ 'v' }}\n{# note #}\n  {{- 'w' }}"), "v\nw");
  EXPECT_EQ(Render("a\r\nb\r\n"), "a\nb");
  EXPECT_EQ(Render("{% raw %}{{ x }} {% if %}{% endraw %}|{%- raw -%}\n  y  \n{%- endraw %}\nz"),
            "{{ x }} {% if %}|yz");
  EXPECT_TRUE(Contains(Render("{% raw %}never closed"), "missing {% endraw %}"));
}

TEST(ChatTemplateTest, PrintsValuesAsPythonDoes) {
  EXPECT_EQ(Render("{{ 1/2 }} {{ 7//2 }} {{ -7//2 }} {{ -7 % 3 }} {{ 2**10 }} {{ -2**2 }} {{ 10/5 }}"),
            "0.5 3 -4 2 1024 4 2.0");
  EXPECT_EQ(Render("{{ 1e20 }} {{ 0.1 + 0.2 }} {{ 1e-5 }} {{ 1e16 }} {{ 1e15 }} {{ 123.0 }}"),
            "1e+20 0.30000000000000004 1e-05 1e+16 1000000000000000.0 123.0");
  EXPECT_EQ(Render("{{ [1, 'a', none, true, 1.5] }} {{ {'k': \"it's\"} }} {{ ('x',) }} {{ x }}|"),
            "[1, 'a', None, True, 1.5] {'k': \"it's\"} ('x',) |");
  EXPECT_EQ(Render("{{ {'a': [1, 2.5, 'é\"\\n'], 'b': none, 'c': true} | tojson }}"),
            "{\"a\": [1, 2.5, \"é\\\"\\n\"], \"b\": null, \"c\": true}");
  EXPECT_EQ(Render("{{ {'a': [1, {}]} | tojson(indent=2) }}"), "{\n  \"a\": [\n    1,\n    {}\n  ]\n}");
  EXPECT_EQ(Render("{{ {'b': 'é😀', 'a': [1]} | tojson(true, separators=(',', ':'), sort_keys=true) }}"),
            "{\"a\":[1],\"b\":\"\\u00e9\\ud83d\\ude00\"}");
}

TEST(ChatTemplateTest, OperatorsTestsAndFiltersOfTheSubset) {
  EXPECT_EQ(Render("{{ 1 < 2 < 3 }} {{ 'éll' in 'héllo' }} {{ 2 not in [1] }} {{ 1 == 1.0 == true }} {{ 0 or 'd' }}"),
            "True True True True d");
  EXPECT_EQ(Render("{{ x is defined }} {{ none is none }} {{ 3 is odd }} {{ 9 is divisibleby 3 }} {{ true is number }}"
                   " {{ true is integer }} {{ {} is mapping }}"),
            "False True True True True False True");
  EXPECT_EQ(Render("{{ messages | map(attribute='role') | join(',') }} "
                   "{{ messages | selectattr('role', 'equalto', 'user') | list | length }} "
                   "{{ messages | rejectattr('role', 'in', ['system']) | map(attribute='content') | join('+') }}"),
            "system,user,assistant 1 héllo+hi");
  EXPECT_EQ(Render("{{ messages[1:] | length }} {{ messages[::-1][0].content }} {{ 'héllo'[1:4] }} {{ 'abc'[::-1] }}"),
            "2 hi éll cba");
  EXPECT_EQ(Render("{{ ' a b '.split() }} {{ 'a,b'.split(',') }} {{ 'xhix'.strip('x') }} {{ 'it\\'s'.title() }}"
                   " {{ 'it\\'s'|title }} {{ x | default('d') }} {{ '' | default('e', true) }}"),
            "['a', 'b'] ['a', 'b'] hi It'S It's d e");
  EXPECT_EQ(Render("{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'q' if false }}|{{ '7' | int + 1 }}"), "a\n  b\n\n  c||8");
}

// A `set` in a loop body stays there (namespace() carries values out); macros see their
// parameters and the template's globals; for-else runs when no iteration finished its body.
TEST(ChatTemplateTest, ScopingFollowsJinja) {
  EXPECT_EQ(Render("{% set c = 0 %}{% for m in messages %}{% set c = c + 1 %}{{ c }}{% endfor %}{{ c }}"), "1110");
  EXPECT_EQ(Render("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}"
                   "{{ ns.n }}"),
            "3");
  EXPECT_EQ(Render("{% macro turn(m, sep='|') %}{{ m.role }}{{ sep }}{% endmacro %}"
                   "{% for m in messages %}{{ turn(m) }}{% endfor %}{{ turn(messages[0], sep='!') }}"),
            "system|user|assistant|system!");
  EXPECT_EQ(Render("{% for m in messages %}{% if loop.first %}{% continue %}{% endif %}{{ loop.index }}"
                   "{% if loop.last %}{% break %}{% endif %}{% endfor %}"),
            "23");
  EXPECT_EQ(Render("{% for i in [1, 2] %}{% continue %}{% else %}E{% endfor %}"
                   "{% for i in [] %}x{% else %}F{% endfor %}{% for i in [1] %}{{ i }}{% else %}G{% endfor %}"),
            "EF1");
}

TEST(ChatTemplateTest, RaisedExceptionsAndTypeErrorsAreErrors) {
  const std::string raised = Render("{{ raise_exception('Conversation roles must alternate') }}");
  EXPECT_TRUE(Contains(raised, "RENDER: the chat template refused the conversation")) << raised;
  EXPECT_TRUE(Contains(raised, "Conversation roles must alternate")) << raised;
  EXPECT_TRUE(Contains(Render("{{ 'a' + 1 }}"), "unsupported operand")) << Render("{{ 'a' + 1 }}");
  EXPECT_TRUE(Contains(Render("{{ missing.attr }}"), "undefined"));
  const std::string third_line = Render("\n\n{{ messages[0].content + none }}");
  EXPECT_TRUE(Contains(third_line, "template line 3")) << third_line;
}

TEST(ChatTemplateTest, ConstructsOutsideTheSubsetAreRefusedWhenParsed) {
  for (const char* source : {"{% include 'x.jinja' %}", "{% extends 'base' %}", "{{ messages | groupby('role') }}",
                             "{{ x is sameas }}x{% if %}", "{% for m in messages %}", "{{ 'unterminated }}",
                             "{% if true %}{% endfor %}", "{{ f(*args) }}", "{# open comment"}) {
    const std::string result = Render(source);
    EXPECT_EQ(result.rfind("PARSE: chat template: template line", 0), 0u) << source << " -> " << result;
  }
  EXPECT_TRUE(Contains(Render("{{ m | groupby('x') }}"), "the filter 'groupby' is not supported"));
  EXPECT_TRUE(Contains(Render("{% include 'x' %}"), "the tag 'include' is not supported"));
}

// Nothing a template does runs unbounded: output, strings, steps, ranges, macro depth and the
// parser's nesting all have limits, and each ends in an error naming it.
TEST(ChatTemplateTest, LimitsBoundHostileTemplates) {
  ChatRenderOptions small;
  small.max_output_bytes = 1000;
  EXPECT_TRUE(Contains(Render("{% for i in range(2000) %}x{% endfor %}", small), "exceeds 1000 bytes"));
  EXPECT_TRUE(Contains(Render("{% set s = 'x' * 5000 %}", small), "more than 1000 bytes"));
  EXPECT_TRUE(Contains(Render("{% set ns = namespace(s='ab') %}{% for i in range(20) %}"
                              "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                              small),
                       "more than 1000 bytes"));
  EXPECT_TRUE(Contains(Render("{% for i in range(100000) %}{% for j in range(100) %}{% endfor %}{% endfor %}"),
                       "steps"));
  EXPECT_TRUE(Contains(Render("{{ range(1000000) | length }}"), "range too big"));
  EXPECT_TRUE(Contains(Render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"), "nest more than 64"));
  const std::string parens = "{{" + std::string(5000, '(') + "1" + std::string(5000, ')') + "}}";
  EXPECT_TRUE(Contains(Render(parens), "nesting too deep"));
  EXPECT_TRUE(Contains(Render("{{ 2 ** 64 }}"), "integer overflow"));
  // A namespace holding itself, printed or compared; a huge repr stopped as it grows.
  EXPECT_TRUE(Contains(Render("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}"), "nested more than 64"));
  EXPECT_TRUE(Contains(Render("{% set a = namespace() %}{% set a.x = [a] %}{{ a.x == [a] }}"), "True"));
  EXPECT_TRUE(Contains(Render("{% set s = 'x' * 900 %}{{ [s] * 50000 }}", small), "more than 1000 bytes"));
  EXPECT_TRUE(Contains(Render("{{ ([[1]] * 10) | tojson }}", small), "[[1], [1]"));
  // Variables nested past the bound are refused, not walked.
  Json deep = Json::array();
  for (int i = 0; i < 100; ++i) deep = Json::array({deep});
  const std::string too_deep = Render("{{ x | length }}", {}, Json{{"x", deep}});
  EXPECT_TRUE(Contains(too_deep, "nest more than 64")) << too_deep;
}

// One parsed template rendered from several threads at once (the server's HTTP and gRPC
// threads share one).
TEST(ChatTemplateTest, RenderIsThreadSafe) {
  auto parsed = ChatTemplate::Parse(
      "{% set ns = namespace(t='') %}{% for m in messages %}{% set ns.t = ns.t ~ m.role[0] %}{% endfor %}{{ ns.t }}"
      "{{ messages | tojson }}");
  ASSERT_TRUE(parsed.ok());
  const std::string expected = *(*parsed)->Render(Messages(), {});
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        auto text = (*parsed)->Render(Messages(), {});
        if (!text.ok() || *text != expected) ++mismatches[static_cast<size_t>(t)];
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(expected.substr(0, 3), "sua");
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

}  // namespace
}  // namespace bitfleet::chat
