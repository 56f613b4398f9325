// `bitfleet inspect FILE [--json]`: what a GGUF file holds. Header facts, model config (or why
// there is none), tokenizer summary, every metadata key, one row per tensor, and bits per
// weight overall and per type of 2-D weight matrix. The report is built once as JSON; the text
// form is rendered from it so both always agree. docs/models.md lists the fields.
//
// Exit codes: 0 when the file parses (also for vocabulary-only files and architectures bitfleet
// does not run); 1 when it does not parse, or when it claims a supported architecture but its
// config or tensors are invalid (the report is still printed).
#include <charconv>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>

#include "CLI/CLI.hpp"
#include "model/arch/model_config.h"
#include "model/gguf/gguf.h"
#include "nlohmann/json.hpp"
#include "sharding/detached_communicator.h"
#include "sharding/shard_plan.h"
#include "tools/commands/commands.h"
#include "worker/model_runner.h"

namespace bitfleet::tools {
namespace {

using Json = nlohmann::ordered_json;

struct InspectFlags {
  std::string path;
  bool json = false;
  int tp = 0;         // 0: no shard plan
  bool load = false;  // with tp: build each rank's shard to measure packed bytes
};

// Arrays longer than this are summarized (element type and length) instead of listed.
constexpr size_t kMaxListedArray = 16;

// The double closest to the shortest decimal that round-trips `v`, so a float32 1e-5 prints as
// 1e-05 rather than 9.999999747378752e-06.
double ShortestDouble(float v) {
  char buffer[32];
  auto result = std::to_chars(buffer, buffer + sizeof(buffer), v);
  double out = v;
  std::from_chars(buffer, result.ptr, out);
  return out;
}

Json ValueToJson(const gguf::Value& value, bool summarize_arrays) {
  using gguf::ValueType;
  switch (value.type()) {
    case ValueType::kString:
      return std::string(*value.AsString());
    case ValueType::kBool:
      return *value.AsBool();
    case ValueType::kFloat32:
      return ShortestDouble(*value.AsF32());
    case ValueType::kFloat64:
      return *value.AsF64();
    case ValueType::kArray: {
      const gguf::Array& array = **value.AsArray();
      if (summarize_arrays && array.items.size() > kMaxListedArray) {
        return Json{{"array_of", std::string(gguf::ValueTypeName(array.element_type))},
                    {"length", array.items.size()}};
      }
      Json items = Json::array();
      for (const gguf::Value& item : array.items) items.push_back(ValueToJson(item, summarize_arrays));
      return items;
    }
    default:  // integers
      if (auto u = value.AsU64(); u.ok()) return *u;
      return *value.AsI64();
  }
}

Json ConfigToJson(const model::ModelConfig& c) {
  return Json{{"architecture", c.arch_name},
              {"name", c.name},
              {"n_vocab", c.n_vocab},
              {"n_embd", c.n_embd},
              {"n_layer", c.n_layer},
              {"n_head", c.n_head},
              {"n_head_kv", c.n_head_kv},
              {"head_dim", c.head_dim},
              {"n_ff", c.n_ff},
              {"n_ctx_train", c.n_ctx_train},
              {"rope_type", std::string(model::RopeTypeName(c.rope_type))},
              {"rope_dim", c.rope_dim},
              {"rope_freq_base", c.rope_freq_base},
              {"rms_eps", c.rms_eps},
              {"activation", std::string(model::ActivationName(c.activation))},
              {"tied_embeddings", c.tied_embeddings},
              {"sub_norms", c.has_sub_norms},
              {"qkv_bias", c.qkv_bias},
              {"parameters", model::ParameterCount(c)}};
}

Json TokenizerToJson(const gguf::GgufFile& file) {
  const gguf::Value* model = file.Find("tokenizer.ggml.model");
  if (model == nullptr) return nullptr;
  Json out;
  out["model"] = ValueToJson(*model, true);
  if (const gguf::Value* pre = file.Find("tokenizer.ggml.pre")) out["pre"] = ValueToJson(*pre, true);
  if (const gguf::Value* tokens = file.Find("tokenizer.ggml.tokens"); tokens && tokens->AsArray().ok()) {
    out["vocab_size"] = (*tokens->AsArray())->items.size();
  }
  for (const char* id : {"bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id"}) {
    if (const gguf::Value* v = file.Find(std::string("tokenizer.ggml.") + id)) out[id] = ValueToJson(*v, true);
  }
  if (const gguf::Value* merges = file.Find("tokenizer.ggml.merges"); merges && merges->AsArray().ok()) {
    out["merges"] = (*merges->AsArray())->items.size();
  }
  return out;
}

double BitsPerWeight(uint64_t bytes, uint64_t elements) {
  return elements == 0 ? 0.0 : static_cast<double>(bytes) * 8.0 / static_cast<double>(elements);
}

// Fills "model", "model_error", "tensor_check"; returns false when the file claims a supported
// architecture but does not hold a valid model of it.
bool AddModelSection(const gguf::GgufFile& file, Json& report) {
  report["model"] = nullptr;
  const gguf::Value* arch = file.Find(model::keys::kArchitecture);
  const bool supported = arch != nullptr && arch->AsString().ok() && model::ParseArch(*arch->AsString()).ok();
  StatusOr<model::ModelConfig> config = model::ReadModelConfig(file);
  if (!config.ok()) {
    std::string why(config.status().message());
    if (file.tensors().empty()) why = "no tensors (vocabulary-only file?); " + why;
    report["model_error"] = why;
    return !supported || file.tensors().empty();
  }
  report["model"] = ConfigToJson(*config);
  Status tensors = model::ValidateTensors(*config, file);
  report["tensor_check"] = tensors.ok() ? "ok" : std::string(tensors.message());
  return tensors.ok();
}

Json BuildReport(const std::string& path, const gguf::GgufFile& file, bool* valid) {
  Json report;
  report["file"] = path;
  report["file_bytes"] = file.file_size();
  report["gguf_version"] = file.version();
  report["alignment"] = file.alignment();
  report["data_offset"] = file.data_offset();
  *valid = AddModelSection(file, report);
  report["tokenizer"] = TokenizerToJson(file);

  Json metadata = Json::object();
  for (const gguf::KeyValue& kv : file.metadata()) metadata[kv.key] = ValueToJson(kv.value, true);
  report["metadata"] = std::move(metadata);

  Json tensors = Json::array();
  uint64_t total_bytes = 0, total_elements = 0;
  struct TypeTotals {
    uint64_t tensors = 0, elements = 0, bytes = 0;
  };
  std::map<std::string, TypeTotals> matrices;  // 2-D weight matrices by type name
  for (const gguf::TensorInfo& t : file.tensors()) {
    const uint64_t elements = t.elements();
    tensors.push_back(Json{{"name", t.name},
                           {"type", DTypeName(t.type)},
                           {"shape", t.shape},
                           {"bytes", t.size_bytes},
                           {"offset", t.offset},
                           {"bits_per_weight", BitsPerWeight(t.size_bytes, elements)}});
    total_bytes += t.size_bytes;
    total_elements += elements;
    if (t.shape.size() == 2) {
      TypeTotals& totals = matrices[DTypeName(t.type)];
      ++totals.tensors;
      totals.elements += elements;
      totals.bytes += t.size_bytes;
    }
  }
  report["tensors"] = std::move(tensors);
  report["totals"] = Json{{"tensors", file.tensors().size()},
                          {"bytes", total_bytes},
                          {"elements", total_elements},
                          {"bits_per_weight", BitsPerWeight(total_bytes, total_elements)}};
  Json by_type = Json::array();
  for (const auto& [type, totals] : matrices) {
    by_type.push_back(Json{{"type", type},
                           {"tensors", totals.tensors},
                           {"elements", totals.elements},
                           {"bytes", totals.bytes},
                           {"bits_per_weight", BitsPerWeight(totals.bytes, totals.elements)}});
  }
  report["matrices_by_type"] = std::move(by_type);
  return report;
}

Json RangeJson(const sharding::Range& r) { return Json::array({r.begin, r.end}); }

// The packed and mapped bytes of rank `rank`'s shard, by building it (no peers needed).
StatusOr<std::pair<uint64_t, uint64_t>> MeasureShard(std::shared_ptr<const gguf::GgufFile> file, int rank, int tp) {
  sharding::DetachedRankCommunicator comm(rank, tp);
  worker::RunnerOptions options;
  options.max_step_tokens = 1;
  options.max_step_sequences = 1;
  options.max_logit_rows = 1;
  options.max_context = 1;
  options.kv_blocks = 1;
  options.communicator = &comm;
  BF_ASSIGN_OR_RETURN(auto runner, worker::ModelRunner::Create(std::move(file), options));
  return std::make_pair(runner->weight_resident_bytes(), runner->weight_mapped_bytes());
}

// Fills report["tensor_parallel"]; false when the plan cannot be made.
bool AddShardPlan(std::shared_ptr<const gguf::GgufFile> file, const InspectFlags& flags, Json& report) {
  Json tp = {{"tp", flags.tp}};
  StatusOr<model::ModelConfig> config = model::ReadModelConfig(*file);
  if (!config.ok()) {
    tp["error"] = std::string(config.status().message());
    report["tensor_parallel"] = std::move(tp);
    return false;
  }
  StatusOr<sharding::ShardPlan> plan = sharding::ShardPlan::Create(*config, *file, flags.tp);
  if (!plan.ok()) {
    tp["error"] = std::string(plan.status().message());
    report["tensor_parallel"] = std::move(tp);
    return false;
  }
  tp["ffn_granule"] = plan->ffn_granule();
  Json ranks = Json::array();
  bool ok = true;
  for (int r = 0; r < plan->size(); ++r) {
    const sharding::RankShard& s = plan->rank(r);
    Json rank = {{"rank", r},
                 {"heads", RangeJson(s.heads)},
                 {"kv_heads", s.kv_heads},
                 {"kv_split", s.kv_split},
                 {"ffn", RangeJson(s.ffn)},
                 {"vocab", RangeJson(s.vocab)},
                 {"split_bytes", s.split_bytes()},
                 {"replicated_bytes", s.replicated_bytes()},
                 {"file_bytes", s.split_bytes() + s.replicated_bytes()}};
    if (flags.load) {
      StatusOr<std::pair<uint64_t, uint64_t>> measured = MeasureShard(file, r, flags.tp);
      if (measured.ok()) {
        rank["packed_resident_bytes"] = measured->first;
        rank["mapped_embedding_bytes"] = measured->second;
      } else {
        rank["load_error"] = std::string(measured.status().message());
        ok = false;
      }
    }
    ranks.push_back(std::move(rank));
  }
  tp["ranks"] = std::move(ranks);
  report["tensor_parallel"] = std::move(tp);
  return ok;
}

void PrintShardPlan(const Json& tp) {
  std::printf("\ntensor parallel %d ranks\n", tp["tp"].get<int>());
  if (tp.contains("error")) {
    std::printf("  cannot split: %s\n", tp["error"].get<std::string>().c_str());
    return;
  }
  const double mib = 1048576.0;
  for (const Json& r : tp["ranks"]) {
    std::string kv;
    for (const Json& k : r["kv_heads"]) {
      if (!kv.empty()) kv.push_back(',');
      kv.append(std::to_string(k.get<uint32_t>()));
    }
    std::printf("  rank %d: heads [%llu, %llu), KV heads {%s} (%s), FFN [%llu, %llu), vocab [%llu, %llu)\n",
                r["rank"].get<int>(), static_cast<unsigned long long>(r["heads"][0].get<uint64_t>()),
                static_cast<unsigned long long>(r["heads"][1].get<uint64_t>()), kv.c_str(),
                r["kv_split"].get<bool>() ? "split" : "replicated",
                static_cast<unsigned long long>(r["ffn"][0].get<uint64_t>()),
                static_cast<unsigned long long>(r["ffn"][1].get<uint64_t>()),
                static_cast<unsigned long long>(r["vocab"][0].get<uint64_t>()),
                static_cast<unsigned long long>(r["vocab"][1].get<uint64_t>()));
    std::printf("          file slices %.2f MiB (split %.2f + replicated %.2f)", r["file_bytes"].get<uint64_t>() / mib,
                r["split_bytes"].get<uint64_t>() / mib, r["replicated_bytes"].get<uint64_t>() / mib);
    if (r.contains("packed_resident_bytes")) {
      std::printf("; resident %.2f MiB packed + %.2f MiB mapped embedding rows",
                  r["packed_resident_bytes"].get<uint64_t>() / mib, r["mapped_embedding_bytes"].get<uint64_t>() / mib);
    }
    if (r.contains("load_error")) std::printf("; load failed: %s", r["load_error"].get<std::string>().c_str());
    std::printf("\n");
  }
}

// One-line rendering of a metadata value; long strings are cut for the terminal.
std::string Short(const Json& value) {
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  constexpr size_t kMax = 100;
  if (text.size() > kMax) text = text.substr(0, kMax) + "... (" + std::to_string(text.size()) + " chars)";
  return text;
}

std::string ShapeText(const Json& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i].get<uint64_t>());
  return out + "]";
}

