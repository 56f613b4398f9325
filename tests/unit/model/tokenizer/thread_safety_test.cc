// One Tokenizer shared by many threads (the coordinator's pattern): same results as serial
// encoding, with the shared word cache hit and filled concurrently.
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/unit/model/tokenizer/test_vocabs.h"

namespace bitfleet::tokenizer {
namespace {

TEST(ThreadSafetyTest, ConcurrentEncodeMatchesSerial) {
  for (Vocab vocab : {testing::MakeBpeVocab(), testing::MakeSpmVocab()}) {
    auto tok = testing::MakeTokenizer(vocab);
    std::vector<std::string> texts;
    for (int i = 0; i < 64; ++i) {
      texts.push_back("hello world " + std::to_string(i * 7919) + " héllo\tworld!! " + std::string(i % 5, ' '));
    }
    std::vector<std::vector<TokenId>> serial;
    for (const std::string& text : texts) serial.push_back(*tok->Encode(text));

    auto fresh = testing::MakeTokenizer(vocab);  // empty cache: threads race to fill it
    std::vector<std::vector<std::vector<TokenId>>> results(4, std::vector<std::vector<TokenId>>(texts.size()));
    std::vector<std::thread> threads;
    for (size_t t = 0; t < results.size(); ++t) {
      threads.emplace_back([&, t] {
        for (int round = 0; round < 20; ++round) {
          for (size_t i = 0; i < texts.size(); ++i) {
            const size_t k = (i + t * 13) % texts.size();
            auto ids = fresh->Encode(texts[k]);
            if (ids.ok()) results[t][k] = *ids;
          }
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    for (const auto& per_thread : results) EXPECT_EQ(per_thread, serial);
  }
}

}  // namespace
}  // namespace bitfleet::tokenizer
