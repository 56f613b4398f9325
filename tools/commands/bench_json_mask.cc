// `bitfleet bench json-mask -m MODEL`: the cost of JSON mode's token masks on a model's
// vocabulary (coordinator/json_constraint.h), as JSON. Reports the vocabulary index's build
// time, then for states a JSON answer passes through: how many tokens the state allows and the
// time of a cold mask (the trie walk, best of --runs) against a scan of every token (the
// reference). A mask is computed once per distinct state and then cached, so the cold time is
// what a new state costs one step, not what every step pays. With --schema FILE, the states of
// that schema's grammar at the start and after each --prefix instead.
#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "coordinator/json_constraint.h"
#include "core/read_file.h"
#include "model/tokenizer/gguf_vocab_loader.h"
#include "nlohmann/json.hpp"
#include "tools/commands/commands.h"

namespace bitfleet::tools {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchJsonMaskFlags {
  std::string model;
  int runs = 5;
  std::string schema;                 // a file: states of this schema's grammar instead of json_object's
  std::vector<std::string> prefixes;  // with --schema: the texts whose states are timed
};

double Ms(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

int RunBenchJsonMask(const BenchJsonMaskFlags& f) {
  auto tok = tokenizer::LoadTokenizerFromGguf(f.model);
  if (!tok.ok()) {
    std::fprintf(stderr, "bitfleet bench json-mask: %s\n", std::string(tok.status().message()).c_str());
    return 1;
  }
  const Clock::time_point t0 = Clock::now();
  coordinator::JsonVocabulary vocabulary(**tok);
  const double build_ms = Ms(t0, Clock::now());

  std::shared_ptr<const coordinator::JsonSchema> schema = coordinator::JsonSchema::AnyObject();
  if (!f.schema.empty()) {
    StatusOr<std::string> text = ReadFileToString(f.schema);
    StatusOr<std::shared_ptr<const coordinator::JsonSchema>> compiled =
        text.ok() ? coordinator::JsonSchema::Compile(*text) : StatusOr<std::shared_ptr<const coordinator::JsonSchema>>(
                                                                  text.status());
    if (!compiled.ok()) {
      std::fprintf(stderr, "bitfleet bench json-mask: %s\n", std::string(compiled.status().message()).c_str());
      return 1;
    }
    schema = *compiled;
  }
  // Prefixes of a typical answer, each ending in a different kind of state.
  std::vector<std::pair<std::string, std::string>> prefixes = {
      {"start", ""},
      {"after_open", "{"},
      {"in_key", "{\"na"},
      {"after_key", "{\"name\""},
      {"in_string_value", "{\"name\": \"Feli"},
      {"after_value", "{\"name\": \"Felicia\""},
      {"in_number", "{\"age\": 1"},
      {"in_array", "{\"tags\": [\"a\", "},
      {"complete", "{\"a\": 1}"},
  };
  if (!f.schema.empty()) {
    prefixes = {{"start", ""}};
    for (size_t i = 0; i < f.prefixes.size(); ++i) prefixes.emplace_back("prefix_" + std::to_string(i), f.prefixes[i]);
  }
  nlohmann::json states = nlohmann::json::array();
  for (const auto& [name, prefix] : prefixes) {
    coordinator::JsonState state(schema.get());
    for (char c : prefix) {
      if (!state.Advance(static_cast<uint8_t>(c))) {
        std::fprintf(stderr, "bitfleet bench json-mask: the grammar refuses prefix %s at '%c'\n", name.c_str(), c);
        return 1;
      }
    }
    double walk_ms = 1e30, scan_ms = 1e30;
    size_t allowed = 0;
    for (int r = 0; r < f.runs; ++r) {
      const Clock::time_point a = Clock::now();
      const coordinator::TokenMask mask = vocabulary.Walk(state);
      const Clock::time_point b = Clock::now();
      const coordinator::TokenMask reference = vocabulary.AllowedByScan(state);
      const Clock::time_point c = Clock::now();
      walk_ms = std::min(walk_ms, Ms(a, b));
      scan_ms = std::min(scan_ms, Ms(b, c));
      allowed = 0;
      for (uint64_t word : mask) allowed += static_cast<size_t>(std::popcount(word));
      if (mask != reference) {
        std::fprintf(stderr, "bitfleet bench json-mask: the walk and the scan disagree at state %s\n", name.c_str());
        return 1;
      }
    }
    states.push_back({{"state", name}, {"prefix", prefix}, {"paths", state.paths()}, {"allowed_tokens", allowed},
                      {"walk_ms", walk_ms}, {"scan_ms", scan_ms}});
  }
  nlohmann::json j;
  j["benchmark"] = "json-mask";
  j["model"] = f.model;
  j["n_vocab"] = vocabulary.n_vocab();
  j["build_ms"] = build_ms;
  j["states"] = states;
  std::printf("%s\n", j.dump(2).c_str());
  return 0;
}

}  // namespace

void RegisterBenchJsonMask(CLI::App& bench, int* exit_code) {
  auto f = std::make_shared<BenchJsonMaskFlags>();
  CLI::App* cmd = bench.add_subcommand(
      "json-mask", "Cost of JSON mode's token masks on a model's vocabulary (JSON: build, per-state walk and scan ms)");
  cmd->add_option("-m,--model", f->model, "GGUF file with the tokenizer")->required()->check(CLI::ExistingFile);
  cmd->add_option("--runs", f->runs, "Runs per state (best is reported)")->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_option("--schema", f->schema,
                  "JSON Schema file: time its grammar's states (the start, and each --prefix) instead of json_object's")
      ->check(CLI::ExistingFile);
  cmd->add_option("--prefix", f->prefixes, "With --schema: a text whose state is timed (repeatable)")
      ->needs("--schema");
  cmd->callback([f, exit_code] { *exit_code = RunBenchJsonMask(*f); });
}

}  // namespace bitfleet::tools