void PrintText(const Json& r) {
  std::printf("file          %s (%llu bytes, GGUF v%u, alignment %llu)\n", r["file"].get<std::string>().c_str(),
              static_cast<unsigned long long>(r["file_bytes"].get<uint64_t>()), r["gguf_version"].get<uint32_t>(),
              static_cast<unsigned long long>(r["alignment"].get<uint64_t>()));
  if (const Json& m = r["model"]; !m.is_null()) {
    std::printf("architecture  %s \"%s\"\n", m["architecture"].get<std::string>().c_str(),
                m["name"].get<std::string>().c_str());
    std::printf("  vocab %u, embd %u, layers %u, heads %u (kv %u, head dim %u), ffn %u, context %u\n",
                m["n_vocab"].get<uint32_t>(), m["n_embd"].get<uint32_t>(), m["n_layer"].get<uint32_t>(),
                m["n_head"].get<uint32_t>(), m["n_head_kv"].get<uint32_t>(), m["head_dim"].get<uint32_t>(),
                m["n_ff"].get<uint32_t>(), m["n_ctx_train"].get<uint32_t>());
    std::printf("  rope %s (dim %u, base %g), rms eps %g, activation %s, embeddings %s%s%s\n",
                m["rope_type"].get<std::string>().c_str(), m["rope_dim"].get<uint32_t>(),
                m["rope_freq_base"].get<double>(), m["rms_eps"].get<double>(),
                m["activation"].get<std::string>().c_str(), m["tied_embeddings"].get<bool>() ? "tied" : "untied",
                m["sub_norms"].get<bool>() ? ", sub-norms" : "", m["qkv_bias"].get<bool>() ? ", Q/K/V biases" : "");
    std::printf("  parameters %llu\n", static_cast<unsigned long long>(m["parameters"].get<uint64_t>()));
    std::printf("tensor check  %s\n", r["tensor_check"].get<std::string>().c_str());
  } else {
    std::printf("architecture  no model config: %s\n", r["model_error"].get<std::string>().c_str());
  }
  if (const Json& t = r["tokenizer"]; !t.is_null()) {
    std::printf("tokenizer     %s", Short(t["model"]).c_str());
    if (t.contains("pre")) std::printf(", pre %s", Short(t["pre"]).c_str());
    if (t.contains("vocab_size")) std::printf(", %llu tokens", static_cast<unsigned long long>(t["vocab_size"].get<uint64_t>()));
    if (t.contains("bos_token_id")) std::printf(", bos %s", Short(t["bos_token_id"]).c_str());
    if (t.contains("eos_token_id")) std::printf(", eos %s", Short(t["eos_token_id"]).c_str());
    std::printf("\n");
  } else {
    std::printf("tokenizer     none\n");
  }

  std::printf("\nmetadata (%zu keys)\n", r["metadata"].size());
  for (const auto& [key, value] : r["metadata"].items()) std::printf("  %-44s %s\n", key.c_str(), Short(value).c_str());

  std::printf("\ntensors (%zu)\n  %-36s %-6s %-20s %14s %9s\n", r["tensors"].size(), "name", "type", "shape", "bytes", "bits/w");
  for (const Json& t : r["tensors"]) {
    std::printf("  %-36s %-6s %-20s %14llu %9.4f\n", t["name"].get<std::string>().c_str(),
                t["type"].get<std::string>().c_str(), ShapeText(t["shape"]).c_str(),
                static_cast<unsigned long long>(t["bytes"].get<uint64_t>()), t["bits_per_weight"].get<double>());
  }
  const Json& totals = r["totals"];
  std::printf("\ntotal         %llu tensors, %llu bytes, %llu weights, %.4f bits/weight\n",
              static_cast<unsigned long long>(totals["tensors"].get<uint64_t>()),
              static_cast<unsigned long long>(totals["bytes"].get<uint64_t>()),
              static_cast<unsigned long long>(totals["elements"].get<uint64_t>()),
              totals["bits_per_weight"].get<double>());
  std::printf("2-D weights by type\n");
  for (const Json& t : r["matrices_by_type"]) {
    std::printf("  %-6s %5llu tensors %14llu weights %14llu bytes %9.4f bits/weight\n",
                t["type"].get<std::string>().c_str(), static_cast<unsigned long long>(t["tensors"].get<uint64_t>()),
                static_cast<unsigned long long>(t["elements"].get<uint64_t>()),
                static_cast<unsigned long long>(t["bytes"].get<uint64_t>()), t["bits_per_weight"].get<double>());
  }
}

