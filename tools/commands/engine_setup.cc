#include "tools/commands/engine_setup.h"

#include <charconv>
#include <memory>
#include <thread>

#include "coordinator/chat_prompt.h"
#include "core/logging.h"
#include "model/tokenizer/gguf_vocab_loader.h"
#ifdef BITFLEET_HAVE_MPI
#include "sharding/mpi_communicator.h"
#endif

namespace bitfleet::tools {
namespace {

#ifdef BITFLEET_HAVE_MPI
// The process's group (set once by TpGroup); outlives every runner, freed before MPI_Finalize.
std::unique_ptr<sharding::MpiCommunicator>& Group() {
  static std::unique_ptr<sharding::MpiCommunicator> group;
  return group;
}
#endif

}  // namespace

int DefaultThreads() { return std::max(1u, std::thread::hardware_concurrency()); }

void AddDeviceFlag(CLI::App* cmd, worker::RunnerDevice* device) {
  std::string help =
      "Where the model runs: cpu, or cuda (one GPU per rank: under TP > 1 the node-local rank's, modulo the "
      "visible devices";
  help += worker::CudaRunnerBuilt() ? ")" : "; this build has no CUDA)";
  // The IsMember check runs before the callback, so the parse always succeeds there.
  cmd->add_option_function<std::string>(
         "--device",
         [device](const std::string& name) {
           if (StatusOr<worker::RunnerDevice> parsed = worker::ParseRunnerDevice(name); parsed.ok()) *device = *parsed;
         },
         help)
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->default_str("cpu");
}

void AddKvTypeFlag(CLI::App* cmd, cache::KvType* type) {
  cmd->add_option_function<std::string>(
         "--kv-type",
         [type](const std::string& name) {
           if (StatusOr<cache::KvType> parsed = cache::ParseKvType(name); parsed.ok()) *type = *parsed;
         },
         "KV cache elements: f16, or int8 (CPU only: 1.125 bytes per element instead of 2, so about 1.8x the "
         "cached tokens in the same memory; accuracy cost measured in docs/engine.md)")
      ->check(CLI::IsMember({"f16", "int8"}))
      ->default_str("f16");
}

void AddPlacementFlags(CLI::App* cmd, PlacementFlags* flags) {
  AddDeviceFlag(cmd, &flags->device);
  AddKvTypeFlag(cmd, &flags->kv_type);
  cmd->add_option("--tp-timeout", flags->timeout_s,
                  "Under mpirun: seconds a collective may wait for the other ranks before the job fails")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 86400.0));
}

StatusOr<sharding::Communicator*> TpGroup(const PlacementFlags& flags) {
#ifdef BITFLEET_HAVE_MPI
  if (!sharding::LaunchedUnderMpi()) return nullptr;
  auto& group = Group();
  if (group == nullptr) {
    const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(flags.timeout_s * 1000));
    BF_ASSIGN_OR_RETURN(group, sharding::MpiCommunicator::Create(timeout));
  }
  return group->size() > 1 ? group.get() : nullptr;
#else
  (void)flags;
  return nullptr;
#endif
}

bool IsPrimaryRank() {
#ifdef BITFLEET_HAVE_MPI
  return Group() == nullptr || Group()->rank() == 0;
#else
  return true;
#endif
}

StatusOr<LoadedModel> LoadModel(const std::string& path, const worker::RunnerOptions& runner_options,
                                bool with_tokenizer, const PlacementFlags& placement) {
  worker::RunnerOptions options = runner_options;
  options.device = placement.device;
  options.kv_type = placement.kv_type;
  if (options.communicator == nullptr) {
    BF_ASSIGN_OR_RETURN(options.communicator, TpGroup(placement));
  }
  LoadedModel model;
  BF_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> file, gguf::GgufFile::Open(path));
  model.file = std::move(file);
  if (with_tokenizer) {
    BF_ASSIGN_OR_RETURN(tokenizer::Vocab vocab, tokenizer::LoadVocabFromGguf(*model.file));
    BF_ASSIGN_OR_RETURN(model.tokenizer, tokenizer::Tokenizer::Create(std::move(vocab)));
  }
  // The runner's ReadModelConfig has refused a tokenizer whose size differs from the embedding's.
  BF_ASSIGN_OR_RETURN(model.runner, worker::CreateRunner(model.file, options));
  return model;
}

int ReportError(const std::string& module, const Status& status) {
  int code = 1;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kOutOfRange:
      code = 2;
      break;
    default:
      break;
  }
#ifdef BITFLEET_HAVE_MPI
  if (auto& group = Group(); group != nullptr && group->size() > 1) {
    Logger(module)->error("rank {}/{}: {}", group->rank(), group->size(), std::string(status.message()));
    Logger(module)->flush();
    group->Abort(code);
  }
#endif
  Logger(module)->error("{}", std::string(status.message()));
  return code;
}

StatusOr<std::vector<int32_t>> ParseTokenList(const std::string& text) {
  std::vector<int32_t> ids;
  const char* p = text.data();
  const char* end = p + text.size();
  while (p < end) {
    if (*p == ',' || std::isspace(static_cast<unsigned char>(*p))) {
      ++p;
      continue;
    }
    int32_t value = 0;
    auto [next, ec] = std::from_chars(p, end, value);
    if (ec != std::errc() || (next < end && *next != ',' && !std::isspace(static_cast<unsigned char>(*next)))) {
      const size_t offset = static_cast<size_t>(p - text.data());
      return absl::InvalidArgumentError(
          absl::StrCat("token list: not an int32 at byte ", offset, ": '", text.substr(offset, 16), "'"));
    }
    ids.push_back(value);
    p = next;
  }
  return ids;
}

StatusOr<std::vector<int32_t>> EncodeChat(const std::string& chat_template, const tokenizer::Tokenizer& tokenizer,
                                          const std::string& system, const std::string& user,
                                          std::vector<int32_t>* turn_end) {
  BF_ASSIGN_OR_RETURN(std::unique_ptr<coordinator::ChatPrompt> prompt,
                      coordinator::ChatPrompt::Create(chat_template, tokenizer));
  if (turn_end != nullptr) *turn_end = prompt->turn_end_tokens();
  return prompt->Encode(coordinator::OneTurnChat(system, user), tokenizer, tokenizer::kMaxEncodeBytesLimit);
}

}  // namespace bitfleet::tools
