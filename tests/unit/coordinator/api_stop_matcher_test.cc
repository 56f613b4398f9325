#include "coordinator/stop_matcher.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace bitfleet::coordinator {
namespace {

// Feeds `pieces` one by one; returns everything released (Push results, then Flush).
std::string FeedAll(StopMatcher& m, const std::vector<std::string>& pieces) {
  std::string out;
  for (const std::string& p : pieces) out += m.Push(p);
  return out + m.Flush();
}

TEST(StopMatcherTest, NoStopsReleasesEverythingImmediately) {
  StopMatcher m({});
  EXPECT_EQ(m.Push("hello"), "hello");
  EXPECT_EQ(m.Push(" world"), " world");
  EXPECT_EQ(m.Flush(), "");
  EXPECT_FALSE(m.matched());
}

TEST(StopMatcherTest, MatchInsideOnePieceCutsBeforeTheStop) {
  StopMatcher m({"END"});
  EXPECT_EQ(m.Push("abcENDdef"), "abc");
  EXPECT_TRUE(m.matched());
  EXPECT_EQ(m.matched_stop(), "END");
  EXPECT_EQ(m.Push("more"), "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopMatcherTest, MatchAcrossPiecesHoldsBackThePossiblePrefix) {
  StopMatcher m({"\n\n"});
  EXPECT_EQ(m.Push("line one\n"), "line one");  // "\n" may start the stop string
  EXPECT_EQ(m.Push("\nnext"), "");
  EXPECT_TRUE(m.matched());
}

TEST(StopMatcherTest, HeldTextIsReleasedWhenItCannotMatch) {
  StopMatcher m({"STOP"});
  EXPECT_EQ(m.Push("xST"), "x");
  EXPECT_EQ(m.Push("Ay"), "STAy");
  EXPECT_EQ(m.Push("ST"), "");
  EXPECT_EQ(m.Flush(), "ST");  // the stream ended: the held tail is text after all
  EXPECT_FALSE(m.matched());
}

TEST(StopMatcherTest, EarliestMatchWinsAmongSeveralStops) {
  StopMatcher m({"world", "lo w"});
  EXPECT_EQ(FeedAll(m, {"hel", "lo", " wor", "ld"}), "hel");
  EXPECT_EQ(m.matched_stop(), "lo w");
}

TEST(StopMatcherTest, EmptyStopStringsAreIgnored) {
  StopMatcher m({"", "z"});
  EXPECT_EQ(FeedAll(m, {"abc"}), "abc");
  EXPECT_FALSE(m.matched());
}

TEST(StopMatcherTest, MultiByteCharactersAreNeverSplit) {
  // "é" is C3 A9; a stop starting with é holds back whole characters only.
  StopMatcher m({"\xC3\xA9t\xC3\xA9"});
  EXPECT_EQ(m.Push("caf\xC3\xA9"), "caf");
  EXPECT_EQ(m.Push("!"), "\xC3\xA9!");
  EXPECT_EQ(m.Push("\xC3\xA9t\xC3\xA9"), "");
  EXPECT_TRUE(m.matched());
}

TEST(StopMatcherTest, ConcatenationEqualsTextUpToTheStop) {
  const std::string text = "The quick brown fox jumps over the lazy dog";
  for (size_t split = 1; split < 8; ++split) {
    StopMatcher m({"lazy"});
    std::vector<std::string> pieces;
    for (size_t i = 0; i < text.size(); i += split) pieces.push_back(text.substr(i, split));
    EXPECT_EQ(FeedAll(m, pieces), "The quick brown fox jumps over the ") << "split " << split;
    EXPECT_TRUE(m.matched());
  }
}

}  // namespace
}  // namespace bitfleet::coordinator