int RunInspect(const InspectFlags& flags) {
  StatusOr<std::unique_ptr<gguf::GgufFile>> file = gguf::GgufFile::Open(flags.path);
  if (!file.ok()) {
    std::fprintf(stderr, "bitfleet inspect: %s\n", std::string(file.status().message()).c_str());
    return 1;
  }
  bool valid = true;
  std::shared_ptr<const gguf::GgufFile> shared(std::move(file).value());
  Json report = BuildReport(flags.path, *shared, &valid);
  bool plan_ok = true;
  if (flags.tp > 0 && valid) plan_ok = AddShardPlan(shared, flags, report);
  if (flags.json) {
    // Metadata strings are not guaranteed UTF-8; invalid bytes print as U+FFFD.
    std::cout << report.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
  } else {
    PrintText(report);
    if (report.contains("tensor_parallel")) PrintShardPlan(report["tensor_parallel"]);
  }
  if (!valid) {
    const std::string why = report["model"].is_null() ? report["model_error"].get<std::string>()
                                                      : report["tensor_check"].get<std::string>();
    std::fprintf(stderr, "bitfleet inspect: %s: not a valid model: %s\n", flags.path.c_str(), why.c_str());
  }
  if (!plan_ok) {
    const Json& tp = report["tensor_parallel"];
    const std::string why = tp.contains("error") ? ": " + tp["error"].get<std::string>() : "";
    std::fprintf(stderr, "bitfleet inspect: %s: no tensor-parallel plan for %d ranks%s\n", flags.path.c_str(), flags.tp,
                 why.c_str());
  }
  return valid && plan_ok ? 0 : 1;
}

}  // namespace

void RegisterInspect(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<InspectFlags>();
  CLI::App* cmd = app.add_subcommand("inspect", "Show what a GGUF file holds: config, tokenizer, tensors, bits/weight");
  cmd->add_option("file", flags->path, "GGUF file")->required();
  cmd->add_flag("--json", flags->json, "Print the report as JSON");
  cmd->add_option("--tp", flags->tp, "Also show the tensor-parallel shard plan for this many ranks")
      ->check(CLI::Range(1, 4096));
  cmd->add_flag("--load", flags->load, "With --tp: build each rank's shard to measure its packed resident bytes");
  cmd->callback([flags, exit_code] { *exit_code = RunInspect(*flags); });
}

}  // namespace bitfleet::tools
