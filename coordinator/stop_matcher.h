// Stop strings over a stream of generated text (the API's `stop`). Text is matched after
// detokenization, so a stop string may span tokens and a token may hold more than one. The
// matcher holds back the longest tail of the text that could still begin a stop string, so
// what it releases never has to be taken back; the stop string and anything after it are never
// released.
//
// Not thread-safe (one per request).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace bitfleet::coordinator {

class StopMatcher {
 public:
  // Empty strings in `stops` are ignored.
  explicit StopMatcher(std::vector<std::string> stops);

  // Appends generated text and returns the part that can be released now. On a match it
  // returns the text before the stop string and matched() turns true; after that Push returns
  // "" whatever it is given.
  std::string Push(std::string_view text);
  // The end of the stream: releases the held-back tail ("" after a match).
  std::string Flush();

  bool matched() const { return matched_; }
  // The stop string that matched ("" before a match).
  const std::string& matched_stop() const { return matched_stop_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;  // held back: a tail that is a proper prefix of some stop string
  bool matched_ = false;
  std::string matched_stop_;
};

}  // namespace bitfleet::coordinator
