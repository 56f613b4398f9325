// GenerateCall over a scheduler and a fake replica: a long prompt's log probabilities reach the
// client spread over messages of at most 1024 entries (gRPC clients refuse messages over 4 MiB
// by default), all before the first token's message, each naming its prompt token, none lost.
#include "coordinator/generate_call.h"

#include <span>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/coordinator/fake_executor.h"
#include "tests/unit/coordinator/scheduler_test_util.h"
#include "tests/unit/model/tokenizer/test_vocabs.h"

namespace bitfleet::coordinator::testing {
namespace {

class RecordingOutput final : public GenerateOutput {
 public:
  bool Write(const v1::GenerateResponse& message) override {
    messages.push_back(message);
    return true;
  }
  bool ClientGone() override { return false; }
  std::vector<v1::GenerateResponse> messages;
};

TEST(GenerateCallTest, ALongPromptsLogprobsSpreadOverMessages) {
  const auto tokenizer = tokenizer::testing::MakeTokenizer(tokenizer::testing::MakeSpmVocab());
  const int32_t n_vocab = static_cast<int32_t>(tokenizer->size());
  SchedulerOptions options = TestOptions();
  options.n_vocab = n_vocab;
  options.max_context = 4096;
  FakeExecutor executor({.kv_blocks = 1024,
                         .block_size = 4,
                         .max_step_tokens = 4096,
                         .max_step_sequences = 4,
                         .n_vocab = n_vocab,
                         .max_logit_rows = 4096});  // the whole prompt scored in one step
  auto scheduler = MakeScheduler(options, {&executor});
  ASSERT_NE(scheduler, nullptr);
  scheduler->Start();
  ParsedGenerate parsed;
  for (int i = 0; i < 2500; ++i) parsed.request.prompt.push_back(3 + (i * 7) % (n_vocab - 3));
  parsed.request.max_tokens = 2;
  parsed.request.prompt_logprobs = true;
  parsed.request.request_id = "long-prompt";
  auto call = GenerateCall::Submit(*scheduler, *tokenizer, parsed, AnonymousTenant(), GenerateCallOptions());
  ASSERT_TRUE(call.ok()) << call.status();
  RecordingOutput output;
  ASSERT_TRUE((*call)->Run(output).ok());
  scheduler->Stop();

  std::vector<int32_t> scored;  // the token ids of the entries, in order
  bool tokens_seen = false;
  for (const v1::GenerateResponse& m : output.messages) {
    EXPECT_LE(m.prompt_logprobs_size(), 1024);
    if (tokens_seen) {
      EXPECT_EQ(m.prompt_logprobs_size(), 0) << "prompt entries after a token";
    }
    for (const v1::TokenLogprobs& entry : m.prompt_logprobs()) {
      const size_t t = scored.size() + 1;
      ASSERT_LT(t, parsed.request.prompt.size());
      EXPECT_EQ(entry.logprob(),
                FakePromptLogprob(std::span<const int32_t>(parsed.request.prompt.data(), t), parsed.request.prompt[t]));
      scored.push_back(entry.token_id());
    }
    tokens_seen = tokens_seen || m.token_ids_size() > 0;
  }
  EXPECT_EQ(scored, std::vector<int32_t>(parsed.request.prompt.begin() + 1, parsed.request.prompt.end()));
  EXPECT_GE(output.messages.size(), 3u);
  EXPECT_EQ(output.messages.front().request_id(), "long-prompt");
}

}  // namespace
}  // namespace bitfleet::coordinator::testing
